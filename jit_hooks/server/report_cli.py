"""`jit-server report usage`: which approvals were used (server/usage.py): table, CSV, JSON."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import click

from jit_hooks.server.cli import Env

pass_env = click.pass_obj  # ctx.obj is the Env (see audit_cli.py for why not cli.pass_env)
_AGO_RE = re.compile(r"\A([0-9]{1,5})([dhm])\Z")
_AGO_UNIT = {"d": 86400, "h": 3600, "m": 60}


def parse_since(text: str, now: int) -> int:
    """'30d' / '12h' / '90m' ago, or an ISO 8601 date or time (UTC unless it has an offset)."""
    text = text.strip()
    m = _AGO_RE.match(text)
    if m:
        return now - int(m.group(1)) * _AGO_UNIT[m.group(2)]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text[:40]!r} is neither an ISO 8601 date (2026-11-01, 2026-11-01T08:00) "
            "nor a span ago (30d, 12h, 90m)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt.timestamp() < 0:
        raise click.BadParameter(f"{text[:40]!r} is before 1970")
    # The database's time columns are 32-bit: no window reaches past 2038 anyway.
    return min(int(dt.timestamp()), 2**31 - 1)


def _iso(t: int | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _span(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def print_table(report: dict) -> None:
    """The human view; CSV and JSON carry every field."""
    cols = ["ID", "REQUESTER", "TARGET", "LOGIN", "STATE", "ENDS", "SESSIONS", "TOTAL", "LONGEST"]
    from jit_hooks.server.usage import printable

    rows = [
        [
            str(a["request_id"]),
            printable(a["requester"]),
            printable(a["target"]),
            printable(a["login"]),
            a["state"],
            _iso(a["ends_at"]),
            str(a["sessions"]) if a["used"] else "never used",
            _span(a["total_seconds"]),
            _span(a["longest_seconds"]),
        ]
        for a in report["approvals"]
    ]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    for a in report["approvals"]:
        if a["used"]:
            # Sources are host-supplied text: no escape sequence reaches the terminal.
            click.echo(
                printable(
                    f"#{a['request_id']}: from {' '.join(a['sources']) or '?'}; "
                    f"keys {' '.join(a['keys'])}; hosts {' '.join(a['hosts'])}"
                )
            )
    s = report["summary"]
    never = ", ".join(f"#{i}" for i in s["never_used"]) or "none"
    click.echo(f"{s['approvals']} approvals, {s['used']} used; never used: {never}")


@click.group("report")
def report_group() -> None:
    """Reports over the service's records."""


@report_group.command("usage")
@click.option("--since", metavar="DATE", help="Approvals whose window reached DATE (or 30d ago).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@pass_env
def usage_cmd(env: Env, since: str | None, fmt: str) -> None:
    """Per approval: used or not, from where, with which keys, how many sessions, how long.

    Approvals never used are candidates for a tighter policy.
    """
    from jit_hooks.server import usage

    now = env.now()
    start = parse_since(since, now) if since else None
    report = env.run(lambda conn: usage.usage(conn, since=start, now=now))
    if report["truncated"]:
        click.echo(
            f"jit-server: warning: only the newest {usage.REPORT_LIMIT} approvals "
            "(narrow it with --since)",
            err=True,
        )
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    elif fmt == "csv":
        click.echo(usage.to_csv(report["approvals"]), nl=False)
    else:
        print_table(report)
