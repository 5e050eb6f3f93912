"""Hook decisions for hosts: authorized keys, account, session, break-glass.

Each answer is one indexed query (keys.fingerprint / request_hosts.host_id ->
requests) and every decision is audited in the same transaction.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    select,
    text,
    true,
)

from jit_hooks import sshkeys
from jit_hooks.errors import KeyParseError
from jit_hooks.server import audit, fold, sql
from jit_hooks.server.audit_settings import miss_window
from jit_hooks.server.auth import HostPrincipal
from jit_hooks.server.notify import events as notify
from jit_hooks.server.sql import Answer, Prepared, Queued
from jit_hooks.server.tables import keys, request_hosts, requests, sessions, tokens, users

MAX_REASON = 200


def short_reason(text: str) -> str:
    """Printable ASCII, at most MAX_REASON characters (it reaches the ssh user)."""
    if text.isascii() and text.isprintable():  # nothing to replace: the usual case
        return text[:MAX_REASON]
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean[:MAX_REASON]


# The host of the token whose sha256 is ``:digest`` (None for a user token): the
# lookups below in this form run before the token is checked (Prefetch).
_TOKEN_HOST = (
    select(tokens.c.host_id).where(tokens.c.token_hash == bindparam("digest")).scalar_subquery()
)


def _active(host_id: Any = None, login: Any = None, now: Any = None):  # noqa: ANN202
    """An approval of host ``:host_id`` and login ``:login`` covering ``:now`` (or these)."""
    now = bindparam("now") if now is None else now
    return and_(
        request_hosts.c.host_id == (bindparam("host_id") if host_id is None else host_id),
        requests.c.login == (bindparam("login") if login is None else login),
        requests.c.state == "approved",
        requests.c.starts_at <= now,
        requests.c.ends_at > now,
        users.c.disabled.is_(False),
    )


def _for_key(host_id: Any = None) -> Prepared:
    return Prepared(_for_key_query(host_id))


def _for_key_query(
    host_id: Any = None, login: Any = None, fingerprint: Any = None, now: Any = None
):  # noqa: ANN202
    """The key's approval query; bind parameters, or these expressions where given."""
    fingerprint = bindparam("fingerprint") if fingerprint is None else fingerprint
    return (
        select(
            requests.c.id,
            requests.c.ends_at,
            requests.c.policy_spec,
            requests.c.from_cidrs,
            users.c.id.label("user_id"),
            users.c.name.label("user"),
            keys.c.blob,
            keys.c.key_type,
            keys.c.fingerprint,
        )
        .select_from(
            keys.join(users, users.c.id == keys.c.user_id)
            .join(requests, requests.c.requester_id == keys.c.user_id)
            .join(request_hosts, request_hosts.c.request_id == requests.c.id)
        )
        .where(keys.c.fingerprint == fingerprint, _active(host_id, login, now))
        .order_by(requests.c.ends_at.desc())
        .limit(1)
    )


def _for_login(host_id: Any = None) -> Prepared:
    return Prepared(
        select(
            requests.c.id,
            requests.c.ends_at,
            requests.c.from_cidrs,
            users.c.id.label("user_id"),
            users.c.name.label("user"),
        )
        .select_from(
            request_hosts.join(requests, requests.c.id == request_hosts.c.request_id).join(
                users, users.c.id == requests.c.requester_id
            )
        )
        .where(_active(host_id))
        .order_by(requests.c.ends_at.desc())
        .limit(1)
    )


# Prepared once (jit_hooks/server/sql.py): they run on every hook call.
_FOR_KEY = _for_key()
_FOR_LOGIN = _for_login()
# The same, for the host of the token with the sha256 ``:digest`` (Prefetch).
_FOR_KEY_BY_TOKEN = _for_key(_TOKEN_HOST)
_FOR_LOGIN_BY_TOKEN = _for_login(_TOKEN_HOST)
# A row of theirs, as the set-oriented read (_read_keys) hands it to a call.
_KEY_COLUMNS: list[str] = [c.key for c in _for_key_query().selected_columns]
_KeyRow = namedtuple("_KeyRow", _KEY_COLUMNS)  # type: ignore[misc]  # noqa: PYI024


