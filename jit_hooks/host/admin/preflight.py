"""Host checks `jit-hooks enable` and `status` run before trusting the wiring to a login.

Each check raises PreflightError with one line naming the file or account and the
fix; warnings (not fatal) go to the ``warn`` callback the caller passes (the CLI
prints them on stderr).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import time
from collections.abc import Callable

from jit_hooks.errors import ConfigError, JitError, ServiceError
from jit_hooks.host import paths
from jit_hooks.host.admin.layout import Layout
from jit_hooks.host.login import connection
from jit_hooks.host.login.config import HostConfig

# Hook commands enable refuses to point sshd at unless they exist.
HOOK_COMMANDS = ("jit-authorized-keys", "jit-pam-account", "jit-pam-session")
# sshd's expiry-time uses the host clock: past this skew approvals end early or late.
MAX_CLOCK_SKEW = 60
# jit-hooksd.service sees none of these (ProtectHome=yes, PrivateTmp=yes).
_HIDDEN_FROM_HELPER = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")

Warn = Callable[[str], None]


class PreflightError(JitError):
    """Raised when a host check fails; the message names the file or account and the fix."""


def hook_user_gid() -> int:
    try:
        return grp.getgrnam(paths.HOOK_USER).gr_gid
    except KeyError:
        raise PreflightError(
            f"group {paths.HOOK_USER} does not exist: install the jit-hooks package first"
        ) from None


def check_hook_user() -> None:
    try:
        pwd.getpwnam(paths.HOOK_USER)
    except KeyError:
        raise PreflightError(
            f"user {paths.HOOK_USER} (sshd's AuthorizedKeysCommandUser) does not exist: "
            "install the jit-hooks package first"
        ) from None


def check_token_file(config: HostConfig) -> None:
    """The AKC runs as the hook user: it must be able to read the token, others must not."""
    gid = hook_user_gid()
    try:
        st = os.stat(config.token_file)
    except OSError as e:
        raise PreflightError(
            f"{config.token_file}: {e.strerror} (run `jit-hooks enroll`)"
        ) from None
    if st.st_uid != 0 or st.st_gid != gid or st.st_mode & 0o7777 != 0o640:
        raise PreflightError(
            f"{config.token_file}: must be mode 0640 owner root group {paths.HOOK_USER} "
            f"(is {st.st_mode & 0o7777:04o} {st.st_uid}:{st.st_gid})"
        )
    config.read_token()  # malformed -> ConfigError


def ensure_state_dir(config: HostConfig, *, create: bool) -> str:
    """The AKC records accepted keys there as the hook user: 0700, owned by it.

    systemd-tmpfiles creates it at boot (the package's tmpfiles.d entry); without
    it every non-break-glass key login would be denied. ``create`` makes it if missing.
    """
    path = _ensure_hook_dir(config.state_dir, "state directory", create=create)
    try:
        connection.check_state_dir(path)  # the hooks' own rule, directories above included
    except ConfigError as e:
        raise PreflightError(str(e)) from None
    return path


def ensure_spool_dir(config: HostConfig, *, create: bool) -> str:
    """Break-glass reports wait there for the service (break_glass.py): 0700 jit-hooks.

    Without it a break-glass login during an outage never reaches the audit.
    """
    return _ensure_hook_dir(config.spool_dir, "break-glass spool", create=create)


def _ensure_hook_dir(path: str, what: str, *, create: bool) -> str:
    user = pwd.getpwnam(paths.HOOK_USER)
    if create and not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.mkdir(path, 0o700)
        os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o700)
    try:
        st = os.lstat(path)
    except OSError as e:
        raise PreflightError(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.pw_uid or st.st_mode & 0o077:
        raise PreflightError(
            f"{what} {path} must be a directory owned by {paths.HOOK_USER}, mode 0700"
        )
    return path


def spooled_reports(config: HostConfig) -> int:
    """How many break-glass reports wait in the spool; PreflightError if it is unusable."""
    path = ensure_spool_dir(config, create=False)
    return len([n for n in os.listdir(path) if n.startswith("bg-")])


def readable_by_hook_user(path: str) -> bool:
    """Whether sshd's AuthorizedKeysCommandUser can open ``path`` (checked in a child as it)."""
    user = pwd.getpwnam(paths.HOOK_USER)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([user.pw_gid])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            with open(path, "rb"):
                os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _trusted_files(config: HostConfig) -> tuple[tuple[str, str | None], ...]:
    return (("config", config.path), ("token", config.token_file), ("CA file", config.ca_file))


def check_hook_user_can_read(config: HostConfig) -> None:
    """The AKC runs as the hook user: config, token and CA file must be readable by it."""
    for what, path in _trusted_files(config):
        if path and not readable_by_hook_user(path):
            raise PreflightError(
                f"{what} {path} is not readable by {paths.HOOK_USER} (sshd's "
                "AuthorizedKeysCommandUser): check the file and its directories"
            )


def warn_hidden_from_helper(config: HostConfig, warn: Warn) -> None:
    """Files the sandboxed helper can't read would make it deny every key login."""
    for what, path in _trusted_files(config):
        if path and os.path.abspath(path).startswith(_HIDDEN_FROM_HELPER):
            warn(
                f"{what} {path} is hidden from jit-hooksd (its unit has "
                "ProtectHome= and PrivateTmp=): keep it under /etc/jit-hooks"
            )


def break_glass_accounts(config: HostConfig, *, force: bool, warn: Warn) -> list[str]:
    """Break-glass accounts that exist here; refuses when there are none, unless forced."""
    present, missing = [], []
    for account in sorted(config.break_glass):
        try:
            pwd.getpwnam(account)
            present.append(account)
        except KeyError:
            missing.append(account)
    if not present and not force:
        where = config.path or paths.CONFIG_PATH
        absent = f" ({', '.join(missing)}: no such user)" if missing else ""
        raise PreflightError(
            f"no existing break-glass account in {where} [break_glass] accounts{absent}: "
            "if the service fails nobody could log in; add one, or use --force"
        )
    for account in missing:
        warn(f"break-glass account {account}: no such user")
    return present


def ping(config: HostConfig) -> tuple[str, int]:
    """(host name the token belongs to, clock skew in seconds: service - here)."""
    from jit_hooks.host.login.client import HookClient

    try:
        answer = HookClient(config).ping()
    except ServiceError as e:
        raise PreflightError(
            f"service unreachable ({e.reason}) at {e.url or config.urls[0]}"
        ) from None
    return answer["host"], answer["time"] - int(time.time())


def check_service(config: HostConfig, *, force: bool, warn: Warn) -> str:
    """One line on the service's answer; refuses another host's token or a skewed clock."""
    host, skew = ping(config)
    if config.host_name and host != config.host_name:
        raise PreflightError(
            f"the host token belongs to host {host!r}, but [host] name is {config.host_name!r}"
        )
    if abs(skew) > MAX_CLOCK_SKEW:
        message = f"clock skew of {skew:+d} s with the service (limit {MAX_CLOCK_SKEW} s)"
        if not force:
            raise PreflightError(f"{message}: fix NTP first, or use --force")
        warn(message)
    return f"service answers for host {host} (clock skew {skew:+d} s)"


def check_commands(layout: Layout) -> None:
    for name in HOOK_COMMANDS:
        path = os.path.join(layout.bin_dir, name)
        if not os.access(path, os.X_OK):
            raise PreflightError(f"{path} is missing or not executable")
