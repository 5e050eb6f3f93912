"""The leader's timed changes: pending requests past their TTL, access ending and ended."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from jit_hooks.server import lifecycle
from jit_hooks.server.notify import events
from jit_hooks.server.notify.config import NotifyConfig
from jit_hooks.server.tables import notify_outbox, requests

# Ended access is announced if it ended at most this long ago: a service that
# was down for a day still tells everyone, one that was down for a month does
# not flood the channels with old news.
EXPIRED_LOOKBACK = 7 * 24 * 3600
MIN_PENDING_TTL = 60  # policy.py's lower bound: younger pending requests cannot be due


def expire_pending(conn: Connection, *, now: int) -> list[int]:
    """Move pending requests past their policy's pending_ttl to pending_expired."""
    rows = conn.execute(
        lifecycle._base_query().where(
            requests.c.state == "pending", requests.c.created_at <= now - MIN_PENDING_TTL
        )
    )
    done = []
    for row in list(rows):
        if lifecycle.effective_state(row, now) != "pending_expired":
            continue
        if lifecycle.expire_pending(conn, row, now=now):
            done.append(row.id)
    return done


def _approved_ending(conn: Connection, lo: int, hi: int, event: str) -> list[Any]:
    announced = (
        select(notify_outbox.c.id)
        .where(notify_outbox.c.request_id == requests.c.id, notify_outbox.c.event == event)
        .exists()
    )
    return list(
        conn.execute(
            lifecycle._base_query().where(
                requests.c.state == "approved",
                requests.c.ends_at > lo,
                requests.c.ends_at <= hi,
                ~announced,
            )
        )
    )


def announce_endings(conn: Connection, *, now: int, cfg: NotifyConfig) -> int:
    """Queue "ends soon" and "ended" once per approval (the rows' ids make repeats no-ops)."""
    n = 0
    # Only when some channel listens: the queries skip approvals already announced.
    if cfg.expiring_seconds > 0 and _listened(cfg, "request.expiring"):
        for row in _approved_ending(conn, now, now + cfg.expiring_seconds, "request.expiring"):
            n += events.request_event(conn, row, "request.expiring", now=now)
    if _listened(cfg, "request.expired"):
        for row in _approved_ending(conn, now - EXPIRED_LOOKBACK, now, "request.expired"):
            n += events.request_event(conn, row, "request.expired", now=now)
    return n


def _listened(cfg: NotifyConfig, event: str) -> bool:
    return any(event in ch.events for ch in cfg.channels.values())