def approval_for_key(
    conn: Connection,
    *,
    host_id: int,
    login: str,
    fingerprint: str,
    now: int,
    pre: Prefetch | None = None,
) -> Any:
    """The longest-running active approval whose requester owns this key, or None."""
    if pre is not None and pre.key is not None and pre.asked == (login, fingerprint, now):
        return pre.key.first()
    return _FOR_KEY.first(conn, host_id=host_id, login=login, fingerprint=fingerprint, now=now)


def approval_for_login(
    conn: Connection, *, host_id: int, login: str, now: int, pre: Prefetch | None = None
) -> Any:
    """Any active approval for this host and login account (logins without a key)."""
    if pre is not None and pre.login is not None and pre.asked == (login, None, now):
        return pre.login.first()
    return _FOR_LOGIN.first(conn, host_id=host_id, login=login, now=now)


@dataclass(frozen=True)
class Prefetch:
    """A hook's decision lookups, sent before its token lookup is waited for.

    On PostgreSQL a hook call used to wait two round trips in a row: the
    token lookup, then the decision query with the token's host. These
    lookups name the host through the token's hash instead (``_TOKEN_HOST``),
    so they are queued in the batch's pipeline (unit.py, sql.Queued) ahead of
    the token lookup, and its one round trip brings both answers. They are
    read only once the token has been checked: for a valid host token its
    host is the one ``_TOKEN_HOST`` names, so the rows are the ones the
    host_id form returns (tests run both forms); for any other token the
    call fails as before and the rows are never read. In a batch with
    set-oriented reads (sql.Sets) a key lookup is an ask of the batch's one
    key statement (``_read_keys``) instead. Outside a pipelined batch
    (SQLite, a call run alone) there is none: the usual path runs.
    """

    asked: tuple[str, str | None, int]  # (login, fingerprint, now) the lookups were sent for
    key: Queued | Answer | None = None
    login: Queued | None = None
    open_requests: Queued | None = None


# A whole batch's key lookups in one statement (PostgreSQL: sql.Sets): one row per
# distinct (token hash, login, fingerprint, now) asked, numbered by ``ord``, each the
# _FOR_KEY_BY_TOKEN row of its own token's host (a LATERAL subquery per ask: no
# ask sees another token's host). The asks travel as one JSON text: psycopg's
# Python array dumpers cost more than the statement (profile, bench P3pg).
_ASKS = (
    func.json_to_recordset(cast(bindparam("asks"), JSON))
    .table_valued(
        column("digest", String),
        column("login", String),
        column("fingerprint", String),
        column("now", Integer),
        column("ord", Integer),
    )
    .render_derived(name="ask", with_types=True)
)
_ASK_KEY = _for_key_query(
    select(tokens.c.host_id)
    .where(tokens.c.token_hash == _ASKS.c.digest)
    .correlate_except(tokens)
    .scalar_subquery(),
    _ASKS.c.login,
    _ASKS.c.fingerprint,
    _ASKS.c.now,
).lateral("found")
_FOR_KEYS_BY_TOKENS = Prepared(
    select(_ASKS.c.ord, *_ASK_KEY.c).select_from(_ASKS.join(_ASK_KEY, true())), binary=True
)


def _read_keys(conn: Connection, asks: list[tuple[str, str, str, int]]) -> Any:
    """sql.Reader: each ask's approval row for its key (or None), as _FOR_KEY_BY_TOKEN's."""
    distinct = list(dict.fromkeys(asks))
    found = _FOR_KEYS_BY_TOKENS.queue(
        conn,
        asks=json.dumps(
            [
                {"digest": d, "login": lg, "fingerprint": fp, "now": now, "ord": i}
                for i, (d, lg, fp, now) in enumerate(distinct)
            ]
        ),
    )
    assert found is not None  # Sets exist only in a pipelined batch

    def fetch() -> list[Any]:
        rows = {distinct[r[0]]: _KeyRow._make(r[1:]) for r in found.rows()}
        return [rows.get(a) for a in asks]

    return fetch


