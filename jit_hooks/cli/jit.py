"""`jit`: ask for, review and inspect just-in-time SSH access (docs/cli.md)."""

from __future__ import annotations

import getpass
import os
import sys
import time
from typing import Any

import click

from jit_hooks import errors
from jit_hooks.cli import grants, output, userconfig
from jit_hooks.cli.api_client import ApiError, CliError, clean
from jit_hooks.cli.options import (
    POLL_SECONDS,
    Duration,
    Selector,
    StartTime,
    api_options,
    info,
    json_option,
    settings,
    wait_limits,
)
from jit_hooks.cli.ssh_access import hint_command, ssh_command
from jit_hooks.protocol import REQUEST_STATES


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jit-hooks")
    except PackageNotFoundError:
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="jit")
def cli() -> None:
    """Just-in-time SSH access: request it, approve it, see who has it.

    Settings come from ~/.config/jit/config.toml (written by `jit login`), then
    the environment (JIT_URL, JIT_TOKEN, JIT_CA_FILE, JIT_CONFIG), then flags.
    """


def _read_stdin_line(what: str) -> str:
    line = sys.stdin.readline()
    value = line.rstrip("\r\n")
    if not value.strip():
        raise CliError(f"no {what} on standard input")
    return value


# -- login -------------------------------------------------------------------


@cli.command()
@click.option("--sso", is_flag=True, help="Sign in through your identity provider (OpenID).")
@click.option("--token-stdin", is_flag=True, help="Read an existing API token from stdin.")
@click.option("--user", "username", metavar="NAME", help="Log in with NAME's password.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option(
    "--print-token", is_flag=True, help="Also print the new token on stdout (password login)."
)
@api_options
def login(
    sso: bool, token_stdin: bool, username: str | None, password_stdin: bool, print_token: bool
) -> None:
    """Get an API token and save it with the URL in the config file.

    \b
    jit login --url https://jit.example.org --sso          (your identity provider)
    jit login --url https://jit.example.org --user alice   (password, checked by PAM)
    jit-server token create alice | jit login --url URL --token-stdin
    """
    s = settings()
    if token_stdin and (username or password_stdin or print_token):
        raise click.UsageError("--token-stdin cannot be combined with --user/--password-stdin")
    if sso and (token_stdin or username or password_stdin):
        raise click.UsageError("--sso cannot be combined with --token-stdin/--user")
    if sso:
        from jit_hooks.cli.sso import device_login

        token, user = device_login(s.client(auth=False))
        created = True
    elif token_stdin:
        token = _read_stdin_line("token").strip()
        if not token.isprintable() or " " in token:
            raise CliError("the token on standard input is malformed")
        s.token = token
        try:
            user = s.client().me()  # check it before saving it
        except ApiError as e:
            if e.error != "token_expired":
                raise
            raise CliError(
                "the token on standard input has expired: ask an admin for a new one"
            ) from None
        created = False
    else:
        username = username or getpass.getuser()
        if password_stdin:
            password = _read_stdin_line("password")
        else:
            password = click.prompt(f"Password for {username}", hide_input=True)
        try:
            answer = s.client(auth=False).login(username, password)
        except ApiError as e:
            if e.status != 401:
                raise
            who = clean(username, 64)
            raise CliError(f"login as {who} refused: {e.detail} (HTTP 401)") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
            raise CliError("unexpected answer from the service (no token)")
        token, user = answer["token"], answer.get("user") or {}
        created = True
    assert s.config_path is not None
    updates: dict[str, str | None] = {"url": s.url, "token": token}
    if s.ca_file and s.ca_file_from_flag:
        # Absolute: later commands run from other directories.
        updates["ca_file"] = os.path.abspath(os.path.expanduser(s.ca_file))
    userconfig.save(s.config_path, updates)
    roles = ", ".join(user.get("roles") or []) or "none"
    info(f"Logged in to {s.url} as {clean(user.get('name'))} (roles: {clean(roles)}).")
    info(f"Token saved to {s.config_path}.")
    if created and print_token:
        click.echo(token)


