"""`jit-hooks`: wire sshd to the hooks without locking anyone out (host admin, as root)."""

from __future__ import annotations

import functools
import os
import sys
import time
import tomllib
from collections.abc import Callable
from typing import Any

import click

from jit_hooks import sshkeys
from jit_hooks.errors import ConfigError, JitError, ServiceError
from jit_hooks.host import paths
from jit_hooks.host.admin import filetx, preflight, sshd_probe, tomlwrite, wiring
from jit_hooks.host.admin import status as status_mod
from jit_hooks.host.admin.layout import SSHD, Layout
from jit_hooks.host.admin.preflight import PreflightError
from jit_hooks.host.login import config as host_config
from jit_hooks.host.login.config import HostConfig, load_config, parse_config


class AdminError(JitError):
    """Raised when a jit-hooks admin command refuses or fails; printed as one line."""


def _warn(message: str) -> None:
    click.echo(f"jit-hooks: warning: {message}", err=True)


def _fail_as_one_line(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except JitError as e:
            click.echo(f"jit-hooks: {e}", err=True)
            sys.exit(1)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"jit-hooks: {where}{e.strerror or e}", err=True)
            sys.exit(1)

    return wrapper


def _layout_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--root and friends, shared by every subcommand; they build a Layout."""
    options = [
        click.option(
            "--root",
            default="/",
            show_default=True,
            type=click.Path(file_okay=False, exists=True),
            help="Directory tree to work in instead of / (tests, images).",
        ),
        click.option(
            "--sshd-config",
            metavar="PATH",
            help="sshd's main config [ROOT/etc/ssh/sshd_config]; the drop-in goes into "
            "its sshd_config.d/.",
        ),
        click.option("--pam-file", metavar="PATH", help="sshd's PAM file [ROOT/etc/pam.d/sshd]."),
        click.option(
            "--config",
            "host_config",
            metavar="PATH",
            help=f"Host config [ROOT{paths.CONFIG_PATH}].",
        ),
        click.option(
            "--bin-dir",
            default="/usr/bin",
            show_default=True,
            help="Where sshd and PAM find the hook commands.",
        ),
        click.option("--sshd", default=SSHD, show_default=True, help="sshd binary."),
    ]
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(root, sshd_config, pam_file, host_config, bin_dir, sshd, **kwargs):
        root = os.path.abspath(root)
        layout = Layout(
            root=root,
            sshd_config=sshd_config and os.path.abspath(sshd_config),
            pam_file=pam_file and os.path.abspath(pam_file),
            host_config=host_config and os.path.abspath(host_config),
            bin_dir=bin_dir,
            sshd=sshd,
        )
        return func(layout=layout, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Wire this host's sshd to the jit-hooks approval service, safely.

    `enable` refuses unless the service answers with this host's token, a
    break-glass account exists and sshd accepts the result; `disable` reverts it
    exactly. Run as root.
    """


# -- checks shared by enable and status ---------------------------------------


def _config(layout: Layout) -> HostConfig:
    return load_config(layout.host_config_path)


def _reload(layout: Layout, no_reload: bool) -> str:
    if no_reload:
        return "sshd not reloaded (--no-reload)"
    return sshd_probe.reload_sshd(layout)


# -- commands ----------------------------------------------------------------