def prefetch(
    conn: Connection, digest: str, *, login: str, fingerprint: str | None, now: int
) -> Prefetch | None:
    """Queue the decision lookups of an authorized-keys or account call (see Prefetch)."""
    sets = sql.writes.sets
    if fingerprint and sets is not None and sets.asking:
        ask = sets.ask(_read_keys, (digest, login, fingerprint, now))
        return Prefetch((login, fingerprint, now), key=ask)
    if fingerprint:
        q = _FOR_KEY_BY_TOKEN.queue(
            conn, digest=digest, login=login, fingerprint=fingerprint, now=now
        )
        return None if q is None else Prefetch((login, fingerprint, now), key=q)
    q = _FOR_LOGIN_BY_TOKEN.queue(conn, digest=digest, login=login, now=now)
    if q is None:
        return None
    ids = _OPEN_REQUESTS_BY_TOKEN.queue(conn, digest=digest, login=login, now=now)
    return Prefetch((login, None, now), login=q, open_requests=ids)


# Audit context of a login let in by the login account alone: the approvals that
# held it open (a bounded list: the audit row stays small).
MAX_CONTEXT_REQUESTS = 20


def _open_requests_query(host_id: Any = None):  # noqa: ANN202
    return (
        select(requests.c.id)
        .select_from(
            request_hosts.join(requests, requests.c.id == request_hosts.c.request_id).join(
                users, users.c.id == requests.c.requester_id
            )
        )
        .where(_active(host_id))
        # No ORDER BY: sorting by id let the planner walk the whole request history in
        # id order (2 s per key-less login at 1M requests, bench P3s); the active
        # approvals of one host and login come from the login/state/ends_at index and
        # are sorted here.
        .limit(MAX_CONTEXT_REQUESTS)
    )


_OPEN_REQUESTS = _open_requests_query()
_OPEN_REQUESTS_BY_TOKEN = Prepared(_open_requests_query(_TOKEN_HOST))


def _open_requests(
    conn: Connection, *, host_id: int, login: str, now: int, pre: Prefetch | None = None
) -> list[int]:
    """Ids of the active approvals that hold ``login`` open on this host (a key-less login).

    Any MAX_CONTEXT_REQUESTS of them when more hold it open (the audit row stays small).
    """
    if pre is not None and pre.open_requests is not None and pre.asked == (login, None, now):
        return sorted(pre.open_requests.scalars())
    params = {"host_id": host_id, "login": login, "now": now}
    return sorted(conn.execute(_OPEN_REQUESTS, params).scalars())


def echo(host: HostPrincipal, login: str, fingerprint: str | None, connection: str | None) -> dict:
    """The question as the host asked it, for the answer (protocol.Echo): the host checks it.

    ``host`` is always the token's host: an answer names who it was computed for.
    """
    return {
        "host": host.name,
        "login": login,
        "fingerprint": fingerprint,
        "connection": connection,
    }


def _host_mismatch(host: HostPrincipal, asked_host: str | None) -> str | None:
    """Why the asking host's own name (its host.name) rules out an answer, or None."""
    if asked_host is None or asked_host == host.name:
        return None
    return f"this host calls itself {asked_host}, its token is for {host.name}"


@functools.lru_cache(maxsize=256)
def _options(policy_spec: str) -> tuple:
    """The key options of a stored policy (its text parsed once: few policies, many calls)."""
    return tuple(json.loads(policy_spec).get("options", []))


def _record(
    conn: Connection, host: HostPrincipal, kind: str, actor: str | None, now: int, **data: Any
) -> None:
    audit.append(conn, at=now, kind=kind, actor=actor, host=host.name, data=data)


def _record_akc(
    conn: Connection,
    host: HostPrincipal,
    row: Any,
    login: str,
    fingerprint: str,
    reason: str,
    now: int,
) -> None:
    _record(
        conn,
        host,
        "hook.authorized_keys",
        row.user if row else None,
        now,
        login=login,
        fingerprint=fingerprint,
        decision="allow" if row else "deny",
        reason=short_reason(reason),
        request_id=row.id if row else None,
    )


