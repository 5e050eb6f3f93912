"""Extensions of an approved grant (`jit extend`): same request, a later ends_at.

The policy snapshot taken at request time decides: ``max_extension`` caps the
total added time, ``extension_approvals`` says how many new reviews one needs
(0: approved at once). An approved extension moves the request's ``ends_at``
in place, so live sessions keep running and the next key line carries the new
expiry-time. Every change runs under the request's row lock (lifecycle._lock).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from jit_hooks.server import audit, lifecycle
from jit_hooks.server.auth import UserPrincipal
from jit_hooks.server.errors import Conflict, Forbidden, InvalidInput, NotFound
from jit_hooks.server.notify import events as notify
from jit_hooks.server.tables import extension_reviews, extensions

# The shortest extension: each one is an event every host of the grant hears on its
# stream, so 1-second steps would flood it (review L4). Less only for what is left.
MIN_EXTENSION = 60


def pending(conn: Connection, request_ids: list[int]) -> dict[int, dict]:
    """The pending extension (with its reviews) of each of ``request_ids`` that has one."""
    if not request_ids:
        return {}
    rows = list(
        conn.execute(
            select(extensions).where(
                extensions.c.request_id.in_(request_ids), extensions.c.state == "pending"
            )
        )
    )
    out: dict[int, dict] = {}
    revs = _reviews(conn, [r.id for r in rows])
    for r in rows:
        out[r.request_id] = _dict(r, revs[r.id])
    return out


def pending_request_ids(conn: Connection) -> list[int]:
    """Requests with an extension waiting for reviews (for `jit list --review`)."""
    q = select(extensions.c.request_id).where(extensions.c.state == "pending")
    return list(conn.execute(q).scalars())


def _reviews(conn: Connection, ids: list[int]) -> dict[int, list[dict]]:
    return lifecycle.review_lists(conn, extension_reviews, "extension_id", ids)


def _dict(row: Any, review_list: list[dict]) -> dict:
    return {
        "id": row.id,
        "seconds": row.seconds,
        "reason": row.reason,
        "state": row.state,
        "approvals_required": row.approvals_required,
        "reviews": review_list,
        "created_at": row.created_at,
    }


def _pending_row(conn: Connection, request_id: int) -> Any:
    return conn.execute(
        select(extensions).where(
            extensions.c.request_id == request_id, extensions.c.state == "pending"
        )
    ).first()


def has_pending(conn: Connection, request_id: int) -> bool:
    return _pending_row(conn, request_id) is not None


def request_extension(
    conn: Connection, *, user: UserPrincipal, request_id: int, seconds: int, reason: str, now: int
) -> dict:
    """Ask for ``seconds`` more on an active grant; approved at once if the policy says so."""
    reason = lifecycle.clean_text(reason, "reason", 500)
    row = lifecycle.lock(conn, request_id)
    if not lifecycle.can_see(user, row):
        raise NotFound(f"unknown request {request_id}")
    if user.id != row.requester_id:
        raise Forbidden("only the requester can extend a grant")
    state = lifecycle.effective_state(row, now)
    if state != "approved":
        raise Conflict(
            f"request {request_id} is {state}; only an active grant can be extended "
            "(ask again with `jit request`)"
        )
    policy = lifecycle.policy_of(row)
    if policy.max_extension == 0:
        raise Forbidden(f"policy {policy.name!r} allows no extensions")
    left = policy.max_extension - row.extended_seconds
    if seconds < 1 or seconds > left:
        raise InvalidInput(
            f"duration_seconds: at most {max(left, 0)} more seconds "
            f"(policy {policy.name!r}: max_extension {policy.max_extension}, "
            f"{row.extended_seconds} used)",
            field="duration_seconds",
        )
    if seconds < min(MIN_EXTENSION, left):
        raise InvalidInput(
            f"duration_seconds: at least {MIN_EXTENSION} seconds (or the {left} left)",
            field="duration_seconds",
        )
    if policy.reason_required and not reason:
        raise InvalidInput(f"reason: required by policy {policy.name!r}", field="reason")
    if _pending_row(conn, request_id) is not None:
        raise Conflict(f"request {request_id} already has an extension waiting for review")
    ext_id = conn.execute(
        extensions.insert().values(
            request_id=request_id,
            seconds=seconds,
            reason=reason,
            state="pending",
            approvals_required=policy.extension_approvals,
            created_at=now,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    audit.append(
        conn,
        at=now,
        kind="extension.requested",
        actor=user.name,
        host=row.host_name,
        data={
            "request_id": request_id,
            "extension_id": ext_id,
            "seconds": seconds,
            "reason": reason,
        },
    )
    if policy.extension_approvals == 0:
        _apply(conn, row=row, ext_id=ext_id, seconds=seconds, actor=None, approvals=0, now=now)
    else:
        notify.request_event(
            conn, row, "request.extension_requested", now=now, actor=user.name,
            details={"seconds": seconds, "reason": reason}, key=f"ext{ext_id}",
        )  # fmt: skip
    return lifecycle.get_request(conn, user=user, request_id=request_id, now=now)


def _apply(
    conn: Connection,
    *,
    row: Any,
    ext_id: int,
    seconds: int,
    actor: str | None,
    approvals: int,
    now: int,
) -> None:
    """Move the grant's end by ``seconds`` (the request row is locked and approved)."""
    ends_at = row.ends_at + seconds
    lifecycle.transition(
        conn, row.id, "approved", f"request {row.id} is no longer approved",
        ends_at=ends_at, extended_seconds=row.extended_seconds + seconds,
    )  # fmt: skip
    conn.execute(
        extensions.update()
        .where(extensions.c.id == ext_id)
        .values(state="approved", decided_at=now)
    )
    audit.append(
        conn,
        at=now,
        kind="request.extended",
        actor=actor,
        host=row.host_name,
        data={
            "request_id": row.id,
            "extension_id": ext_id,
            "seconds": seconds,
            "approvals": approvals,
            "auto": actor is None,
            "ends_at": ends_at,
        },
    )
    notify.request_event(
        conn, lifecycle.load(conn, row.id), "request.extended", now=now, actor=actor,
        details={"seconds": seconds, "auto": actor is None}, key=f"ext{ext_id}",
    )  # fmt: skip