@cli.command()
@_layout_options
@click.option("--force", is_flag=True, help="Enable without an existing break-glass account.")
@click.option("--no-reload", is_flag=True, help="Write and check the wiring, don't reload sshd.")
@click.option(
    "--allow-passwords",
    is_flag=True,
    help="Leave password and keyboard-interactive logins to sshd's other settings "
    "(default: the drop-in turns them off).",
)
@_fail_as_one_line
def enable(layout: Layout, force: bool, no_reload: bool, allow_passwords: bool) -> None:
    """Point sshd at the hooks (drop-in + PAM block), after checking it is safe."""
    config = _config(layout)
    break_glass = preflight.break_glass_accounts(config, force=force, warn=_warn)
    preflight.check_hook_user()
    preflight.check_token_file(config)
    preflight.check_hook_user_can_read(config)
    if layout.root in ("/", ""):
        preflight.warn_hidden_from_helper(config, _warn)
    preflight.check_commands(layout)
    preflight.ensure_state_dir(config, create=True)
    preflight.ensure_spool_dir(config, create=True)
    service = preflight.check_service(config, force=force, warn=_warn)
    changed = wiring.enable(layout, config.break_glass, allow_passwords=allow_passwords)
    what = "enabled" if changed else "already enabled"
    click.echo(f"{what}: {layout.dropin_path} and the jit-hooks block in {layout.pam_path}")
    if allow_passwords:
        click.echo(
            "jit-hooks: warning: passwords allowed (--allow-passwords): while anyone holds "
            "an approval for an account, anyone with that account's password gets in",
            err=True,
        )
    else:
        click.echo("passwords: off (PasswordAuthentication no, KbdInteractiveAuthentication no)")
    click.echo(service)
    click.echo(f"break-glass: {', '.join(break_glass) or 'none (--force)'}")
    click.echo(_reload(layout, no_reload))
    click.echo(
        "sessions: run `systemctl enable --now jit-hooks-enforce.timer` to end sessions "
        "when their approval is revoked or expires"
    )


@cli.command()
@_layout_options
@click.option("--no-reload", is_flag=True, help="Remove the wiring, don't reload sshd.")
@_fail_as_one_line
def disable(layout: Layout, no_reload: bool) -> None:
    """Remove exactly what enable wrote, and reload sshd."""
    if wiring.disable(layout):
        click.echo(f"disabled: removed {layout.dropin_path} and the block in {layout.pam_path}")
        click.echo(_reload(layout, no_reload))
    else:
        click.echo("already disabled: nothing to remove")


@cli.command()
@_layout_options
@_fail_as_one_line
def status(layout: Layout) -> None:
    """Wiring, sshd config, service, token and clock: one line each; exit 1 on a problem."""
    ok = True

    def line(name: str, good: bool, text: str) -> None:
        nonlocal ok
        ok = ok and good
        click.echo(f"{name + ':':<13} {'ok  ' if good else 'FAIL'} {text}")

    config: HostConfig | None = None
    try:
        config = _config(layout)
        line("config", True, config.path or "")
    except ConfigError as e:
        line("config", False, str(e))
    break_glass = config.break_glass if config else frozenset()
    state = wiring.wiring_status(layout, break_glass)
    detail = f"drop-in {state.dropin}, PAM block {state.pam}"
    line("wiring", state.state in ("enabled", "disabled"), f"{state.state} ({detail})")
    problem = sshd_probe.sshd_test(layout)
    line("sshd config", problem is None, problem or f"sshd -t accepts {layout.sshd_config_path}")
    if state.state == "enabled" and problem is None:
        problems = sshd_probe.verify_effective(
            layout, break_glass, allow_passwords=state.allow_passwords
        )
        line("sshd uses", not problems, problems[0] if problems else "the jit-hooks settings")
        line(
            "passwords",
            True,
            "allowed (enable --allow-passwords): an approval for an account lets in "
            "anyone with its password"
            if state.allow_passwords
            else "off (key logins only)",
        )
    if config is None:
        sys.exit(1)
    line("break-glass", bool(break_glass), ", ".join(sorted(break_glass)) or "none configured")
    try:
        preflight.check_token_file(config)
        preflight.check_hook_user_can_read(config)
        line("token", True, f"{config.token_file} (0640 root:{paths.HOOK_USER})")
    except (PreflightError, ConfigError) as e:
        line("token", False, str(e))
    try:
        preflight.check_hook_user()
        state_dir = preflight.ensure_state_dir(config, create=False)
        line("state dir", True, f"{state_dir} (0700 {paths.HOOK_USER})")
    except PreflightError as e:
        line("state dir", False, str(e))
    try:
        waiting = preflight.spooled_reports(config)
        # Not a failure: the enforce timer delivers them once the service answers.
        line("spool", True, f"{config.spool_dir}: {waiting} break-glass report(s) not delivered")
    except (PreflightError, KeyError, OSError) as e:
        line("spool", False, str(e))
    try:
        host, skew = preflight.ping(config)
        line("service", True, f"answers for host {host}")
        line("clock skew", abs(skew) <= preflight.MAX_CLOCK_SKEW, f"{skew:+d} s vs the service")
    except (PreflightError, ConfigError) as e:
        line("service", False, str(e))
    # Optional: without the helper the hooks work in-process, so it never fails status.
    listening, text = status_mod.helper_line(layout)
    click.echo(f"{'helper:':<13} {'ok  ' if listening else 'off '} {text}")
    sys.exit(0 if ok else 1)