def authorized_keys(
    conn: Connection,
    *,
    host: HostPrincipal,
    login: str,
    fingerprint: str,
    key_type: str,
    key: str,
    now: int,
    asked_host: str | None = None,
    connection: str | None = None,
    pre: Prefetch | None = None,
) -> dict:
    """The answer (echo + ``keys``): the offered key, if its owner holds an active approval.

    ``asked_host`` is the host's own name for itself (its config's host.name), if
    it sent one: a host that thinks it is another host is answered no keys.
    """
    try:
        offered = sshkeys.parse_blob(key_type, key)
    except KeyParseError:
        offered = None
    row = None
    wrong_host = _host_mismatch(host, asked_host)
    if wrong_host is not None:
        reason = wrong_host
    elif offered is None:
        reason = "offered key is not a valid key"
    elif offered.fingerprint != fingerprint:
        reason = "fingerprint does not match the offered key"
    else:
        row = approval_for_key(
            conn, host_id=host.id, login=login, fingerprint=fingerprint, now=now, pre=pre
        )
        reason = "active approval" if row else f"no active approval for {login} with this key"
        if row is not None and (row.blob != offered.blob or row.key_type != offered.key_type):
            row, reason = None, "offered key differs from the registered key"
    # Neither answer proves who is connecting: any client can offer any number of
    # keys, and anyone holding a public key can make sshd ask about it (no
    # signature needed). So each is audited once per (host, login, fingerprint[,
    # approval]) and window; repeats are counted and written as one event when
    # the window closes (server/fold.py). The account/session hook's event is the
    # audited login decision.
    if row is not None:
        audit_now = fold.count_allow(
            conn,
            host=host.name,
            login=login,
            fingerprint=fingerprint,
            request_id=row.id,
            actor=row.user,
            now=now,
            window=miss_window(),
            # _record_akc's data: on PostgreSQL the same statement writes the event.
            first_event={
                "login": login,
                "fingerprint": fingerprint,
                "decision": "allow",
                "reason": short_reason(reason),
                "request_id": row.id,
            },
        )
    else:
        audit_now = fold.count_miss(
            conn,
            host=host.name,
            login=login,
            fingerprint=fingerprint,
            reason=short_reason(reason),
            now=now,
            window=miss_window(),
            # _record_akc's data: on PostgreSQL the same statement writes the event.
            first_event={
                "login": login,
                "fingerprint": fingerprint,
                "decision": "deny",
                "reason": short_reason(reason),
                "request_id": None,
            },
        )
    if audit_now:
        _record_akc(conn, host, row, login, fingerprint, reason, now)
    answer = echo(host, login, fingerprint, connection)
    answer["keys"] = (
        []
        if row is None
        else [
            {
                "key_type": row.key_type,
                "key": row.blob,
                "fingerprint": row.fingerprint,
                "expires_at": row.ends_at,
                "options": list(_options(row.policy_spec)),
                "request_id": row.id,
                "from_cidrs": _cidrs(row),
            }
        ]
    )
    return answer


def _decide(
    conn: Connection,
    *,
    host: HostPrincipal,
    login: str,
    fingerprint: str | None,
    now: int,
    pre: Prefetch | None = None,
) -> tuple[Any, str]:
    if fingerprint:
        row = approval_for_key(
            conn, host_id=host.id, login=login, fingerprint=fingerprint, now=now, pre=pre
        )
        reason = (
            "active approval"
            if row
            else f"no active approval for {login}@{host.name} with this key"
        )
    else:
        row = approval_for_login(conn, host_id=host.id, login=login, now=now, pre=pre)
        reason = (
            "active approval for the login account"
            if row
            else f"no active approval for {login}@{host.name}"
        )
    return row, short_reason(reason)


def _cidrs(row: Any) -> list[str] | None:
    """The source ranges a grant is pinned to (the host enforces them), or None."""
    return row.from_cidrs.split(",") if row.from_cidrs else None


def _pinned_out(row: Any, rhost: str | None) -> str | None:
    """Why a pinned grant refuses a login from ``rhost`` (outside its ranges), or None.

    Checked here as well as on the host, so that a login the host will refuse is
    never recorded as a session or audited as an allow (review M2). No address,
    or a name instead of one (sshd's UseDNS), is outside every range.
    """
    cidrs = _cidrs(row) if row is not None else None
    if not cidrs:
        return None
    try:
        addr = ipaddress.ip_address(rhost or "")
    except ValueError:
        addr = None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr is not None and any(addr in ipaddress.ip_network(c) for c in cidrs):
        return None
    return short_reason(
        f"approval {row.id} does not allow logins from {rhost or 'an unknown address'}"
    )


