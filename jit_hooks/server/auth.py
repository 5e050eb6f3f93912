"""Bearer tokens: user (jitu_) and host (jith_), random, stored as sha256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Connection, String, any_, bindparam, cast, select

from jit_hooks.server import sql
from jit_hooks.server.errors import Forbidden, Unauthorized
from jit_hooks.server.sql import Answer, Prepared, Queued
from jit_hooks.server.tables import hosts, tokens, users

USER_PREFIX = "jitu_"
HOST_PREFIX = "jith_"
MAX_TOKEN_LEN = 200
# last_used_at is kept to this many seconds: a busy client writes it at most
# once a minute, not on every call.
LAST_USED_RESOLUTION = 60


def new_token(kind: str) -> str:
    return (USER_PREFIX if kind == "user" else HOST_PREFIX) + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenExpired(Unauthorized):
    """Raised for a token past its expires_at (401 token_expired: jit asks for a new sign-in)."""

    code = "token_expired"


@dataclass(frozen=True)
class UserPrincipal:
    id: int
    name: str
    roles: frozenset[str]
    token_id: int = 0
    token_last_used: int | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True)
class HostPrincipal:
    id: int
    name: str


# One indexed lookup (tokens.token_hash is unique) joined to the owner.
_LOOKUP = select(
    tokens.c.id.label("tid"),
    tokens.c.last_used_at,
    tokens.c.token_hash,
    tokens.c.kind,
    tokens.c.revoked_at,
    tokens.c.expires_at,
    users.c.id.label("uid"),
    users.c.name.label("uname"),
    users.c.roles,
    users.c.disabled,
    hosts.c.id.label("hid"),
    hosts.c.name.label("hname"),
    hosts.c.removed,
).select_from(
    tokens.outerjoin(users, users.c.id == tokens.c.user_id).outerjoin(
        hosts, hosts.c.id == tokens.c.host_id
    )
)
_BY_HASH = Prepared(_LOOKUP.where(tokens.c.token_hash == bindparam("digest")))
# A whole batch's tokens in one statement (PostgreSQL: sql.Sets), each hash once.
_BY_HASHES = Prepared(
    _LOOKUP.where(tokens.c.token_hash == any_(cast(bindparam("digests"), ARRAY(String)))),
    binary=True,
)


def _read_tokens(conn: Connection, digests: list[str]) -> Callable[[], list[Any]]:
    """sql.Reader: every asked token's row (or None), by hash."""
    found = _BY_HASHES.queue(conn, digests=list(dict.fromkeys(digests)))
    assert found is not None  # Sets exist only in a pipelined batch

    def fetch() -> list[Any]:
        rows = {r.token_hash: r for r in found.rows()}
        return [rows.get(d) for d in digests]

    return fetch


def queue_lookup(
    conn: Connection, token: str, *, digest: str | None = None
) -> Queued | Answer | None:
    """Send the token's lookup now, read by :func:`authenticate` later (sql.Prepared.queue).

    In a batch with set-oriented reads (sql.Sets) it joins the batch's one
    token statement instead. None outside a pipelined PostgreSQL batch (unit.py).
    """
    digest = token_hash(token) if digest is None else digest
    sets = sql.writes.sets
    if sets is not None and sets.asking:
        return sets.ask(_read_tokens, digest)
    return _BY_HASH.queue(conn, digest=digest)


def authenticate(
    conn: Connection,
    token: str,
    now: int | None = None,
    *,
    queued: Queued | Answer | None = None,
    digest: str | None = None,
) -> UserPrincipal | HostPrincipal:
    """Resolve a token to its (enabled) user or (present) host; Unauthorized otherwise.

    A token at or past its expires_at is TokenExpired (401 token_expired).
    ``queued``: this token's lookup, sent earlier by :func:`queue_lookup`;
    ``digest``: the token's :func:`token_hash`, if the caller has it.
    """
    digest = token_hash(token) if digest is None else digest
    row = queued.first() if queued is not None else _BY_HASH.first(conn, digest=digest)
    # The lookup is by hash; compare again in constant time all the same.
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
        raise Unauthorized("unknown or revoked token")
    if row.expires_at is not None and (int(time.time()) if now is None else now) >= row.expires_at:
        raise TokenExpired("token expired")
    if row.kind == "user" and row.uid is not None and not row.disabled:
        return UserPrincipal(
            row.uid, row.uname, frozenset(row.roles.split()), row.tid, row.last_used_at
        )
    if row.kind == "host" and row.hid is not None and not row.removed:
        return HostPrincipal(row.hid, row.hname)
    raise Unauthorized("token belongs to a disabled user or removed host")


def touch(conn: Connection, user: UserPrincipal, now: int) -> None:
    """Record that the user's token was used (skipped if it was, this minute)."""
    last = user.token_last_used
    if last is None or not 0 <= now - last < LAST_USED_RESOLUTION:
        conn.execute(tokens.update().where(tokens.c.id == user.token_id).values(last_used_at=now))


def require_user(p: UserPrincipal | HostPrincipal) -> UserPrincipal:
    if not isinstance(p, UserPrincipal):
        raise Forbidden("a host token may call only /api/v1/hook/*")
    return p


def require_host(p: UserPrincipal | HostPrincipal) -> HostPrincipal:
    if not isinstance(p, HostPrincipal):
        raise Forbidden("hook endpoints need a host token")
    return p