@cli.command()
@_layout_options
@click.argument("login")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.File("r"),
    help="Public key file (e.g. id_ed25519.pub).",
)
@_fail_as_one_line
def check(layout: Layout, login: str, key_file) -> None:
    """Dry run: what sshd would get for LOGIN offering this key, and why.

    Runs the real hook bodies (the AuthorizedKeysCommand, then the PAM account
    hook) in this process; the service audits the calls like any hook call.
    Exit 0 if the key would be accepted now, 1 if not.
    """
    from jit_hooks.host.admin.check import check as run_check

    config = _config(layout)
    try:
        offered = sshkeys.parse_public_key(key_file.read(16384))
    except JitError as e:
        raise AdminError(f"{key_file.name}: {e}") from None
    click.echo(f"key: {offered.key_type} {offered.fingerprint}")
    if login in config.break_glass:
        # Not run: the account hook would report a break-glass login to the audit.
        click.echo(
            f"{login} is a break-glass account: sshd reads its keys from its own "
            "AuthorizedKeysFile; the service is not asked"
        )
        sys.exit(0)
    # sshd's hooks would go through the helper if it answers; this dry run itself is in-process.
    click.echo(f"helper: {status_mod.helper_line(layout)[1]}")
    result = run_check(config, login, offered)
    key, account = result.key, result.account
    if key.error is not None:
        err = key.error
        click.echo(f"sshd would get: nothing (service error {err.reason} at {err.url}): denied")
        sys.exit(1)
    if key.out:
        click.echo(f"sshd would get: {key.out.rstrip()}")
    else:
        why = key.fields.get("reason")
        detail = key.fields.get("dropped") or key.fields.get("mismatch") or key.fields.get("error")
        if detail:
            why = f"{why}: {detail}"
        click.echo(f"sshd would get: nothing ({why}): the key is refused")
    if account is not None:
        decision = "allow" if account.status == 0 else "deny"
        if account.error is not None:
            why = f"service error {account.error.reason} at {account.error.url}"
        elif account.status == 0:
            why = f"request {account.fields.get('request')}, until {account.fields.get('expires')}"
        else:
            why = account.out.strip().removeprefix("jit: access denied: ") or str(
                account.fields.get("reason")
            )
        click.echo(f"account check: {decision}: {why}")
    sys.exit(0 if result.allowed else 1)


@cli.command()
@_layout_options
@click.option("--once", is_flag=True, help="One pass, then exit (what the systemd timer runs).")
@click.option(
    "--interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Seconds between passes without --once.",
)
@_fail_as_one_line
def enforce(layout: Layout, once: bool, interval: float) -> None:
    """End sessions whose approval was revoked or expired, or whose user was disabled.

    Asks the service for this host's sessions to end, checks each connection
    against /proc (same pid, same start time, an sshd) and sends its sshd
    SIGTERM. If the service cannot be reached nothing is ended: exit 1.
    """
    from jit_hooks.host.admin import enforce as enforcer
    from jit_hooks.host.login import break_glass
    from jit_hooks.host.login.log import HookLog

    config = _config(layout)
    log = HookLog(enforcer.IDENT, config.syslog_socket)
    while True:
        # Break-glass reports spooled during an outage: delivered as soon as the
        # service answers again (one event per report, however often tried).
        flushed = break_glass.flush(config, log)
        if flushed.delivered or flushed.discarded:
            click.echo(
                f"break-glass reports: delivered {flushed.delivered}, "
                f"discarded {flushed.discarded}, left {flushed.left}"
            )
        try:
            result = enforcer.run_once(config, log)
        except ServiceError as e:
            click.echo(
                f"jit-hooks: service unreachable ({e.reason}) at {e.url or config.urls[0]}: "
                "no session ended",
                err=True,
            )
            if once:
                sys.exit(1)
        else:
            if once:
                click.echo(
                    f"ended {result.ended}, reported closed {result.closed}, "
                    f"refused {result.refused}, warned {result.warned}"
                )
                return
        time.sleep(interval)