def _answer(row: Any, reason: str) -> dict:
    answer = {
        "decision": "allow" if row else "deny",
        "reason": reason,
        "request_id": row.id if row else None,
        "expires_at": row.ends_at if row else None,
    }
    if row is not None and row.from_cidrs:
        answer["from_cidrs"] = _cidrs(row)
    return answer


def _actor(
    conn: Connection,
    row: Any,
    *,
    host: HostPrincipal,
    login: str,
    fingerprint: str | None,
    now: int,
    pre: Prefetch | None = None,
) -> tuple[str | None, dict]:
    """Who the audit names for a decision, and the context that says how it was reached.

    A key names its owner. A login let in without a key (password,
    keyboard-interactive, a certificate with no key record) proves nobody's
    identity: any approval for the login account opened it, so the event names no
    person; ``via=login-account`` and the approvals that held it open say why.
    """
    if row is None:
        return None, {}
    if fingerprint:
        return row.user, {}
    ids = _open_requests(conn, host_id=host.id, login=login, now=now, pre=pre)
    return None, {"via": "login-account", "request_ids": ids}


def account(
    conn: Connection,
    *,
    host: HostPrincipal,
    login: str,
    rhost: str | None,
    service: str | None,
    connection: str | None,
    fingerprint: str | None,
    now: int,
    asked_host: str | None = None,
    open_session: bool = False,
    pre: Prefetch | None = None,
) -> dict:
    """The answer (echo + decision) of the account hook; audited as hook.account.

    ``open_session``: on an allow, also record the live session of ``connection``
    (what the session hook's open event did), bound to the approval that let it in
    and to that approval's owner; the host then runs no session-open hook.
    """
    wrong_host = _host_mismatch(host, asked_host)
    pinned: dict[str, Any] = {}
    if wrong_host is not None:
        row, reason = None, short_reason(wrong_host)
    else:
        row, reason = _decide(
            conn, host=host, login=login, fingerprint=fingerprint, now=now, pre=pre
        )
        outside = _pinned_out(row, rhost)
        if outside is not None:
            pinned = {"pinned_request": row.id, "from_cidrs": _cidrs(row)}
            row, reason = None, outside
    decision = _answer(row, reason)
    actor, context = _actor(
        conn, row, host=host, login=login, fingerprint=fingerprint, now=now, pre=pre
    )
    context.update(pinned)
    if open_session and row is not None and connection is not None:
        _OPEN_SESSION.execute(
            conn,
            host_id=host.id,
            login=login,
            user_id=row.user_id,
            request_id=row.id,
            connection=connection,
            rhost=rhost,
            fingerprint=fingerprint,  # sessions.fingerprint (migration 0008, H-GRANT)
            opened_at=now,
        )
        context["session"] = "open"
    _record(
        conn,
        host,
        "hook.account",
        actor,
        now,
        login=login,
        rhost=rhost,
        service=service,
        connection=connection,
        fingerprint=fingerprint,
        **decision,
        **context,
    )
    return echo(host, login, fingerprint, connection) | decision


_CLOSE_SESSION = Prepared(
    sessions.update()
    .where(
        # Not the column names: an UPDATE reserves those for its SET values (PostgreSQL).
        sessions.c.host_id == bindparam("w_host_id"),
        sessions.c.connection == bindparam("w_connection"),
        sessions.c.login == bindparam("w_login"),
        sessions.c.closed_at.is_(None),
    )
    .values(closed_at=bindparam("now"))
)
# A host's own refusal follows its account call within the same hook run: an abort
# reaches only sessions opened this recently, so it never erases past usage.
ABORT_WINDOW = 120
_ABORT_SESSION = Prepared(
    sessions.delete().where(
        sessions.c.host_id == bindparam("host_id"),
        sessions.c.connection == bindparam("connection"),
        sessions.c.login == bindparam("login"),
        sessions.c.closed_at.is_(None),
        sessions.c.opened_at >= bindparam("since"),
    )
)
_OPEN_SESSION = Prepared(
    sessions.insert().values(
        {
            c: bindparam(c)
            for c in (
                "host_id",
                "login",
                "user_id",
                "request_id",
                "connection",
                "rhost",
                "fingerprint",
                "opened_at",
            )
        }
    )
)


