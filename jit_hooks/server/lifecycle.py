"""Access requests: create, review (approve/deny), revoke, cancel, list.

State changes are conditional UPDATEs (``... WHERE state = 'pending'``) inside
the caller's write transaction, so two racing reviews make one transition.
Every change to an existing request first locks its row (:func:`_lock`): on
PostgreSQL (READ COMMITTED, several replicas) two approvers of a 2-of-M
request would otherwise each count only their own review and neither approve.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from sqlalchemy import Connection, and_, or_, select
from sqlalchemy.exc import IntegrityError

from jit_hooks.protocol import LOGIN_RE, REQUEST_STATES
from jit_hooks.server import audit, store
from jit_hooks.server.auth import UserPrincipal
from jit_hooks.server.errors import Conflict, Forbidden, InvalidInput, NotFound
from jit_hooks.server.notify import events as notify
from jit_hooks.server.policy import (
    DEFAULT_PENDING_TTL,
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    Policy,
    canonical_cidrs,
    check_from,
    parse_policy,
    select_for_host,
    select_for_selector,
    selector_hosts,
)
from jit_hooks.server.tables import hosts, request_hosts, requests, reviews, users

MAX_START_AHEAD = 30 * 24 * 3600
START_SLACK = 60  # a "start" this far in the past is taken as "now" (client clock skew)
LIST_LIMIT = 500


def pending_deadline(row: Any) -> int:
    """When a pending request expires undecided (its policy's pending_ttl after creation)."""
    ttl = json.loads(row.policy_spec).get("pending_ttl", DEFAULT_PENDING_TTL)
    return int(row.created_at) + int(ttl)


def effective_state(row: Any, now: int) -> str:
    if row.state == "approved" and row.ends_at is not None and row.ends_at <= now:
        return "expired"
    # Before the leader's sweep writes it (notify/sweep.py), a pending request
    # past its TTL already counts as expired: nobody can approve it any more.
    if row.state == "pending" and pending_deadline(row) <= now:
        return "pending_expired"
    return row.state


def _clean_text(text: str, field: str, limit: int) -> str:
    text = text.strip()
    if len(text) > limit:
        raise InvalidInput(f"{field}: at most {limit} characters", field=field)
    # Cc: control characters; Cf: invisible formatting such as bidi overrides
    # (U+202E) or zero-width spaces, which would make an approver read a
    # different reason than the one stored.
    if any(ord(c) < 32 or unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise InvalidInput(f"{field}: no control or invisible formatting characters", field=field)
    return text


def _base_query():  # noqa: ANN202
    return select(
        requests, users.c.name.label("requester"), hosts.c.name.label("host_name")
    ).select_from(
        requests.join(users, users.c.id == requests.c.requester_id).outerjoin(
            hosts, hosts.c.id == requests.c.host_id
        )
    )


def _load(conn: Connection, request_id: int) -> Any:
    row = conn.execute(_base_query().where(requests.c.id == request_id)).first()
    if row is None:
        raise NotFound(f"unknown request {request_id}")
    return row


def _lock(conn: Connection, request_id: int) -> Any:
    """Lock the request's row until the transaction ends, then load it.

    Racing changes of one request (reviews, revoke, cancel) on any replica run
    one after the other; each statement after the lock sees what the previous
    one committed (READ COMMITTED takes a new snapshot per statement).
    SQLite holds its database-wide write lock already and omits FOR UPDATE.
    """
    conn.execute(select(requests.c.id).where(requests.c.id == request_id).with_for_update())
    return _load(conn, request_id)


def _transition(
    conn: Connection, request_id: int, from_state: str, conflict: str, **values: Any
) -> None:
    """The conditional UPDATE every change of a request is (module docstring): ``values``
    only while it is still ``from_state``; a racing change loses with 409 ``conflict``."""
    res = conn.execute(
        requests.update()
        .where(and_(requests.c.id == request_id, requests.c.state == from_state))
        .values(**values)
    )
    if res.rowcount != 1:
        raise Conflict(conflict)


def _policy(row: Any) -> Policy:
    return parse_policy(json.loads(row.policy_spec))


def _is_approver(user: UserPrincipal, row: Any) -> bool:
    return user.id != row.requester_id and _policy(row).approvers.includes(user.name, user.roles)


def can_see(user: UserPrincipal, row: Any) -> bool:
    return user.id == row.requester_id or user.is_admin or _is_approver(user, row)


def _reviews(conn: Connection, ids: list[int]) -> dict[int, list[dict]]:
    return review_lists(conn, reviews, "request_id", ids)


def review_lists(conn: Connection, table: Any, key: str, ids: list[int]) -> dict[int, list[dict]]:
    """The reviews in ``table`` (requests' or extensions') of each id in ``ids``, oldest first."""
    out: dict[int, list[dict]] = {i: [] for i in ids}
    if not ids:
        return out
    q = (
        select(table, users.c.name)
        .select_from(table.join(users, users.c.id == table.c.reviewer_id))
        .where(table.c[key].in_(ids))
        .order_by(table.c.id)
    )
    for r in conn.execute(q):
        out[getattr(r, key)].append(
            {"reviewer": r.name, "decision": r.decision, "comment": r.comment, "at": r.at}
        )
    return out


def request_dict(
    row: Any, review_list: list[dict], now: int, extension: dict | None = None
) -> dict:
    state = effective_state(row, now)
    return {
        "id": row.id,
        "requester": row.requester,
        "host": row.host_name,
        "selector": json.loads(row.selector) if row.selector else None,
        "login": row.login,
        "reason": row.reason,
        "duration_seconds": row.duration_seconds,
        "state": state,
        "policy": row.policy_name,
        "approvals_required": row.approvals_required,
        "reviews": review_list,
        "created_at": row.created_at,
        "start": row.start,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "decided_at": row.decided_at,
        "from_cidrs": row.from_cidrs.split(",") if row.from_cidrs else None,
        "extended_seconds": row.extended_seconds,
        # Only a live grant's extension is still open to review.
        "extension": extension if state == "approved" else None,
    }


def get_request(conn: Connection, *, user: UserPrincipal, request_id: int, now: int) -> dict:
    from jit_hooks.server import extend

    row = _load(conn, request_id)
    if not can_see(user, row):
        raise NotFound(f"unknown request {request_id}")
    ext = extend.pending(conn, [row.id]).get(row.id)
    return request_dict(row, _reviews(conn, [row.id])[row.id], now, ext)


def list_requests(
    conn: Connection, *, user: UserPrincipal, scope: str, state: str | None, now: int
) -> list[dict]:
    from jit_hooks.server import extend

    if state is not None and state not in REQUEST_STATES:
        raise InvalidInput(f"state: must be one of {', '.join(REQUEST_STATES)}", field="state")
    q = _base_query().order_by(requests.c.id.desc()).limit(LIST_LIMIT)
    if scope == "mine":
        q = q.where(requests.c.requester_id == user.id)
    elif scope == "review":
        # Pending requests, and live grants whose extension waits for reviews.
        extending = extend.pending_request_ids(conn)
        q = q.where(
            or_(
                requests.c.state == "pending",
                and_(requests.c.state == "approved", requests.c.id.in_(extending)),
            ),
            requests.c.requester_id != user.id,
        )
    elif scope == "all":
        if not user.is_admin:
            raise Forbidden("scope=all needs the admin role")
    else:
        raise InvalidInput("scope: must be one of mine, review, all", field="scope")
    if state == "expired":
        q = q.where(requests.c.state == "approved", requests.c.ends_at <= now)
    elif state == "approved":
        q = q.where(requests.c.state == "approved", requests.c.ends_at > now)
    elif state == "pending_expired":
        q = q.where(requests.c.state.in_(("pending", "pending_expired")))
    elif state is not None:
        q = q.where(requests.c.state == state)
    rows = list(conn.execute(q))
    if state in ("pending", "pending_expired") or scope == "review":
        rows = [r for r in rows if state is None or effective_state(r, now) == state]
        if scope == "review":
            rows = [r for r in rows if effective_state(r, now) in ("pending", "approved")]
    revs = _reviews(conn, [r.id for r in rows])
    exts = extend.pending(conn, [r.id for r in rows])
    if scope == "review":
        rows = [r for r in rows if _is_approver(user, r) and not _reviewed(user, r, revs, exts)]
    return [request_dict(r, revs[r.id], now, exts.get(r.id)) for r in rows]


def _reviewed(user: UserPrincipal, row: Any, revs: dict, exts: dict) -> bool:
    """Has ``user`` reviewed what of ``row`` waits for review (its extension, or itself)?"""
    if row.state == "approved":
        ext = exts.get(row.id)
        return ext is None or any(v["reviewer"] == user.name for v in ext["reviews"])
    return any(v["reviewer"] == user.name for v in revs[row.id])


def create_request(
    conn: Connection,
    *,
    user: UserPrincipal,
    host: str | None,
    selector: dict[str, str] | None,
    login: str,
    reason: str,
    duration_seconds: int,
    start: int | None,
    now: int,
    from_cidrs: list[str] | None = None,
) -> dict:
    if not LOGIN_RE.match(login):
        raise InvalidInput("login: not a valid login account name", field="login")
    reason = _clean_text(reason, "reason", 500)
    pinned = canonical_cidrs(from_cidrs, "from_cidrs") if from_cidrs is not None else ()
    if start is not None:
        if start < now - START_SLACK:
            raise InvalidInput("start: must not be in the past", field="start")
        if start > now + MAX_START_AHEAD:
            raise InvalidInput("start: at most 30 days ahead", field="start")
        start = max(start, now)
    all_policies = store.load_policies(conn)
    if host is not None:
        hrow = store.get_host(conn, name=host)
        policy = select_for_host(all_policies, hrow.name, json.loads(hrow.labels))
        if policy is None:
            raise Forbidden(f"no policy grants access to host {host!r}")
        host_ids = [hrow.id]
        target = f"host {host!r}"
    else:
        assert selector is not None
        for k, v in selector.items():
            if not LABEL_KEY_RE.match(k) or not LABEL_VALUE_RE.match(v):
                raise InvalidInput(f"selector: invalid label {k[:64]!r}", field="selector")
        policy = select_for_selector(all_policies, selector)
        if policy is None:
            raise Forbidden(f"no policy grants access to hosts matching {selector}")
        known = store.host_labels(conn)
        names = set(
            selector_hosts(all_policies, policy, selector, [(n, lab) for _, n, lab in known])
        )
        host_ids = [hid for hid, n, _ in known if n in names]
        if not host_ids:
            raise InvalidInput(
                f"selector: no host matches {selector} under policy {policy.name!r}",
                field="selector",
            )
        target = f"hosts matching {selector}"
    if not policy.requesters.includes(user.name, user.roles):
        raise Forbidden(f"policy {policy.name!r} does not let {user.name!r} request {target}")
    if login not in policy.logins:
        raise Forbidden(
            f"policy {policy.name!r} does not allow login {login!r} "
            f"(allowed: {', '.join(sorted(policy.logins))})"
        )
    if duration_seconds > policy.max_duration:
        raise InvalidInput(
            f"duration_seconds: must be <= {policy.max_duration}", field="duration_seconds"
        )
    if policy.reason_required and not reason:
        raise InvalidInput(f"reason: required by policy {policy.name!r}", field="reason")
    check_from(policy, pinned)
    _refuse_duplicate(
        conn, user=user, host_id=host_ids[0] if host is not None else None,
        selector=selector, login=login, target=target, now=now,
    )  # fmt: skip
    rid = conn.execute(
        requests.insert().values(
            requester_id=user.id,
            host_id=host_ids[0] if host is not None else None,
            selector=audit.canonical(selector) if selector is not None else None,
            login=login,
            reason=reason,
            duration_seconds=duration_seconds,
            start=start,
            state="pending",
            policy_name=policy.name,
            policy_spec=audit.canonical(policy.to_dict()),
            approvals_required=policy.approvals_required,
            created_at=now,
            from_cidrs=",".join(pinned) or None,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    conn.execute(request_hosts.insert(), [{"request_id": rid, "host_id": h} for h in host_ids])
    audit.append(
        conn,
        at=now,
        kind="request.created",
        actor=user.name,
        host=host,
        data={
            "request_id": rid,
            "selector": selector,
            "login": login,
            "reason": reason,
            "duration_seconds": duration_seconds,
            "start": start,
            "policy": policy.name,
            "hosts": len(host_ids),
            "from_cidrs": list(pinned) or None,
        },
    )
    if policy.auto_approve:
        _approve(conn, request_id=rid, start=start, duration=duration_seconds, now=now)
        audit.append(
            conn,
            at=now,
            kind="request.approved",
            actor=None,
            host=host,
            data={"request_id": rid, "auto": True, "policy": policy.name},
        )
    row = _load(conn, rid)
    if policy.auto_approve:
        notify.request_event(conn, row, "request.approved", now=now, details={"auto": True})
    else:
        notify.request_event(conn, row, "request.created", now=now, actor=user.name)
    return request_dict(row, [], now)


def _refuse_duplicate(
    conn: Connection,
    *,
    user: UserPrincipal,
    host_id: int | None,
    selector: dict[str, str] | None,
    login: str,
    target: str,
    now: int,
) -> None:
    """One pending request per person, target and login: a second one names the first.

    The requester's row is locked first, so two racing requests of one person
    (on any replica) are checked one after the other; nobody else waits.
    """
    conn.execute(select(users.c.id).where(users.c.id == user.id).with_for_update())
    q = _base_query().where(
        requests.c.requester_id == user.id,
        requests.c.login == login,
        requests.c.state == "pending",
    )
    if host_id is not None:
        q = q.where(requests.c.host_id == host_id)
    else:
        q = q.where(requests.c.selector == audit.canonical(selector))
    for row in conn.execute(q.order_by(requests.c.id)):
        if effective_state(row, now) == "pending":
            raise Conflict(
                f"request {row.id} for {target} as {login!r} is already pending; "
                f"wait for it or cancel it (`jit cancel {row.id}`)"
            )


def _approve(
    conn: Connection, *, request_id: int, start: int | None, duration: int, now: int
) -> tuple[int, int]:
    # The window opens at approval (or the requested start, if later); never at request time.
    starts_at = max(start or now, now)
    ends_at = starts_at + duration
    _transition(
        conn, request_id, "pending", f"request {request_id} is no longer pending",
        state="approved", starts_at=starts_at, ends_at=ends_at, decided_at=now,
    )  # fmt: skip
    return starts_at, ends_at


def review(
    conn: Connection, *, user: UserPrincipal, request_id: int, decision: str, comment: str, now: int
) -> dict:
    """Approve or deny; the N-th distinct eligible approval approves, one denial denies."""
    assert decision in ("approve", "deny")
    comment = _clean_text(comment, "comment", 500)
    row = _lock(conn, request_id)
    if not can_see(user, row):
        raise NotFound(f"unknown request {request_id}")
    if user.id == row.requester_id:
        raise Forbidden("you cannot review your own request")
    if not _is_approver(user, row):
        raise Forbidden(f"you are not an approver under policy {row.policy_name!r}")
    state = effective_state(row, now)
    from jit_hooks.server import extend

    if state == "approved" and extend.has_pending(conn, request_id):
        # A live grant is reviewed again only through its extension (same command).
        return extend.review(conn, user=user, row=row, decision=decision, comment=comment, now=now)
    if state == "pending_expired":
        raise _expired_pending(request_id)
    if state != "pending":
        raise Conflict(f"request {request_id} is {state}, not pending")
    try:
        conn.execute(
            reviews.insert().values(
                request_id=request_id,
                reviewer_id=user.id,
                decision=decision,
                comment=comment,
                at=now,
            )
        )
    except IntegrityError as e:
        raise Conflict(f"you already reviewed request {request_id}") from e
    host = row.host_name
    audit.append(
        conn,
        at=now,
        kind=f"review.{decision}",
        actor=user.name,
        host=host,
        data={"request_id": request_id, "comment": comment},
    )
    if decision == "deny":
        _transition(
            conn, request_id, "pending", f"request {request_id} is no longer pending",
            state="denied", decided_at=now,
        )  # fmt: skip
        audit.append(
            conn,
            at=now,
            kind="request.denied",
            actor=user.name,
            host=host,
            data={"request_id": request_id},
        )
        notify.request_event(
            conn, _load(conn, request_id), "request.denied", now=now, actor=user.name,
            details={"comment": comment},
        )  # fmt: skip
    else:
        approvals = sum(
            1 for r in _reviews(conn, [request_id])[request_id] if r["decision"] == "approve"
        )
        if approvals >= row.approvals_required:
            starts_at, ends_at = _approve(
                conn, request_id=request_id, start=row.start, duration=row.duration_seconds, now=now
            )
            audit.append(
                conn,
                at=now,
                kind="request.approved",
                actor=user.name,
                host=host,
                data={
                    "request_id": request_id,
                    "approvals": approvals,
                    "starts_at": starts_at,
                    "ends_at": ends_at,
                },
            )
            notify.request_event(
                conn, _load(conn, request_id), "request.approved", now=now, actor=user.name,
                details={"comment": comment},
            )  # fmt: skip
        else:
            notify.request_event(
                conn, row, "request.reviewed", now=now, actor=user.name, key=user.name,
                details={"decision": decision, "comment": comment, "approvals": approvals},
            )  # fmt: skip
    return get_request(conn, user=user, request_id=request_id, now=now)


def revoke(
    conn: Connection, *, user: UserPrincipal, request_id: int, comment: str, now: int
) -> dict:
    comment = _clean_text(comment, "comment", 500)
    row = _lock(conn, request_id)
    if not can_see(user, row):
        raise NotFound(f"unknown request {request_id}")
    state = effective_state(row, now)
    if state != "approved":
        raise Conflict(f"request {request_id} is {state}; only an approved request can be revoked")
    _end_grant(
        conn,
        row,
        "revoked",
        actor=user.name,
        data={"request_id": request_id, "comment": comment},
        details={"comment": comment},
        now=now,
    )
    return get_request(conn, user=user, request_id=request_id, now=now)


def _end_grant(
    conn: Connection,
    row: Any,
    state: str,
    *,
    actor: str,
    data: dict,
    details: dict | None,
    now: int,
) -> None:
    """Close an approved grant as ``state`` (revoked, dropped): the row only if it
    is still approved (a racing end loses with 409), its pending extension, the
    audit record and the notification, all in the caller's transaction."""
    request_id = row.id
    _transition(
        conn, request_id, "approved", f"request {request_id} is no longer approved",
        state=state, closed_at=now,
    )  # fmt: skip
    _close_extension(conn, request_id, now)
    kind = f"request.{state}"
    audit.append(conn, at=now, kind=kind, actor=actor, host=row.host_name, data=data)
    notify.request_event(conn, row, kind, now=now, actor=actor, details=details)


def expire_pending(conn: Connection, row: Any, *, now: int) -> bool:
    """Record a pending request past its TTL as ``pending_expired`` (the row if it is
    still pending, its audit record and notification); False if it was not pending any
    more. The leader's sweep does this for every such request (notify/sweep.py), a
    cancel for the one it finds so before the sweep got to it."""
    res = conn.execute(
        requests.update()
        .where(and_(requests.c.id == row.id, requests.c.state == "pending"))
        .values(state="pending_expired", closed_at=now)
    )
    if res.rowcount != 1:
        return False
    audit.append(
        conn,
        at=now,
        kind="request.pending_expired",
        actor=None,
        host=row.host_name,
        data={"request_id": row.id, "created_at": row.created_at},
    )
    notify.request_event(conn, row, "request.pending_expired", now=now)
    return True


def _expired_pending(request_id: int) -> Conflict:
    return Conflict(
        f"request {request_id} expired while pending (nobody decided within the "
        f"policy's pending_ttl); the requester must ask again"
    )


def cancel(conn: Connection, *, user: UserPrincipal, request_id: int, now: int) -> dict | Conflict:
    """The requester takes back a pending request (or an active grant's pending extension).

    A request past its pending TTL is not cancelled: it expired, as approve and deny
    say (409). If the sweep has not recorded that yet, this records it as the sweep
    would, in this transaction, and *returns* the 409 for the caller to raise after
    the commit (raising here would roll the record back).
    """
    row = _lock(conn, request_id)
    if not can_see(user, row):
        raise NotFound(f"unknown request {request_id}")
    if user.id != row.requester_id:
        raise Forbidden("only the requester can cancel a request")
    state = effective_state(row, now)
    if state == "pending_expired":
        if row.state == "pending":
            expire_pending(conn, row, now=now)
        return _expired_pending(request_id)
    if state == "approved" and _close_extension(conn, request_id, now):
        # A live grant's pending extension is what the requester takes back.
        audit.append(
            conn,
            at=now,
            kind="extension.cancelled",
            actor=user.name,
            host=row.host_name,
            data={"request_id": request_id},
        )
        return get_request(conn, user=user, request_id=request_id, now=now)
    _transition(
        conn, request_id, "pending",
        f"request {request_id} is {state}; only a pending request can be cancelled",
        state="cancelled", closed_at=now,
    )  # fmt: skip
    audit.append(
        conn,
        at=now,
        kind="request.cancelled",
        actor=user.name,
        host=row.host_name,
        data={"request_id": request_id},
    )
    return get_request(conn, user=user, request_id=request_id, now=now)


def drop(conn: Connection, *, user: UserPrincipal, request_id: int, now: int) -> dict:
    """The requester gives an approved grant back now (state ``dropped``).

    Hooks only allow ``approved`` grants, so the next login is denied; the
    host's sessions endpoint lists the grant's live sessions to end.
    """
    row = _lock(conn, request_id)
    if not can_see(user, row):
        raise NotFound(f"unknown request {request_id}")
    if user.id != row.requester_id:
        raise Forbidden("only the requester can drop a grant (approvers: jit revoke)")
    state = effective_state(row, now)
    if state != "approved":
        hint = " (cancel a pending one: jit cancel)" if state == "pending" else ""
        raise Conflict(
            f"request {request_id} is {state}; only an approved grant can be dropped{hint}"
        )
    _end_grant(
        conn,
        row,
        "dropped",
        actor=user.name,
        data={"request_id": request_id, "ends_at": row.ends_at},
        details=None,
        now=now,
    )
    return get_request(conn, user=user, request_id=request_id, now=now)


def _close_extension(conn: Connection, request_id: int, now: int) -> int:
    from jit_hooks.server import extend

    return extend.close_pending(conn, request_id=request_id, state="cancelled", now=now)


# For extend.py (one module per concern, one set of request helpers).
clean_text = _clean_text
lock = _lock
load = _load
policy_of = _policy
transition = _transition