def review(
    conn: Connection, *, user: UserPrincipal, row: Any, decision: str, comment: str, now: int
) -> dict:
    """A review of the pending extension of ``row`` (locked; lifecycle.review checked the
    reviewer: not the requester, an approver under the policy)."""
    ext = _pending_row(conn, row.id)
    if ext is None:
        raise Conflict(f"request {row.id} has no extension waiting for review")
    try:
        conn.execute(
            extension_reviews.insert().values(
                extension_id=ext.id, reviewer_id=user.id, decision=decision, comment=comment, at=now
            )
        )
    except IntegrityError as e:
        raise Conflict(f"you already reviewed the extension of request {row.id}") from e
    audit.append(
        conn,
        at=now,
        kind=f"extension_review.{decision}",
        actor=user.name,
        host=row.host_name,
        data={"request_id": row.id, "extension_id": ext.id, "comment": comment},
    )
    if decision == "deny":
        conn.execute(
            extensions.update()
            .where(extensions.c.id == ext.id)
            .values(state="denied", decided_at=now)
        )
        audit.append(
            conn,
            at=now,
            kind="extension.denied",
            actor=user.name,
            host=row.host_name,
            data={"request_id": row.id, "extension_id": ext.id},
        )
        notify.request_event(
            conn, row, "request.extension_denied", now=now, actor=user.name,
            details={"seconds": ext.seconds, "comment": comment}, key=f"ext{ext.id}",
        )  # fmt: skip
    else:
        approvals = sum(1 for r in _reviews(conn, [ext.id])[ext.id] if r["decision"] == "approve")
        if approvals >= ext.approvals_required:
            _apply(
                conn, row=row, ext_id=ext.id, seconds=ext.seconds, actor=user.name,
                approvals=approvals, now=now,
            )  # fmt: skip
    return lifecycle.get_request(conn, user=user, request_id=row.id, now=now)


def close_pending(conn: Connection, *, request_id: int, state: str, now: int) -> int:
    """End the request's pending extension (``cancelled``: the grant was dropped, revoked)."""
    res = conn.execute(
        extensions.update()
        .where(extensions.c.request_id == request_id, extensions.c.state == "pending")
        .values(state=state, decided_at=now)
    )
    return res.rowcount