def session(
    conn: Connection,
    *,
    host: HostPrincipal,
    event: str,
    login: str,
    rhost: str | None,
    connection: str,
    key_type: str | None,
    key: str | None,
    fingerprint: str | None,
    now: int,
    asked_host: str | None = None,
) -> dict:
    """The answer (echo + decision) of the session hook; audited as hook.session."""
    asked = echo(host, login, fingerprint, connection)
    if event == "abort":
        # The host refused this login after the account call recorded its session
        # (its own checks: max_grant, answer checks): it never existed, so the usage
        # report must not count it. The audit keeps the allow and this abort.
        aborted = _ABORT_SESSION.execute(
            conn, host_id=host.id, connection=connection, login=login, since=now - ABORT_WINDOW
        )
        answer = {
            "decision": "allow",
            "reason": "session aborted",
            "request_id": None,
            "expires_at": None,
        }
        _record(
            conn, host, "hook.session", None, now,
            event="abort", login=login, rhost=rhost, connection=connection, aborted=aborted,
            **answer,
        )  # fmt: skip
        return asked | answer
    if event == "close":
        closed = _CLOSE_SESSION.execute(
            conn, w_host_id=host.id, w_connection=connection, w_login=login, now=now
        )
        answer = {
            "decision": "allow",
            "reason": "session closed",
            "request_id": None,
            "expires_at": None,
        }
        _record(
            conn,
            host,
            "hook.session",
            None,
            now,
            event="close",
            login=login,
            rhost=rhost,
            connection=connection,
            closed=closed,
            **answer,
        )
        return asked | answer
    bad_key = False
    if key_type and key:
        try:
            offered = sshkeys.parse_blob(key_type, key)
        except KeyParseError:
            offered, bad_key = None, True
        if offered is not None:
            if fingerprint and fingerprint != offered.fingerprint:
                bad_key = True
            fingerprint = offered.fingerprint
    wrong_host = _host_mismatch(host, asked_host)
    if wrong_host is not None:
        row, reason = None, short_reason(wrong_host)
    elif bad_key:
        row, reason = None, "session key is invalid or does not match its fingerprint"
    else:
        row, reason = _decide(conn, host=host, login=login, fingerprint=fingerprint, now=now)
        outside = _pinned_out(row, rhost)
        if outside is not None:
            row, reason = None, outside
    answer = _answer(row, reason)
    actor, context = _actor(conn, row, host=host, login=login, fingerprint=fingerprint, now=now)
    if row is not None:
        _OPEN_SESSION.execute(
            conn,
            host_id=host.id,
            login=login,
            user_id=row.user_id,
            request_id=row.id,
            connection=connection,
            rhost=rhost,
            # The key this session logged in with (None: a key-less login), for the usage report.
            fingerprint=fingerprint,
            opened_at=now,
        )
    _record(
        conn,
        host,
        "hook.session",
        actor,
        now,
        event="open",
        login=login,
        rhost=rhost,
        connection=connection,
        fingerprint=fingerprint,
        **answer,
        **context,
    )
    return asked | answer


# Open sessions one answer lists at most (the host reads at most 64 KiB); the
# sessions to end come first, so they are never the ones cut off.
MAX_SESSIONS = 400


def _end_reason(row: Any, now: int) -> str | None:
    """Why a session's approval no longer covers it now, or None while it does."""
    if row.request_id is None or row.state is None:
        return "not_active"
    if row.disabled:
        return "user_disabled"
    if row.state in ("revoked", "dropped"):
        # Given back by the requester (jit drop): ended like a revoke (hosts know these reasons).
        return "revoked"
    if row.state != "approved":
        return "not_active"
    if row.ends_at is None or row.ends_at <= now:
        return "expired"
    if row.starts_at is None or row.starts_at > now:
        return "not_active"
    return None