@cli.command()
@_layout_options
@click.option("--url", "urls", multiple=True, required=True, help="Service URL (repeatable).")
@click.option(
    "--token-file",
    type=click.File("r"),
    default="-",
    help="File holding the host token from `jit-server host add` [stdin].",
)
@click.option("--ca-file", metavar="PATH", help="CA certificate(s) to verify the service with.")
@click.option("--host-name", metavar="NAME", help="This host's name in the service.")
@click.option(
    "--break-glass",
    "break_glass",
    multiple=True,
    metavar="ACCOUNT",
    help="Break-glass account (repeatable; default: keep the configured ones).",
)
@_fail_as_one_line
def enroll(
    layout: Layout,
    urls: tuple[str, ...],
    token_file,
    ca_file: str | None,
    host_name: str | None,
    break_glass: tuple[str, ...],
) -> None:
    """Write the host config and the host token with the right owners and modes."""
    token = token_file.read(1024).strip()
    if not token:
        raise AdminError("no host token given")
    gid = preflight.hook_user_gid()
    path = layout.host_config_path
    try:
        old: HostConfig | None = load_config(path) if os.path.exists(path) else None
    except ConfigError:
        old = None  # a broken config is replaced; the new one is validated below
    token_path = old.token_file if old else layout.under_root(paths.TOKEN_PATH)
    accounts = list(break_glass) or sorted(old.break_glass if old else [])
    ca_pem, ca_path = None, old.ca_file if old else None
    if ca_file:
        # A copy next to the config: the AKC runs as the hook user, which could not
        # read a CA file left in, say, /root.
        try:
            with open(ca_file, "rb") as f:
                ca_pem = f.read(1024 * 1024)
        except OSError as e:
            raise AdminError(f"{ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise AdminError(f"{ca_file}: no PEM certificate in it")
        ca_path = os.path.join(os.path.dirname(path), "ca.pem")
    text = tomlwrite.render_config(
        urls=list(urls),
        ca_file=ca_path,
        token_file=token_path,
        host_name=host_name or (old.host_name if old else None),
        break_glass=accounts,
        old=old,
    )
    parse_config(tomllib.loads(text), path=path)  # refuses bad URLs, names, ...
    # Validate the token the way the hooks will read it, before anything is written.
    if not host_config._TOKEN_RE.match(token):
        raise AdminError(
            "the host token is malformed (expected what `jit-server host add` printed)"
        )
    for d in {os.path.dirname(path), os.path.dirname(token_path)}:
        os.makedirs(d, mode=0o755, exist_ok=True)
    if ca_pem is not None and ca_path:
        filetx.write_file(ca_path, ca_pem, mode=0o644)
        click.echo(f"wrote {ca_path} (0644, copied from {ca_file})")
    filetx.write_file(token_path, (token + "\n").encode(), mode=0o640, uid=0, gid=gid)
    filetx.write_file(path, text.encode(), mode=0o644)
    click.echo(f"wrote {path} and {token_path} (0640 root:{paths.HOOK_USER})")
    click.echo("next: `jit-hooks status`, then `jit-hooks enable`")


def main() -> None:
    cli(prog_name="jit-hooks")


if __name__ == "__main__":
    main()
