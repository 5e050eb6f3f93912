"""The outbox: rows written in the caller's transaction, claimed and settled by the worker.

A row is one notification for one channel. Its ``id`` is derived from what it
announces (event, request, a discriminator, channel), so it is stable across
retries, across replicas and across a sweep that runs twice (the second
insert is skipped). Claiming sets ``next_at`` to the end of a lease: a worker
killed mid-delivery leaves the row to be sent again when the lease ends
(at least once; receivers deduplicate by id).
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from sqlalchemy import Connection, and_, func, literal, or_, select

from jit_hooks.server.notify import config as notify_config
from jit_hooks.server.tables import notify_outbox, users

LEASE_SLACK = 5  # seconds a claim outlives the slowest channel's timeout


def idempotency_id(event: str, request_id: int | None, key: str, channel: str) -> str:
    raw = f"{event}\0{request_id}\0{key}\0{channel}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped, jittered.

    "Equal jitter": half the step is fixed, half random, so retries of many
    rows that failed together spread out yet never come back at once.
    """
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return step / 2 + (rng or random).uniform(0, step / 2)


def people_with(conn: Connection, *, names: frozenset[str], roles: frozenset[str]) -> list[str]:
    """Enabled users named, or holding one of the roles (roles are space-separated)."""
    conds = [users.c.name.in_(sorted(names))] if names else []
    for r in sorted(roles):
        conds.append((literal(" ") + users.c.roles + literal(" ")).like(f"% {r} %"))
    if not conds:
        return []
    q = select(users.c.name).where(users.c.disabled.is_(False), or_(*conds))
    return sorted(conn.execute(q).scalars())


def request_facts(row: Any) -> dict[str, Any]:
    """What a message says about a request (a row of lifecycle's base query)."""
    return {
        "id": row.id,
        "requester": row.requester,
        "host": row.host_name,
        "selector": json.loads(row.selector) if row.selector else None,
        "login": row.login,
        "reason": row.reason,
        "duration_seconds": row.duration_seconds,
        "policy": row.policy_name,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
    }


def enqueue(
    conn: Connection,
    *,
    event: str,
    now: int,
    policy: str | None,
    recipients: list[str],
    request: dict[str, Any] | None = None,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    key: str = "",
    cfg: notify_config.NotifyConfig | None = None,
) -> int:
    """Write this event's rows (one per channel that wants it) in ``conn``'s transaction.

    ``key`` tells apart two events of one kind on one request (e.g. each review).
    Returns the number of rows written.
    """
    cfg = cfg or notify_config.current()
    channels = cfg.channels_for(policy, event)
    if not channels:
        return 0
    request_id = request["id"] if request else None
    n = 0
    for ch in channels:
        nid = idempotency_id(event, request_id, key, ch.name)
        payload = {
            "id": nid,
            "event": event,
            "at": now,
            "actor": actor,
            "recipients": recipients,
            "request": request,
            "details": details or {},
        }
        # A sweep may meet the same event again (another round, another
        # leader): the id already exists, so the row is not written twice.
        exists = conn.execute(select(notify_outbox.c.id).where(notify_outbox.c.id == nid)).first()
        if exists is not None:
            continue
        conn.execute(
            notify_outbox.insert().values(
                id=nid,
                event=event,
                request_id=request_id,
                channel=ch.name,
                payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
                created_at=now,
                attempts=0,
                next_at=now,
                delivered_at=None,
                failed_at=None,
                last_error=None,
            )
        )
        n += 1
    return n


def _pending():  # noqa: ANN202
    return and_(notify_outbox.c.delivered_at.is_(None), notify_outbox.c.failed_at.is_(None))


def lease(cfg: notify_config.NotifyConfig) -> int:
    """Seconds a claimed row is left alone: longer than any attempt can take."""
    slowest = max((ch.timeout for ch in cfg.channels.values()), default=0.0)
    return int(slowest) + 1 + LEASE_SLACK


def claim(conn: Connection, *, now: int, lease_seconds: int, limit: int = 50) -> list[Any]:
    """Due rows, leased to the caller (call it inside the leader's transaction)."""
    rows = list(
        conn.execute(
            select(notify_outbox)
            .where(_pending(), notify_outbox.c.next_at <= now)
            .order_by(notify_outbox.c.next_at, notify_outbox.c.created_at)
            .limit(limit)
        )
    )
    if rows:
        conn.execute(
            notify_outbox.update()
            .where(notify_outbox.c.id.in_([r.id for r in rows]))
            .values(next_at=now + lease_seconds)
        )
    return rows


def settle(
    conn: Connection,
    *,
    row_id: str,
    ok: bool,
    error: str | None,
    now: int,
    cfg: notify_config.NotifyConfig,
) -> str:
    """Record one attempt; returns "delivered", "retry" or "failed"."""
    if ok:
        conn.execute(
            notify_outbox.update()
            .where(notify_outbox.c.id == row_id, notify_outbox.c.delivered_at.is_(None))
            .values(delivered_at=now, attempts=notify_outbox.c.attempts + 1, last_error=None)
        )
        return "delivered"
    attempts = (
        conn.execute(select(notify_outbox.c.attempts).where(notify_outbox.c.id == row_id)).scalar()
        or 0
    ) + 1
    values: dict[str, Any] = {"attempts": attempts, "last_error": (error or "error")[:200]}
    if attempts >= cfg.max_attempts:
        values["failed_at"] = now
        outcome = "failed"
    else:
        delay = backoff(attempts, base=cfg.backoff_base, cap=cfg.backoff_cap)
        values["next_at"] = now + max(1, round(delay))
        outcome = "retry"
    conn.execute(
        notify_outbox.update()
        .where(notify_outbox.c.id == row_id, notify_outbox.c.delivered_at.is_(None))
        .values(**values)
    )
    return outcome


def stats(conn: Connection, *, now: int) -> tuple[int, int]:
    """(undelivered rows, age in seconds of the oldest one)."""
    depth, oldest = conn.execute(
        select(func.count(), func.min(notify_outbox.c.created_at)).where(_pending())
    ).one()
    return int(depth), (0 if oldest is None else max(0, now - int(oldest)))