def open_sessions(conn: Connection, *, host: HostPrincipal, now: int) -> dict:
    """This host's open sessions: those to end now (audited as hook.enforce), and the rest.

    One query on ix_sessions_host_connection (host_id) joined to the session's
    request and user by primary key.
    """
    active = and_(
        requests.c.state == "approved",
        requests.c.starts_at <= now,
        requests.c.ends_at > now,
        users.c.disabled.is_(False),
    )
    q = (
        select(
            sessions.c.connection,
            sessions.c.login,
            sessions.c.request_id,
            sessions.c.fingerprint,
            requests.c.state,
            requests.c.starts_at,
            requests.c.ends_at,
            users.c.name.label("user"),
            users.c.disabled,
        )
        .select_from(
            sessions.outerjoin(requests, requests.c.id == sessions.c.request_id).outerjoin(
                users, users.c.id == sessions.c.user_id
            )
        )
        .where(sessions.c.host_id == host.id, sessions.c.closed_at.is_(None))
        .order_by(case((active, 1), else_=0), sessions.c.id)
        .limit(MAX_SESSIONS)
    )
    end: list[dict] = []
    still: list[dict] = []
    for row in conn.execute(q):
        reason = _end_reason(row, now)
        if reason is None:
            still.append(
                {
                    "connection": row.connection,
                    "login": row.login,
                    "request_id": row.request_id,
                    "expires_at": row.ends_at,
                }
            )
            continue
        item = {
            "connection": row.connection,
            "login": row.login,
            "request_id": row.request_id,
            "reason": reason,
        }
        _record(conn, host, "hook.enforce", row.user, now, decision="end", **item)
        # The host binds its next-login notice to the key (a shared login's other users
        # must not read it); the host sent this fingerprint itself.
        end.append(item | {"fingerprint": row.fingerprint})
    return {"host": host.name, "end": end, "active": still, "time": now}


def break_glass(
    conn: Connection,
    *,
    host: HostPrincipal,
    login: str,
    rhost: str | None,
    connection: str | None,
    stage: str,
    now: int,
    report_id: str | None = None,
    login_at: int | None = None,
) -> dict:
    """Record a break-glass use once per ``report_id`` (a host's spool may deliver it again).

    The duplicate check is the unique (host, report id) key of
    ``break_glass_reports``: concurrent copies cannot both pass. ``login_at`` is when the login
    happened on the host; the event's ``at`` stays the time it was recorded, so
    the chain's times only move forward.
    """
    answer = {
        "recorded": True,
        "host": host.name,
        "login": login,
        "connection": connection,
        "report_id": report_id,
        "stage": stage,
    }
    if report_id is not None and not _break_glass_first(
        conn, host=host, report_id=report_id, now=now
    ):
        return answer
    extra: dict[str, Any] = {}
    if report_id is not None:
        extra["report"] = report_id
    if login_at is not None:
        extra["login_at"] = login_at
    _record(
        conn,
        host,
        "hook.break_glass",
        None,
        now,
        login=login,
        rhost=rhost,
        connection=connection,
        stage=stage,
        **extra,
    )
    # The admins hear of it through the outbox (server/notify/), in this transaction;
    # once per login (sshd runs the hooks several times per connection).
    notify.break_glass(
        conn, host=host.name, login=login, rhost=rhost,
        key=report_id or connection or str(now), now=now,
    )  # fmt: skip
    return answer


# One statement both SQLite (>= 3.35) and PostgreSQL run as written: a second
# copy of a report (or a concurrent one) finds the key taken and gets no row.
_FIRST_REPORT = Prepared(
    text(
        "INSERT INTO break_glass_reports (host_id, report_id, at) VALUES (:host_id, :report, :now) "
        "ON CONFLICT (host_id, report_id) DO NOTHING RETURNING host_id"
    ).columns(host_id=Integer)
)


def _break_glass_first(conn: Connection, *, host: HostPrincipal, report_id: str, now: int) -> bool:
    """True if this host has not reported ``report_id`` before (the key outlives archiving)."""
    return _FIRST_REPORT.first(conn, host_id=host.id, report=report_id, now=now) is not None
