"""Rendering for `jit`: aligned tables, key/value blocks, JSON, local times."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from jit_hooks.cli.api_client import clean


def now() -> int:
    return int(time.time())


def relative(ts: int, ref: int | None = None) -> str:
    """'in 42m', '3h10m ago', 'now'."""
    delta = int(ts) - (now() if ref is None else ref)
    if abs(delta) < 30:
        return "now"
    text = span(abs(delta))
    return f"in {text}" if delta > 0 else f"{text} ago"


def span(seconds: int) -> str:
    """A duration, two most significant units: 45s, 42m, 1h30m, 2d3h."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def local_iso(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(int(ts)).astimezone().isoformat(timespec="seconds")


def when(ts: int | None) -> str:
    """Local ISO time plus relative, e.g. '2026-11-25T18:30:00+01:00 (in 42m)'."""
    if ts is None:
        return "-"
    return f"{local_iso(ts)} ({relative(ts)})"


def short_when(ts: int | None) -> str:
    """Compact form for table cells: '2026-11-25 18:30 (in 42m)'."""
    if ts is None:
        return "-"
    local = datetime.fromtimestamp(int(ts)).astimezone()
    return f"{local:%Y-%m-%d %H:%M} ({relative(ts)})"


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "") -> None:
    """Print rows as left-aligned columns; the last column is not padded."""
    if not rows:
        if empty:
            click.echo(empty, err=True)
        return
    cells = [[clean(c, 80) if c is not None else "-" for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(widths[i]) for i, v in enumerate(values[:-1])]
        return "  ".join([*padded, values[-1]]).rstrip()

    click.echo(line(list(headers)))
    for row in cells:
        click.echo(line(row))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """Print 'key: value' lines with the values aligned."""
    width = max(len(k) for k, _ in pairs) + 1
    for key, value in pairs:
        click.echo(f"{(key + ':').ljust(width)} {clean(value, 500) if value is not None else '-'}")


# -- domain objects ----------------------------------------------------------


def target(req: dict[str, Any]) -> str:
    if req.get("host"):
        return str(req["host"])
    selector = req.get("selector") or {}
    if isinstance(selector, dict) and selector:
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return "-"


def effective_state(req: dict[str, Any]) -> str:
    """The service derives 'expired'; do it here too in case the answer is older."""
    state = str(req.get("state", "?"))
    ends = req.get("ends_at")
    if state == "approved" and isinstance(ends, int) and ends <= now():
        return "expired"
    return state


def window(req: dict[str, Any]) -> str:
    """What the table shows about time for a request, depending on its state."""
    state = effective_state(req)
    starts, ends = req.get("starts_at"), req.get("ends_at")
    if state == "approved" and isinstance(ends, int):
        ext = req.get("extension")
        # A pending extension is what an approver is asked to review here.
        asked = f" (+{span(ext.get('seconds') or 0)} asked)" if isinstance(ext, dict) else ""
        if isinstance(starts, int) and starts > now():
            return f"starts {relative(starts)}, for {span(ends - starts)}{asked}"
        return f"ends {relative(ends)}{asked}"
    if state == "pending":
        return f"for {span(req.get('duration_seconds') or 0)}"
    if state == "expired" and isinstance(ends, int):
        return f"ended {relative(ends)}"
    decided = req.get("decided_at")
    return relative(decided) if isinstance(decided, int) else "-"


def approvals(req: dict[str, Any]) -> str:
    got = sum(1 for r in req.get("reviews") or [] if r.get("decision") == "approve")
    return f"{got}/{req.get('approvals_required', '?')}"


def requests_table(reqs: Sequence[dict[str, Any]], empty: str = "no requests") -> None:
    table(
        ["ID", "STATE", "REQUESTER", "TARGET", "LOGIN", "APPROVALS", "WHEN", "REASON"],
        [
            [
                str(r.get("id")),
                effective_state(r),
                r.get("requester"),
                target(r),
                r.get("login"),
                approvals(r),
                window(r),
                r.get("reason") or "",
            ]
            for r in reqs
        ],
        empty=empty,
    )


def request_details(req: dict[str, Any]) -> None:
    pairs: list[tuple[str, Any]] = [
        ("id", req.get("id")),
        ("state", effective_state(req)),
        ("requester", req.get("requester")),
        ("target", target(req)),
        ("login", req.get("login")),
        ("reason", req.get("reason") or ""),
        ("duration", span(req.get("duration_seconds") or 0)),
        ("policy", req.get("policy")),
        ("approvals", approvals(req)),
        ("created", when(req.get("created_at"))),
    ]
    if req.get("start") is not None:
        pairs.append(("requested start", when(req.get("start"))))
    if req.get("starts_at") is not None:
        pairs.append(("starts", when(req.get("starts_at"))))
    if req.get("ends_at") is not None:
        pairs.append(("ends", when(req.get("ends_at"))))
    if req.get("decided_at") is not None:
        pairs.append(("decided", when(req.get("decided_at"))))
    if req.get("from_cidrs"):
        pairs.append(("from", " ".join(str(c) for c in req["from_cidrs"])))
    if req.get("extended_seconds"):
        pairs.append(("extended by", span(req["extended_seconds"])))
    ext = req.get("extension")
    if isinstance(ext, dict):
        got = sum(1 for r in ext.get("reviews") or [] if r.get("decision") == "approve")
        pairs.append(
            (
                "extension",
                f"+{span(ext.get('seconds') or 0)} pending ({got}/"
                f"{ext.get('approvals_required')} approvals): {ext.get('reason') or ''}",
            )
        )
    fields(pairs)
    reviews = req.get("reviews") or []
    if reviews:
        click.echo("reviews:")
        for r in reviews:
            comment = f": {clean(r['comment'], 200)}" if r.get("comment") else ""
            click.echo(
                f"  {clean(r.get('decision'))} by {clean(r.get('reviewer'))} "
                f"at {when(r.get('at'))}{comment}"
            )


def keys_table(keys: Sequence[dict[str, Any]]) -> None:
    table(
        ["ID", "TYPE", "FINGERPRINT", "ADDED", "COMMENT"],
        [
            [
                str(k.get("id")),
                k.get("key_type"),
                k.get("fingerprint"),
                short_when(k.get("created_at")),
                k.get("comment") or "",
            ]
            for k in keys
        ],
        empty="no keys registered (add one with `jit keys add ~/.ssh/id_ed25519.pub`)",
    )


def tokens_table(tokens: Sequence[dict[str, Any]]) -> None:
    table(
        ["ID", "NAME", "CREATED", "LAST USED", "CURRENT"],
        [
            [
                str(t.get("id")),
                t.get("name") or "",
                short_when(t.get("created_at")),
                short_when(t.get("last_used_at")) if t.get("last_used_at") else "never",
                "*" if t.get("current") else "",
            ]
            for t in tokens
        ],
        empty="no live tokens",
    )


def audit_table(events: Sequence[dict[str, Any]]) -> None:
    table(
        ["ID", "AT", "KIND", "ACTOR", "HOST", "DATA"],
        [
            [
                str(e.get("id")),
                local_iso(e.get("at")),
                e.get("kind"),
                e.get("actor"),
                e.get("host"),
                json.dumps(e.get("data"), sort_keys=True, separators=(",", ":")),
            ]
            for e in events
        ],
        empty="no audit events",
    )
