"""Usage report: per approval, whether it was used, from where, with which keys, for how long.

Approvals never used are the candidates for a tighter policy. Built from the
``sessions`` rows the hosts report (session open/close) joined to their grant.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from jit_hooks.protocol import USAGE_COLUMNS, csv_safe
from jit_hooks.server.auth import UserPrincipal
from jit_hooks.server.errors import Forbidden
from jit_hooks.server.tables import hosts, requests, sessions, users

# Approvals one report lists at most (newest first); the report says when it cut.
REPORT_LIMIT = 10_000
NO_KEY = "(no key)"


def _target(row: Any) -> str:
    if row.host_name:
        return row.host_name
    sel = json.loads(row.selector) if row.selector else {}
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _state(row: Any, now: int) -> str:
    if row.state == "approved" and row.ends_at is not None and row.ends_at <= now:
        return "expired"
    return row.state


def _grant_end(row: Any, now: int) -> int:
    """When the grant stopped covering sessions (its end, or revoked/dropped), capped at now."""
    end = row.ends_at
    if row.state in ("revoked", "dropped") and row.closed_at is not None:
        end = min(end, row.closed_at)
    return min(end, now)


def usage(
    conn: Connection,
    *,
    since: int | None,
    now: int,
    viewer: UserPrincipal | None = None,
    limit: int = REPORT_LIMIT,
) -> dict:
    """The report: approvals whose window reached ``since`` (or all), each with its usage.

    ``viewer`` None: everything (the admin CLI). A user: admins see every
    approval, approvers those they may approve under the policy snapshot.
    """
    if viewer is not None and not viewer.is_admin and "approver" not in viewer.roles:
        raise Forbidden("the usage report needs the admin or approver role")
    q = (
        select(
            requests.c.id,
            requests.c.requester_id,
            requests.c.policy_spec,
            requests.c.selector,
            requests.c.login,
            requests.c.state,
            requests.c.starts_at,
            requests.c.ends_at,
            requests.c.closed_at,
            requests.c.from_cidrs,
            users.c.name.label("requester"),
            hosts.c.name.label("host_name"),
        )
        .select_from(
            requests.join(users, users.c.id == requests.c.requester_id).outerjoin(
                hosts, hosts.c.id == requests.c.host_id
            )
        )
        # Approved at some point: only an approval sets the window.
        .where(requests.c.starts_at.is_not(None))
        .order_by(requests.c.id.desc())
        .limit(limit + 1)
    )
    if since is not None:
        q = q.where(requests.c.ends_at >= since)
    rows = list(conn.execute(q))
    truncated = len(rows) > limit
    rows = rows[:limit]
    if viewer is not None and not viewer.is_admin:
        from jit_hooks.server import lifecycle

        rows = [r for r in rows if lifecycle.can_see(viewer, r)]
    by_id = {r.id: r for r in rows}
    per: dict[int, list[Any]] = {i: [] for i in by_id}
    if by_id:
        sq = (
            select(
                sessions.c.request_id,
                sessions.c.rhost,
                sessions.c.fingerprint,
                sessions.c.opened_at,
                sessions.c.closed_at,
                hosts.c.name.label("host"),
            )
            .select_from(sessions.join(hosts, hosts.c.id == sessions.c.host_id))
            .where(sessions.c.request_id.in_(list(by_id)))
        )
        for s in conn.execute(sq):
            per[s.request_id].append(s)
    approvals = [_entry(by_id[i], per[i], now) for i in sorted(by_id)]
    if viewer is not None and not viewer.is_admin:
        # Approvers learn how many distinct keys another person used, not which:
        # registered keys stay their owner's and the admins' business.
        for a, i in zip(approvals, sorted(by_id), strict=True):
            if by_id[i].requester_id != viewer.id:
                a["keys"] = [k if k == NO_KEY else f"key-{n}" for n, k in enumerate(a["keys"], 1)]
    return {
        "since": since,
        "generated_at": now,
        "truncated": truncated,
        "approvals": approvals,
        "summary": {
            "approvals": len(approvals),
            "used": sum(1 for a in approvals if a["used"]),
            "never_used": [a["request_id"] for a in approvals if not a["used"]],
        },
    }


def _entry(row: Any, sess: list[Any], now: int) -> dict:
    end = _grant_end(row, now)
    durations = []
    for s in sess:
        # A session still open counts until now or the grant's end, whichever is first
        # (past that the host's enforce ends it; the close report may not be in yet).
        closed = s.closed_at if s.closed_at is not None else max(end, s.opened_at)
        durations.append(max(0, closed - s.opened_at))
    return {
        "request_id": row.id,
        "requester": row.requester,
        "target": _target(row),
        "login": row.login,
        "state": _state(row, now),
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "from_cidrs": row.from_cidrs.split(",") if row.from_cidrs else None,
        "used": bool(sess),
        "sessions": len(sess),
        "open_sessions": sum(1 for s in sess if s.closed_at is None),
        "hosts": sorted({s.host for s in sess}),
        "sources": sorted({s.rhost for s in sess if s.rhost}),
        # None: a session without a key (password, keyboard-interactive).
        "keys": sorted({s.fingerprint or NO_KEY for s in sess}),
        "total_seconds": sum(durations),
        "longest_seconds": max(durations, default=0),
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " ".join(printable(v) for v in value)
    return printable(value)


def printable(value: Any) -> str:
    """``value`` as one line of text: control characters (escape sequences) become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in str(value))


def to_csv(approvals: Iterable[dict]) -> str:
    """One header line, one line per approval; lists space-separated, booleans yes/no.

    Text cells come from people and hosts (login sources, targets): each is guarded
    against formulas, and control characters become spaces.
    """
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(USAGE_COLUMNS)
    for a in approvals:
        w.writerow([csv_safe(_cell(a[c])) for c in USAGE_COLUMNS])
    return out.getvalue()
