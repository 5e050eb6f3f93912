"""sshd + PAM wiring of the hooks: render, write, verify with sshd, revert exactly.

`jit-hooks enable` writes two things and `disable` removes exactly them:

* the sshd drop-in ``<sshd_config dir>/sshd_config.d/10-jit-hooks.conf`` (Debian 12's
  sshd_config includes ``sshd_config.d/*.conf`` at its top, and the first value of a
  keyword wins, so the drop-in decides the keywords it sets);
* a marked block in sshd's PAM service file (``/etc/pam.d/sshd``), between
  ``# BEGIN jit-hooks`` and ``# END jit-hooks`` lines, inserted just before the
  file's first account or session line (``@include common-account`` /
  ``common-session`` included), or appended if it has none. sshd's PAM service name
  is fixed, and Debian's pam-auth-update only manages the common-* files shared by
  every service (su, sudo, login...), so this block is the smallest edit that
  touches sshd alone; removing it restores the file byte for byte.

  Why before, not after: Debian's session stack runs ``pam_env.so user_readenv=1``,
  which loads the login account's own ~/.pam_environment into the PAM environment.
  pam_exec hands a hook that environment first and its own PAM_* values after, so a
  hook running after pam_env could read PAM_TYPE / PAM_USER the user chose, and an
  SSH_AUTH_INFO_0 the user replaced (pam_env overwrites sshd's value: only running
  before pam_env protects it). The account line also has to precede common-account,
  whose ``[new_authtok_reqd=done]`` (expired password) would skip it. The hooks
  additionally take the last of duplicated PAM_* names (see pamenv.py).

Break-glass accounts are kept independent of jit-hooks: sshd reads their keys from
their own AuthorizedKeysFile, and in PAM the hooks run for them as ``optional``
(to log and report the use) so a broken hook, Python or service cannot lock them out.

Every path is resolved under a root directory so tests (and chroots) never touch
the machine's own sshd. Stdlib only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

from jit_hooks.errors import JitError
from jit_hooks.host import paths

DROPIN_NAME = "10-jit-hooks.conf"
PAM_BEGIN = "# BEGIN jit-hooks"
PAM_END = "# END jit-hooks"
# Written into the BEGIN line when enable had to end the file's last line first,
# so that disable can take exactly that newline back out.
_ADDED_NEWLINE = " (added the newline ending the line above)"
# What sshd reads for break-glass accounts: Debian's default AuthorizedKeysFile.
BREAK_GLASS_KEYS_FILE = ".ssh/authorized_keys .ssh/authorized_keys2"
SSHD = "/usr/sbin/sshd"
# The resident hook helper (jit-hooksd) the hook wrappers try first; without it
# they do the same work in-process, only slower.
HELPER_SOCKET = paths.HOOKSD_SOCKET
HELPER_UNITS = ("jit-hooksd.socket", "jit-hooksd.service")
# `sshd -t` / `sshd -T` read a few files and exit: 30 s only guards against a hang.
SSHD_TIMEOUT = 30


class WiringError(JitError):
    """Raised when the wiring can't be written, verified or removed (nothing is left changed)."""


