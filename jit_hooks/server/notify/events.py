"""Who hears of which change: the calls lifecycle and decisions make inside their transactions."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection

from jit_hooks.server.notify import outbox
from jit_hooks.server.policy import parse_policy

# Events told to the requester (the rest: request.created -> approvers,
# break_glass.used -> admins).
TO_REQUESTER = {
    "request.reviewed",
    "request.approved",
    "request.denied",
    "request.expiring",
    "request.expired",
    "request.revoked",
    "request.pending_expired",
    "request.extended",
    "request.extension_denied",
}
# Events told to the approvers of the request's policy.
TO_APPROVERS = {"request.created", "request.extension_requested", "request.dropped"}


def approvers(conn: Connection, row: Any) -> list[str]:
    """Users who may approve the request under its policy snapshot (never the requester)."""
    pol = parse_policy(json.loads(row.policy_spec))
    names = outbox.people_with(conn, names=pol.approvers.users, roles=pol.approvers.roles)
    return [n for n in names if n != row.requester]


def request_event(
    conn: Connection,
    row: Any,
    event: str,
    *,
    now: int,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    key: str = "",
) -> int:
    """Queue ``event`` about the request ``row`` (a lifecycle base-query row)."""
    if event in TO_APPROVERS:
        recipients = approvers(conn, row)
    else:
        assert event in TO_REQUESTER, event
        recipients = [row.requester]
    return outbox.enqueue(
        conn,
        event=event,
        now=now,
        policy=row.policy_name,
        recipients=recipients,
        request=outbox.request_facts(row),
        actor=actor,
        details=details,
        key=key,
    )


def break_glass(
    conn: Connection, *, host: str, login: str, rhost: str | None, key: str, now: int
) -> int:
    """Queue a break-glass use for the admins (``key``: the report id or event time)."""
    admins = outbox.people_with(conn, names=frozenset(), roles=frozenset({"admin"}))
    return outbox.enqueue(
        conn,
        event="break_glass.used",
        now=now,
        policy=None,
        recipients=admins,
        details={"host": host, "login": login, "rhost": rhost},
        key=f"{host}\0{key}",
    )
