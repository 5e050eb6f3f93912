"""`jit extend`, `jit drop`, `jit usage`: a granted approval after the approval (docs/cli.md)."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import click

from jit_hooks.cli import output
from jit_hooks.cli.api_client import clean
from jit_hooks.cli.options import Duration, api_options, info, json_option, settings
from jit_hooks.protocol import API_PREFIX, USAGE_COLUMNS, csv_safe

request_id_arg = click.argument("request_id", metavar="ID", type=click.IntRange(min=1))
_AGO_RE = re.compile(r"\A([0-9]{1,5})([dhm])\Z")
_AGO_UNIT = {"d": 86400, "h": 3600, "m": 60}


@click.command("extend")
@request_id_arg
@click.option(
    "--for", "duration", type=Duration(), required=True, help="How much longer: 30m, 1h, ..."
)
@click.option("-r", "--reason", default="", help="Why you need more time.")
@json_option
@api_options
def extend_cmd(request_id: int, duration: int, reason: str, as_json: bool) -> None:
    """Ask for more time on your active grant ID (same grant: live sessions continue).

    The policy decides: approved at once up to its limit, or it waits for
    approvers (`jit approve ID` approves a pending extension).
    """
    path = f"{API_PREFIX}/requests/{request_id}/extend"
    req = (
        settings()
        .client()
        .call("POST", path, body={"duration_seconds": duration, "reason": reason})
    )
    if as_json:
        output.emit_json(req)
        return
    ext = req.get("extension")
    if isinstance(ext, dict) and ext.get("state") == "pending":
        click.echo(
            f"Request {request_id}: extension by {output.span(duration)} waits for "
            f"{clean(ext.get('approvals_required'))} approval(s); "
            f"access still ends {output.when(req.get('ends_at'))}."
        )
    else:
        click.echo(
            f"Request {request_id} extended: access now ends {output.when(req.get('ends_at'))}."
        )


@click.command("drop")
@request_id_arg
@json_option
@api_options
def drop_cmd(request_id: int, as_json: bool) -> None:
    """Give your approved grant ID back now: the next login is refused, sessions are ended."""
    req = settings().client().call("POST", f"{API_PREFIX}/requests/{request_id}/drop")
    if as_json:
        output.emit_json(req)
    else:
        click.echo(f"Request {request_id} dropped: access to {clean(output.target(req))} ended.")


def parse_since(text: str, now: float) -> int:
    """'30d' / '12h' / '90m' ago, or an ISO 8601 date or time (local unless it has an offset)."""
    from datetime import datetime

    text = text.strip()
    m = _AGO_RE.match(text)
    if m:
        return int(now) - int(m.group(1)) * _AGO_UNIT[m.group(2)]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{clean(text, 40)!r} is neither an ISO 8601 date (2026-11-01) nor a span ago (30d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " ".join(clean(v, 200) for v in value)
    return clean(value, 500)


@click.command("usage")
@click.option("--since", metavar="DATE", help="Approvals whose window reached DATE (or 30d ago).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True,
)  # fmt: skip
@api_options
def usage_cmd(since: str | None, fmt: str) -> None:
    """Which approvals were used, from where, with which keys, for how long (admin, approver)."""
    params = {"since": parse_since(since, time.time())} if since else None
    report = settings().client().call("GET", f"{API_PREFIX}/reports/usage", params=params)
    if not isinstance(report, dict) or not isinstance(report.get("approvals"), list):
        raise click.ClickException("unexpected answer from the service (no approvals)")
    if report.get("truncated"):
        info("jit: only the newest approvals are listed (narrow it with --since)")
    items = [a for a in report["approvals"] if isinstance(a, dict)]
    if fmt == "json":
        output.emit_json(report)
    elif fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(USAGE_COLUMNS)
        for a in items:
            w.writerow([csv_safe(_cell(a.get(c))) for c in USAGE_COLUMNS])
        click.echo(out.getvalue(), nl=False)
    else:
        output.table(
            ["ID", "REQUESTER", "TARGET", "LOGIN", "STATE", "SESSIONS", "FROM", "KEYS", "TOTAL"],
            [
                [
                    str(a.get("request_id")),
                    a.get("requester"),
                    a.get("target"),
                    a.get("login"),
                    a.get("state"),
                    str(a.get("sessions")) if a.get("used") else "never used",
                    _cell(a.get("sources")),
                    str(len(a.get("keys") or [])),
                    output.span(int(a.get("total_seconds") or 0)),
                ]
                for a in items
            ],
            empty="no approvals in this period",
        )
        never = [a.get("request_id") for a in items if not a.get("used")]
        if never:
            click.echo(f"never used ({len(never)}): " + ", ".join(f"#{i}" for i in never))