@cli.command()
@api_options
def logout() -> int:
    """Revoke the token on the service, then remove it from the config file (the URL stays).

    If the service cannot revoke it (unreachable, refused), the token is still
    removed from the config file, a warning says so, and the exit status is 1.
    """
    s = settings()
    assert s.config_path is not None
    saved = userconfig.load(s.config_path).get("token")
    if not s.token:
        info(f"No token saved in {s.config_path}.")
        return 0
    problem = None
    try:
        s.client().logout()
    except ApiError as e:
        if e.status != 401:  # 401: already revoked (or its user disabled): nothing to undo
            problem = str(e)
    except CliError as e:
        problem = str(e)
    if saved and saved == s.token:
        userconfig.save(s.config_path, {"token": None})
        where = f"removed it from {s.config_path}"
    else:
        where = "it came from JIT_TOKEN or --token, so the config file is unchanged"
    if problem:
        click.echo(
            f"jit: warning: the token was NOT revoked on the service ({problem}); {where}",
            err=True,
        )
        return 1
    info(f"Revoked the token on the service; {where}.")
    return 0


# -- tokens ------------------------------------------------------------------


@cli.group()
def tokens() -> None:
    """Your API tokens on the service (never their secrets)."""


@tokens.command("list")
@json_option
@api_options
def tokens_list(as_json: bool) -> None:
    """List your live tokens; CURRENT marks the one this command used."""
    items = settings().client().list_tokens()
    if as_json:
        output.emit_json(items)
    else:
        output.tokens_table(items)


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=click.IntRange(min=1))
@api_options
def tokens_revoke(token_id: int) -> None:
    """Revoke your token ID (see `jit tokens list`); it answers 401 from now on."""
    settings().client().revoke_token(token_id)
    info(f"Revoked token {token_id}.")


# -- keys --------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Manage your registered SSH public keys."""


@keys.command("add")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="replace"))
@json_option
@api_options
def keys_add(file: Any, as_json: bool) -> None:
    """Register the public key(s) in FILE (`-` for stdin), e.g. ~/.ssh/id_ed25519.pub."""
    text = file.read(256 * 1024)
    if "PRIVATE KEY" in text:
        raise CliError(f"{file.name} holds a PRIVATE key: give the .pub file instead")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise CliError(f"no public key in {file.name}")
    client = settings().client()
    added = [client.add_key(line) for line in lines]
    if as_json:
        output.emit_json(added if len(added) > 1 else added[0])
        return
    for key in added:
        click.echo(
            f"Added key {key.get('id')}: {clean(key.get('key_type'))} "
            f"{clean(key.get('fingerprint'))} {clean(key.get('comment') or '')}".rstrip()
        )


@keys.command("list")
@json_option
@api_options
def keys_list(as_json: bool) -> None:
    """List your registered keys."""
    items = settings().client().list_keys()
    if as_json:
        output.emit_json(items)
    else:
        output.keys_table(items)


@keys.command("remove")
@click.argument("key_id", metavar="ID", type=click.IntRange(min=1))
@api_options
def keys_remove(key_id: int) -> None:
    """Remove your key ID (see `jit keys list`)."""
    settings().client().remove_key(key_id)
    info(f"Removed key {key_id}.")


# -- requests ----------------------------------------------------------------


@cli.command("request")
@click.argument("host", required=False)
@click.option(
    "-s",
    "--selector",
    type=Selector(),
    multiple=True,
    help="Ask for every host with this label instead of one host (repeatable: all must match).",
)
@click.option("-l", "--login", "login_name", required=True, help="Login account on the host.")
@click.option("-r", "--reason", default="", help="Why you need access (ticket, incident).")
@click.option(
    "-d",
    "--duration",
    type=Duration(),
    required=True,
    help="How long: 90m, 2h, 1h30m, or seconds.",
)
@click.option(
    "--start",
    type=StartTime(),
    help="Start later: +30m, or ISO 8601 (local time unless it has an offset).",
)
@click.option(
    "--from",
    "from_cidrs",
    metavar="CIDR[,CIDR]",
    multiple=True,
    help="Pin the grant to these source addresses (e.g. 192.0.2.0/24); repeatable.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Block until the request is decided; exit 0 only if approved (Ctrl-C leaves it pending).",
)
@wait_limits
@json_option
@api_options
def request_cmd(
    host: str | None,
    selector: tuple[tuple[str, str], ...],
    login_name: str,
    reason: str,
    duration: int,
    start: int | None,
    from_cidrs: tuple[str, ...],
    wait: bool,
    timeout: int,
    interval: float,
    as_json: bool,
) -> int:
    """Ask for access to HOST (or to hosts matching --selector) as --login."""
    if bool(host) == bool(selector):
        raise click.UsageError("give either HOST or --selector k=v (not both)")
    body: dict[str, Any] = {"login": login_name, "reason": reason, "duration_seconds": duration}
    if host:
        body["host"] = host
    else:
        body["selector"] = dict(selector)
    if start is not None:
        body["start"] = start
    if from_cidrs:
        # The service checks and canonicalises them (and says which one is wrong).
        body["from_cidrs"] = [c.strip() for arg in from_cidrs for c in arg.split(",") if c.strip()]
    client = settings().client()
    req = client.create_request(body)
    state = output.effective_state(req)
    if wait and state == "pending":
        if not as_json:
            info(
                f"Request {req.get('id')} is waiting for {req.get('approvals_required', '?')} "
                "approval(s); waiting for a decision (Ctrl-C to stop waiting)."
            )
        decided = _wait_decided(client, int(req["id"]), timeout, interval)
        if decided is None:
            return 130
        req = decided
        state = output.effective_state(req)
    if as_json:
        output.emit_json(req)
    elif state == "pending":
        info(
            f"Request {req.get('id')} is waiting for {req.get('approvals_required', '?')} "
            "approval(s)."
        )
        if wait:
            info(
                f"Still pending after {output.span(timeout)}: "
                f"check later with `jit show {req['id']}`."
            )
    else:
        info(f"Request {req.get('id')} is {state}.")
    if not as_json:
        output.request_details(req)
    if wait and state != "approved":
        return 1
    return 0


