"""`jit-hooks`: wire sshd to the hooks without locking anyone out (host admin, as root)."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from jit_hooks import sshkeys
from jit_hooks.errors import JitError, ServiceError
from jit_hooks.host import paths
from jit_hooks.host.admin import preflight, sshd_probe, wiring
from jit_hooks.host.admin import status as status_mod
from jit_hooks.host.admin.layout import SSHD, Layout
from jit_hooks.host.login.config import HostConfig, load_config


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
@click.option(
    "--sessions/--no-sessions",
    "sessions",
    default=None,
    help="Turn on (or leave off) jit-hooks-agent.service and the enforce timer that end "
    "sessions whose approval ends [default: ask; off when not asked on a terminal].",
)
@_fail_as_one_line
def enable(
    layout: Layout, force: bool, no_reload: bool, allow_passwords: bool, sessions: bool | None
) -> None:
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
    click.echo(_session_ending(layout, sessions))


# What ends sessions once their approval ends: the agent (at once, through the
# service's stream) and the timer (every 30 s, the backstop for a lost stream).
SESSION_UNITS = ("jit-hooks-agent.service", "jit-hooks-enforce.timer")


def _session_ending(layout: Layout, sessions: bool | None) -> str:
    command = ["systemctl", "enable", "--now", *SESSION_UNITS]
    shown = " ".join(command)
    if sessions is None and sys.stdin.isatty():
        sessions = click.confirm(
            "End live sessions when their approval is revoked, dropped or over "
            f"({', '.join(SESSION_UNITS)})?",
            default=True,
        )
    if not sessions:
        return f"sessions: not ended when their approval ends; to turn it on: {shown}"
    if layout.root not in ("/", ""):
        return f"sessions: not turned on under {layout.root} (not /): run {shown} on the host"
    import subprocess

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        _warn(f"could not run {shown}: {e}")
        return f"sessions: NOT on; run {shown}"
    if done.returncode != 0:
        _warn(f"{shown} failed: {(done.stderr or done.stdout).strip()[:200]}")
        return f"sessions: NOT on; run {shown}"
    return f"sessions: ended when their approval ends ({', '.join(SESSION_UNITS)} on)"


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
    for name, verdict, text in status_mod.report(layout):
        ok = ok and verdict != "FAIL"
        click.echo(f"{name + ':':<13} {verdict:<4} {text}")
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
@_fail_as_one_line
def agent(layout: Layout) -> None:
    """Hold this host's event stream; end sessions at once on revoke, drop or expiry.

    Runs until stopped (jit-hooks-agent.service). Warns the sessions' terminals
    before their approval ends (sessions.warn_before). The enforce timer stays
    the backstop for a lost stream. See docs/host.md.
    """
    import signal

    from jit_hooks.host.agent.runner import IDENT, Agent
    from jit_hooks.host.login.log import HookLog

    config = _config(layout)
    runner = Agent(config, HookLog(IDENT, config.syslog_socket))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.shutdown())
    runner.run()


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
    from jit_hooks.host.admin.enroll import enroll as write_enrollment

    for line in write_enrollment(
        layout,
        urls=list(urls),
        token=token_file.read(1024).strip(),
        ca_file=ca_file,
        host_name=host_name,
        break_glass=list(break_glass),
    ):
        click.echo(line)
    click.echo("next: `jit-hooks status`, then `jit-hooks enable`")


def main() -> None:
    cli(prog_name="jit-hooks")


if __name__ == "__main__":
    main()
