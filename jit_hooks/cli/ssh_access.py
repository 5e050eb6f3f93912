"""`jit ssh HOST` (ask for access when needed, then run the real ssh) and `jit hint` (docs/cli.md).

Registered on the `jit` group in jit.py. `jit hint` normally never gets here: the
entry point (entry.py) sends it to hint.py before click is imported.
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from typing import Any

import click

from jit_hooks.cli import hint as hint_mod
from jit_hooks.cli import output
from jit_hooks.cli.api_client import CliError, clean
from jit_hooks.cli.options import Duration, api_options, info, settings, wait_limits

# How often --wait asks the service again (seconds), as `jit request --wait`.


@click.command("hint", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def hint_command(args: tuple[str, ...]) -> int:
    """For ssh_config (Match exec "jit hint '%n' '%r'"): print on stderr when you hold
    no active approval for LOGIN@HOST. Always exits 1, waits at most 1 s."""
    return hint_mod.main(list(args))


def _pending_for(requests: list[dict], host: str, login: str) -> dict | None:
    names = hint_mod.host_names(host)
    for r in requests:
        target = r.get("host")
        if (
            r.get("state") == "pending"
            and r.get("login") == login
            and isinstance(target, str)
            and target.lower() in names
        ):
            return r
    return None


def _exec_ssh(host: str, login: str, ssh_args: tuple[str, ...]) -> None:
    program = os.environ.get("JIT_SSH") or "ssh"
    if shutil.which(program) is None:
        raise CliError(f"cannot run ssh: {clean(program)} not found on PATH")
    argv = [program, "-l", login, host, *ssh_args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(program, argv)
    except OSError as e:
        raise CliError(f"cannot run {clean(program)}: {e.strerror}") from None


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.option(
    "--as", "login_name", metavar="LOGIN", help="Login account (default: your local user name)."
)
@click.option("-r", "--reason", help="Why you need access, if a request is needed (else asked).")
@click.option(
    "--for",
    "duration",
    type=Duration(),
    default="1h",
    show_default=True,
    help="How long to ask for, if a request is needed.",
)
@click.option(
    "--wait", is_flag=True, help="Wait until a request is approved, then connect (Ctrl-C stops)."
)
@wait_limits
@click.argument("ssh_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SSH ARGS...]")
@api_options
def ssh_command(
    host: str,
    login_name: str | None,
    reason: str | None,
    duration: int,
    wait: bool,
    timeout: int,
    interval: float,
    ssh_args: tuple[str, ...],
) -> int:
    """Connect to HOST as LOGIN with ssh, asking for access first when you hold none.

    \b
    With an active approval for LOGIN@HOST: runs `ssh -l LOGIN HOST [SSH ARGS]`.
    Else, with a request already pending: says so (--wait: waits for it).
    Else: requests access (--reason, or asked on a terminal; --for), and with
    --wait waits for the approval before running ssh.
    Give ssh's own options and a remote command after `--`.
    """
    from jit_hooks.cli.jit import _wait_decided

    if ssh_args[:1] == ("--",):
        ssh_args = ssh_args[1:]
    login = login_name or getpass.getuser()
    if host.startswith("-") or not host.strip():
        raise click.UsageError(f"invalid host {clean(host)!r}")
    client = settings().client()
    now = output.now()
    if hint_mod.coverage(client.list_requests("mine", "approved"), host, login, now) == "yes":
        _exec_ssh(host, login, ssh_args)
    req: Any = _pending_for(client.list_requests("mine", "pending"), host, login)
    if req is not None:
        info(f"Request {req.get('id')} for {clean(login)}@{clean(host)} is waiting for approval.")
    else:
        if not reason:
            if not sys.stdin.isatty():
                raise click.UsageError("a reason is required: --reason TEXT")
            reason = click.prompt(f"Reason for access to {clean(login)}@{clean(host)}")
        body = {"host": host, "login": login, "reason": reason, "duration_seconds": duration}
        req = client.create_request(body)
        state = output.effective_state(req)
        info(f"Request {req.get('id')} for {clean(login)}@{clean(host)} is {state}.")
    state = output.effective_state(req)
    if state == "pending" and wait:
        info("Waiting for a decision (Ctrl-C to stop waiting).")
        decided = _wait_decided(client, int(req["id"]), timeout, interval)
        if decided is None:
            return 130
        req, state = decided, output.effective_state(decided)
    if state == "approved":
        if (req.get("starts_at") or 0) > output.now():
            raise CliError(
                f"request {req.get('id')} is approved from {output.local_iso(req['starts_at'])}"
            )
        _exec_ssh(host, login, ssh_args)
    if state == "pending":
        info(f"Not connecting: run again with --wait, or check later with `jit show {req['id']}`.")
    else:
        info(f"Not connecting: request {req.get('id')} is {state}.")
    return 1