def _wait_decided(client: Any, request_id: int, timeout: int, interval: float) -> dict | None:
    """Poll until the request leaves "pending" or ``timeout`` passes; None on Ctrl-C."""
    deadline = time.monotonic() + timeout
    req: dict = {}
    try:
        while True:
            req = client.get_request(request_id)
            if output.effective_state(req) != "pending" or time.monotonic() >= deadline:
                return req
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        click.echo(
            f"\njit: stopped waiting; request {request_id} stays as it is: "
            f"check it with `jit show {request_id}` (or cancel: `jit cancel {request_id}`)",
            err=True,
        )
        return None


@cli.command("list")
@click.option("--mine", "scope", flag_value="mine", default=True, help="Your requests (default).")
@click.option("--review", "scope", flag_value="review", help="Requests you may review.")
@click.option("--all", "scope", flag_value="all", help="Every request (admin).")
@click.option("--state", type=click.Choice(REQUEST_STATES), help="Only requests in this state.")
@click.option("--watch", is_flag=True, help="Show the list again every few seconds (Ctrl-C stops).")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=POLL_SECONDS,
    show_default=True,
    help="With --watch: seconds between two refreshes.",
)
@json_option
@api_options
def list_cmd(scope: str, state: str | None, watch: bool, interval: float, as_json: bool) -> int:
    """List requests: yours, those waiting for your review, or all."""
    client = settings().client()
    empty = {
        "mine": "no requests (ask with `jit request HOST --login L --duration 1h`)",
        "review": "nothing to review",
        "all": "no requests",
    }[scope]
    try:
        while True:
            items = client.list_requests(scope, state)
            if as_json:
                output.emit_json(items)
            else:
                if watch:
                    # Clear the screen only on a terminal: piped output stays a plain log.
                    if sys.stdout.isatty():
                        click.clear()
                    click.echo(f"-- {output.local_iso(output.now())} ({len(items)} shown)")
                output.requests_table(items, empty=empty)
            if not watch:
                return 0
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("", err=True)
        return 0


request_id_arg = click.argument("request_id", metavar="ID", type=click.IntRange(min=1))


@cli.command()
@request_id_arg
@json_option
@api_options
def show(request_id: int, as_json: bool) -> None:
    """Show request ID with its reviews and approval window."""
    req = settings().client().get_request(request_id)
    if as_json:
        output.emit_json(req)
    else:
        output.request_details(req)


def _decide(action: str, request_id: int, comment: str | None, as_json: bool) -> None:
    req = settings().client().act(request_id, action, comment)
    if as_json:
        output.emit_json(req)
        return
    state = output.effective_state(req)
    if state == "approved" and isinstance(req.get("ends_at"), int):
        starts = req.get("starts_at")
        line = f"Request {request_id} approved: {clean(req.get('requester'))} may log in as "
        line += f"{clean(req.get('login'))} on {clean(output.target(req))}"
        if isinstance(starts, int) and starts > output.now():
            line += f" from {output.when(starts)}"
        line += f" until {output.when(req['ends_at'])}."
    elif state == "pending" and action == "approve":
        line = (
            f"Request {request_id}: your approval is recorded; "
            f"{output.approvals(req)} approvals, still pending."
        )
    else:
        line = f"Request {request_id} {state}."
    click.echo(line)