@dataclass(frozen=True)
class Layout:
    """Where the wiring lives; everything under ``root`` unless given explicitly."""

    root: str = "/"
    sshd_config: str | None = None  # default <root>/etc/ssh/sshd_config
    pam_file: str | None = None  # default <root>/etc/pam.d/sshd
    host_config: str | None = None  # default <root>/etc/jit-hooks/jit-hooks.toml
    bin_dir: str = "/usr/bin"  # where sshd/PAM find the hooks (absolute, not under root)
    sshd: str = SSHD

    def under_root(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @property
    def sshd_config_path(self) -> str:
        return self.sshd_config or self.under_root("/etc/ssh/sshd_config")

    @property
    def dropin_path(self) -> str:
        return os.path.join(os.path.dirname(self.sshd_config_path), "sshd_config.d", DROPIN_NAME)

    @property
    def pam_path(self) -> str:
        return self.pam_file or self.under_root("/etc/pam.d/sshd")

    @property
    def host_config_path(self) -> str:
        return self.host_config or self.under_root(paths.CONFIG_PATH)

    def command(self, name: str) -> str:
        """A hook's command line; names the config file only when it isn't the default."""
        cmd = os.path.join(self.bin_dir, name)
        if self.host_config_path != paths.CONFIG_PATH:
            cmd += f" --config {self.host_config_path}"
        return cmd


# Marks a drop-in written by `enable --allow-passwords` (status and enable read it back).
ALLOW_PASSWORDS_LINE = "# Passwords allowed (`jit-hooks enable --allow-passwords`)."


def render_dropin(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> str:
    """The sshd_config.d drop-in enable writes."""
    lines = [
        "# Written by `jit-hooks enable`; `jit-hooks disable` removes it. Do not edit:",
        "# change /etc/jit-hooks/jit-hooks.toml and run `jit-hooks enable` again.",
        "# Keys come from the approval service, valid only while an approval is active.",
        f"AuthorizedKeysCommand {layout.command('jit-authorized-keys')} %u %f %t %k",
        f"AuthorizedKeysCommandUser {paths.HOOK_USER}",
        "# Nobody keeps standing keys: only break-glass accounts read their own file.",
        "AuthorizedKeysFile none",
        "# The PAM session hook reads the accepted key from SSH_AUTH_INFO_0.",
        "ExposeAuthInfo yes",
        "# The PAM account hook re-checks the approval for every login method.",
        "UsePAM yes",
    ]
    if allow_passwords:
        lines += [
            ALLOW_PASSWORDS_LINE,
            "# While anyone holds an approval for an account, its password lets anyone in.",
        ]
    else:
        lines += [
            "# Key-less logins off: the PAM account hook can only decide by the login",
            "# account, so while anyone holds an approval for it, its password would do.",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
        ]
    if break_glass:
        lines += [
            "# Break-glass accounts: keys from their own file, independent of the service",
            "# and of the hook command.",
            f"Match User {','.join(sorted(break_glass))}",
            f"    AuthorizedKeysFile {BREAK_GLASS_KEYS_FILE}",
            "    AuthorizedKeysCommand none",
        ]
    return "\n".join(lines) + "\n"


def render_pam_block(layout: Layout, break_glass: frozenset[str] | set[str]) -> str:
    """The marked block enable puts in sshd's PAM file (without a BEGIN suffix).

    The break-glass ``success=2`` / ``default=1`` jumps count lines of this block only:
    its account lines and its session lines are each contiguous wherever it is placed.
    """
    account = f"pam_exec.so quiet stdout {layout.command('jit-pam-account')}"
    session = layout.command("jit-pam-session")
    opened = f"pam_exec.so quiet type=open_session {session}"
    closed = f"pam_exec.so quiet type=close_session {session}"
    lines = [
        f"{PAM_BEGIN}: written by `jit-hooks enable`, removed by `jit-hooks disable`",
    ]
    if break_glass:
        users = ":".join(sorted(break_glass))
        lines += [
            f"# Break-glass ({users}): the hooks log and report the use but cannot block it.",
            f"account [success=2 default=ignore] pam_succeed_if.so quiet user notin {users}",
            f"account optional {account}",
            "account [default=1] pam_permit.so",
            f"account required {account}",
            f"session [success=2 default=ignore] pam_succeed_if.so quiet user notin {users}",
            f"session optional {opened}",
            "session [default=1] pam_permit.so",
            f"session required {opened}",
        ]
    else:
        lines += [f"account required {account}", f"session required {opened}"]
    lines += [f"session optional {closed}", PAM_END]
    return "\n".join(lines) + "\n"


_BLOCK_RE = re.compile(
    r"^" + re.escape(PAM_BEGIN) + r"(?P<begin>[^\n]*)\n(?:.*?\n)??" + re.escape(PAM_END) + r"\n",
    re.M | re.S,
)


def find_pam_block(text: str) -> re.Match | None:
    """The jit-hooks block in a PAM file, or None; WiringError if the markers are broken."""
    blocks = list(_BLOCK_RE.finditer(text))
    begins = len(re.findall(r"^" + re.escape(PAM_BEGIN), text, re.M))
    ends = len(re.findall(r"^" + re.escape(PAM_END) + r"$", text, re.M))
    if len(blocks) > 1 or begins != len(blocks) or ends != len(blocks):
        raise WiringError(
            f"{PAM_BEGIN!r}/{PAM_END!r} markers are unbalanced or repeated: fix by hand"
        )
    return blocks[0] if blocks else None


# The first line of the account or session stack: the block goes in front of it.
_STACK_LINE_RE = re.compile(
    r"^[ \t]*(?:-?(?:account|session)|@include[ \t]+common-(?:account|session)\S*)(?=[ \t]|$)",
    re.M | re.I,
)


def add_pam_block(text: str, block: str) -> str:
    """``text`` with ``block`` before its first account/session line (else at the end).

    An existing block is taken out first wherever it is (older versions appended it
    at the end), so enabling again moves it into place and never stacks.
    """
    text = remove_pam_block(text)
    first = _STACK_LINE_RE.search(text)
    if first:
        return text[: first.start()] + block + text[first.start() :]
    if text and not text.endswith("\n"):
        return text + "\n" + block.replace("\n", _ADDED_NEWLINE + "\n", 1)
    return text + block


def remove_pam_block(text: str) -> str:
    """``text`` without the jit-hooks block (and the newline enable added, if any)."""
    found = find_pam_block(text)
    if not found:
        return text
    start = found.start()
    if _ADDED_NEWLINE in found.group("begin") and text[:start].endswith("\n"):
        start -= 1
    return text[:start] + text[found.end() :]


def pam_block_body(text: str) -> str | None:
    """The block as enable would render it (marker suffix dropped), or None."""
    found = find_pam_block(text)
    return found.group(0).replace(_ADDED_NEWLINE, "", 1) if found else None


@dataclass
class FileState:
    """A file's bytes and metadata before a change, so it can be put back exactly."""

    path: str
    data: bytes | None  # None: the file did not exist
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    times: tuple[int, int] | None = None

    @classmethod
    def read(cls, path: str) -> FileState:
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return cls(path, None)
        except OSError as e:
            raise WiringError(f"{path}: cannot read: {e.strerror}") from None
        return cls(
            path, data, st.st_mode & 0o7777, st.st_uid, st.st_gid, (st.st_atime_ns, st.st_mtime_ns)
        )


@dataclass
class Change:
    before: FileState
    after: bytes | None  # None: remove the file
    mode: int = 0o644

    @property
    def changes_anything(self) -> bool:
        return self.before.data != self.after


def write_atomic(path: str, data: bytes, *, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.jit-hooks-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.geteuid() == 0:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def apply_changes(changes: list[Change]) -> None:
    """Write every change; on any failure put back what was already written."""
    done: list[Change] = []
    try:
        for change in changes:
            if not change.changes_anything:
                continue
            b = change.before
            if change.after is None:
                os.unlink(b.path)
            elif b.data is None:
                write_atomic(b.path, change.after, mode=change.mode)
            else:
                write_atomic(b.path, change.after, mode=b.mode, uid=b.uid, gid=b.gid)
            done.append(change)
    except OSError as e:
        revert_changes(done)
        raise WiringError(f"{e.filename or 'file'}: cannot write: {e.strerror}") from None


def revert_changes(changes: list[Change]) -> None:
    """Put every file of ``changes`` back to its ``before`` bytes, mode, owner and times."""
    for change in reversed(changes):
        b = change.before
        if b.data is None:
            try:
                os.unlink(b.path)
            except FileNotFoundError:
                pass
            continue
        write_atomic(b.path, b.data, mode=b.mode, uid=b.uid, gid=b.gid)
        if b.times:
            os.utime(b.path, ns=b.times)


def _real(path: str) -> str:
    # Edit the file a symlink points at rather than replacing the link.
    return os.path.realpath(path)


def plan_enable(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> list[Change]:
    """The file changes that make the wiring current (empty-effect changes if it already is)."""
    dropin_dir = os.path.dirname(layout.dropin_path)
    if not os.path.isdir(dropin_dir):
        raise WiringError(f"{dropin_dir} does not exist: this sshd_config has no drop-in directory")
    pam = FileState.read(_real(layout.pam_path))
    if pam.data is None:
        raise WiringError(f"{layout.pam_path}: missing (is openssh-server installed?)")
    text = _decode(pam)
    outside = remove_pam_block(text)
    if "jit-pam-account" in outside or "jit-pam-session" in outside:
        raise WiringError(
            f"{layout.pam_path}: already runs jit-pam-* outside the jit-hooks block: "
            "remove those lines by hand first"
        )
    new_pam = add_pam_block(text, render_pam_block(layout, break_glass))
    return [
        Change(
            FileState.read(layout.dropin_path),
            render_dropin(layout, break_glass, allow_passwords=allow_passwords).encode(),
        ),
        Change(pam, new_pam.encode()),
    ]


def plan_disable(layout: Layout) -> list[Change]:
    """The file changes that remove the wiring (none if it is absent)."""
    changes = []
    dropin = FileState.read(layout.dropin_path)
    if dropin.data is not None:
        changes.append(Change(dropin, None))
    pam = FileState.read(_real(layout.pam_path))
    if pam.data is not None:
        changes.append(Change(pam, remove_pam_block(_decode(pam)).encode()))
    return [c for c in changes if c.changes_anything]


def _decode(state: FileState) -> str:
    try:
        return state.data.decode("utf-8") if state.data is not None else ""
    except UnicodeDecodeError:
        raise WiringError(f"{state.path}: not UTF-8 text") from None


def sshd_test(layout: Layout) -> str | None:
    """Run ``sshd -t`` on the config; None if it accepts it, else sshd's first message."""
    try:
        r = subprocess.run(
            [layout.sshd, "-t", "-f", layout.sshd_config_path],
            capture_output=True,
            text=True,
            timeout=SSHD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {layout.sshd}: {e}"
    if r.returncode == 0:
        return None
    lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
    return lines[0] if lines else f"sshd -t exited with status {r.returncode}"


def sshd_effective(layout: Layout, user: str) -> dict[str, str]:
    """``sshd -T`` for a connection as ``user`` from 127.0.0.1: keyword -> value."""
    r = subprocess.run(
        [
            layout.sshd,
            "-T",
            "-f",
            layout.sshd_config_path,
            "-C",
            f"user={user},host=localhost,addr=127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=SSHD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or ["no output"])[0]
        raise WiringError(f"sshd -T failed: {first}")
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, value)
    return out


# A user name that can't be a real account: `sshd -T` as an ordinary user.
PROBE_USER = "jit-hooks-probe"


def verify_effective(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> list[str]:
    """Problems with what sshd would really use (another file winning, no Include, ...)."""
    problems = []
    want = {
        "authorizedkeyscommand": f"{layout.command('jit-authorized-keys')} %u %f %t %k",
        "authorizedkeyscommanduser": paths.HOOK_USER,
        "authorizedkeysfile": "none",
        "exposeauthinfo": "yes",
        "usepam": "yes",
    }
    if not allow_passwords:
        want["passwordauthentication"] = "no"
        want["kbdinteractiveauthentication"] = "no"
    got = sshd_effective(layout, PROBE_USER)
    for key, value in want.items():
        if got.get(key) != value:
            problems.append(f"sshd uses {key} {got.get(key, '(unset)')!r}, not {value!r}")
    for user in sorted(break_glass):
        bg = sshd_effective(layout, user)
        if bg.get("authorizedkeysfile", "none") == "none":
            problems.append(f"break-glass account {user} would have no AuthorizedKeysFile")
        elif bg.get("authorizedkeyscommand", "none") != "none":
            problems.append(f"break-glass account {user} would depend on the AuthorizedKeysCommand")
    return problems


@dataclass
class WiringStatus:
    dropin: str  # "absent" | "current" | "different"
    pam: str  # "absent" | "current" | "different"
    problems: list[str] = field(default_factory=list)
    allow_passwords: bool = False  # the drop-in was written by `enable --allow-passwords`

    @property
    def state(self) -> str:
        if self.dropin == self.pam == "absent":
            return "disabled"
        if self.dropin == self.pam == "current":
            return "enabled"
        if "absent" in (self.dropin, self.pam):
            return "partial"
        return "outdated"


def wiring_status(layout: Layout, break_glass: frozenset[str] | set[str]) -> WiringStatus:
    """Compare the files with what enable would write now."""
    dropin = FileState.read(layout.dropin_path).data
    allow = dropin is not None and dropin_allows_passwords(dropin)
    if dropin is None:
        d = "absent"
    else:
        rendered = render_dropin(layout, break_glass, allow_passwords=allow).encode()
        d = "current" if dropin == rendered else "different"
    pam_text = _decode(FileState.read(_real(layout.pam_path)))
    if find_pam_block(pam_text) is None:
        p = "absent"
    else:
        # Current means the same block in the same place (a block an older version
        # appended at the end is "different": enable moves it).
        wanted = add_pam_block(pam_text, render_pam_block(layout, break_glass))
        p = "current" if wanted == pam_text else "different"
    return WiringStatus(d, p, allow_passwords=allow)


def dropin_allows_passwords(dropin: bytes) -> bool:
    """Whether a drop-in on disk was written by `enable --allow-passwords`."""
    return ALLOW_PASSWORDS_LINE.encode() in dropin.splitlines()


def enable(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> bool:
    """Write the wiring, check it with sshd, roll back on any problem.

    Returns False if it was already current (nothing written). The caller checks the
    service and the break-glass list first; this only deals with files and sshd.
    """
    changes = plan_enable(layout, break_glass, allow_passwords=allow_passwords)
    if not any(c.changes_anything for c in changes):
        problem = sshd_test(layout)
        if problem:
            raise WiringError(f"sshd -t rejects the configuration: {problem}")
        return False
    apply_changes(changes)
    try:
        problem = sshd_test(layout)
        if problem:
            raise WiringError(f"sshd -t rejects the result, rolled back: {problem}")
        problems = verify_effective(layout, break_glass, allow_passwords=allow_passwords)
        if problems:
            raise WiringError(f"rolled back: {problems[0]}")
    except BaseException:
        revert_changes(changes)
        raise
    return True


def disable(layout: Layout) -> bool:
    """Remove the wiring; returns False if there was none. Checks sshd afterwards."""
    changes = plan_disable(layout)
    if not changes:
        return False
    apply_changes(changes)
    if not os.path.exists(layout.sshd):
        return True  # sshd itself is gone (openssh-server removed): nothing to check
    problem = sshd_test(layout)
    if problem:
        raise WiringError(
            f"wiring removed, but sshd -t rejects the remaining configuration: {problem}"
        )
    return True


def reload_sshd(layout: Layout) -> str:
    """Ask the running sshd (from its PidFile) to re-read its config; a one-line outcome.

    SIGHUP is what Debian's ssh.service does on reload. Without --root we go by
    sshd's own PidFile; under a root dir the pid file is looked up under it too, so
    a test root can never signal the machine's own sshd.
    """
    if not os.path.exists(layout.sshd):
        return f"{layout.sshd} is not installed: nothing to reload"
    pidfile = sshd_effective(layout, PROBE_USER).get("pidfile", "/run/sshd.pid")
    if layout.root not in ("/", "") and not pidfile.startswith(layout.root.rstrip("/") + "/"):
        pidfile = layout.under_root(pidfile)
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except (OSError, ValueError):
        return f"sshd is not running (no live pid in {pidfile}): new settings apply when it starts"
    if not comm.startswith("sshd"):
        return f"{pidfile} names pid {pid} ({comm}), not sshd: not reloaded"
    os.kill(pid, signal.SIGHUP)
    return f"reloaded sshd (pid {pid})"


@dataclass
class HelperStatus:
    path: str
    listening: bool  # a socket is listening at path (systemd's, or the helper's own)
    state: str  # one line: "listening", "missing", "no listener (stale socket file)", ...
    units: str | None = None  # "jit-hooksd.socket enabled active, ..." (None: no systemd here)


def _systemd_units() -> str | None:
    """The helper units' enablement and activity, if systemd runs this machine."""
    import shutil

    systemctl = shutil.which("systemctl")
    if not systemctl or not os.path.isdir("/run/systemd/system"):
        return None
    parts = []
    for unit in HELPER_UNITS:
        states = []
        for verb in ("is-enabled", "is-active"):
            try:
                r = subprocess.run(
                    [systemctl, verb, unit],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    stdin=subprocess.DEVNULL,
                )
                states.append(r.stdout.strip() or "unknown")
            except (OSError, subprocess.TimeoutExpired):
                states.append("unknown")
        parts.append(f"{unit} {' '.join(states)}")
    return ", ".join(parts)


# /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; __SO_ACCEPTCON in Flags
# marks a listening socket.
_SO_ACCEPTCON = 0x10000


def _listening_at(path: str) -> bool | None:
    """Whether a stream socket listens at ``path`` (None: /proc/net/unix unreadable).

    Read from the kernel's socket table rather than by connecting: a connection would
    start the helper through systemd and make it log a refused (empty) request.
    """
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == path and fields[4] == "0001":
            if int(fields[3], 16) & _SO_ACCEPTCON:
                return True
    return False


def helper_status(layout: Layout) -> HelperStatus:
    """Whether the helper's socket exists and something listens on it.

    Under a --root the socket is looked for under it; systemd's view of the units
    is only asked about for the real root.
    """
    import stat as stat_mod

    path = layout.under_root(HELPER_SOCKET)
    units = _systemd_units() if layout.root in ("/", "") else None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return HelperStatus(path, False, "missing", units)
    except OSError as e:
        return HelperStatus(path, False, f"cannot look at it: {e.strerror}", units)
    if not stat_mod.S_ISSOCK(st.st_mode):
        return HelperStatus(path, False, "not a socket", units)
    listening = _listening_at(path)
    if listening is None:
        return HelperStatus(path, False, "cannot tell: /proc/net/unix unreadable", units)
    if not listening:
        return HelperStatus(path, False, "no listener: a stale socket file", units)
    return HelperStatus(path, True, "listening", units)