comment_option = click.option("-c", "--comment", help="A note stored with your decision.")


@cli.command()
@request_id_arg
@comment_option
@json_option
@api_options
def approve(request_id: int, comment: str | None, as_json: bool) -> None:
    """Approve request ID (you cannot approve your own)."""
    _decide("approve", request_id, comment, as_json)


@cli.command()
@request_id_arg
@comment_option
@json_option
@api_options
def deny(request_id: int, comment: str | None, as_json: bool) -> None:
    """Deny request ID."""
    _decide("deny", request_id, comment, as_json)


@cli.command()
@request_id_arg
@comment_option
@json_option
@api_options
def revoke(request_id: int, comment: str | None, as_json: bool) -> None:
    """Revoke an approved request ID; live sessions are ended by the hosts."""
    _decide("revoke", request_id, comment, as_json)


@cli.command()
@request_id_arg
@json_option
@api_options
def cancel(request_id: int, as_json: bool) -> None:
    """Cancel your own pending request ID (or its pending extension)."""
    _decide("cancel", request_id, None, as_json)


# extend, drop, usage: jit_hooks/cli/grants.py
cli.add_command(grants.extend_cmd)
cli.add_command(grants.drop_cmd)
cli.add_command(grants.usage_cmd)


# -- status / audit ------------------------------------------------------------


@cli.command()
@json_option
@api_options
def status(as_json: bool) -> None:
    """Who you are, whether the service answers, and your active approvals."""
    s = settings()
    s.client(auth=False).health()
    client = s.client()
    me = client.me()
    now = output.now()
    active = [
        r
        for r in client.list_requests("mine", "approved")
        if isinstance(r.get("ends_at"), int) and r["ends_at"] > now
    ]
    # Requests this user may still approve or deny (none of their own).
    review = len(client.list_requests("review", None))
    if as_json:
        output.emit_json(
            {"url": s.url, "service": "ok", "user": me, "active": active, "review": review}
        )
        return
    output.fields(
        [
            ("service", f"{s.url} (ok)"),
            ("user", me.get("name")),
            ("roles", ", ".join(me.get("roles") or []) or "none"),
        ]
    )
    if review:
        noun = "request awaits" if review == 1 else "requests await"
        click.echo(f"{review} {noun} your review (`jit list --review`)")
    if not active:
        click.echo("no active approvals")
        return
    click.echo("active approvals:")
    output.table(
        ["ID", "TARGET", "LOGIN", "FROM", "UNTIL", "LEFT"],
        [
            [
                str(r.get("id")),
                output.target(r),
                r.get("login"),
                output.local_iso(r.get("starts_at")),
                output.local_iso(r.get("ends_at")),
                output.span(r["ends_at"] - max(now, r.get("starts_at") or now))
                + ("" if (r.get("starts_at") or 0) <= now else " (not started)"),
            ]
            for r in active
        ],
    )


@cli.command()
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", "after_id", type=click.IntRange(min=0), help="Only events after this id.")
@json_option
@api_options
def audit(limit: int, after_id: int | None, as_json: bool) -> None:
    """Show audit events, oldest first (admin). Page on with --after LAST_ID."""
    events = settings().client().audit(limit=limit, after_id=after_id)
    if as_json:
        output.emit_json(events)
    else:
        output.audit_table(events)


# -- ssh: ask for access when needed, then connect (ssh_access.py) ----------------

cli.add_command(ssh_command)
cli.add_command(hint_command)


# -- entry point ---------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    click.echo(f"jit: error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run `jit`; errors become one `jit: error: ...` line on stderr and an exit code.

    1: refused by the service or failed, 2: usage, 3: service unreachable.
    """
    try:
        rv = cli.main(args=argv, prog_name="jit", standalone_mode=False)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # click >= 8.2: bare `jit`
            click.echo(e.format_message(), err=True)
            return 2
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        return _fail(clean(e.format_message(), 400) + hint, 2)
    except click.ClickException as e:
        return _fail(clean(e.format_message(), 400), e.exit_code)
    except CliError as e:
        return _fail(str(e), e.exit_code)
    except errors.JitError as e:  # ConfigError and friends
        return _fail(clean(str(e), 400), 1)
    except click.Abort:
        return _fail("aborted", 1)
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
