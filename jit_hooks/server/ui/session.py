"""Web page sessions: a random cookie, stored hashed in the tokens table, with CSRF tokens.

A session is a ``tokens`` row of kind ``session``: the API's bearer lookup
refuses that kind, and the API's token lists show only ``user`` tokens, so a
session cookie is good for the web page alone. It ends after
``ui_session_idle`` seconds without a page view, ``ui_session_lifetime``
seconds after sign-in, at its ``expires_at`` (the API token's it was started
with, else the interactive sign-in TTL), at sign-out, when its user is
disabled, or when the API token it was started with is revoked or expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Connection, select

from jit_hooks.server import audit
from jit_hooks.server.auth import UserPrincipal, token_hash
from jit_hooks.server.tables import tokens, users

KIND = "session"
PREFIX = "jits_"
# __Host-: the browser keeps it only if Secure, Path=/ and without Domain, so
# a sibling subdomain cannot plant or shadow it.
COOKIE = "__Host-jit_session"
LOGIN_COOKIE = "__Host-jit_login"
MAX_COOKIE_LEN = 200


class NoSession(Exception):
    """Raised when the cookie is missing, unknown, ended, idle or past its lifetime."""


def csrf_token(session: str) -> str:
    """The session's synchronizer token: derived from the secret cookie, never stored.

    A page of another origin can neither read the HttpOnly cookie nor our pages,
    so it cannot know this value.
    """
    return hmac.new(session.encode(), b"jit-ui-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session: str, sent: str) -> bool:
    # compare_digest takes str only if ASCII; anything else is wrong anyway.
    return sent.isascii() and hmac.compare_digest(csrf_token(session), sent)


def start(
    conn: Connection,
    *,
    user: UserPrincipal,
    via: str,
    now: int,
    ttl: int | None = None,
    source_token_id: int | None = None,
) -> str:
    """A new session for ``user`` (audited ui.signed_in); returns the cookie value.

    Started with an API token (``source_token_id``), it ends when that token ends
    and never later; otherwise ``ttl`` seconds from now at the latest (the
    interactive sign-in TTL, the same as a password sign-in's API token).
    """
    expires_at = None if ttl is None else now + ttl
    if source_token_id is not None:
        token_end = conn.execute(
            select(tokens.c.expires_at).where(tokens.c.id == source_token_id)
        ).scalar_one()
        if token_end is not None:
            expires_at = token_end if expires_at is None else min(expires_at, token_end)
    session = PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        tokens.insert().values(
            token_hash=token_hash(session),
            kind=KIND,
            user_id=user.id,
            created_at=now,
            name="ui",
            last_used_at=now,
            expires_at=expires_at,
            source_token_id=source_token_id,
        )
    )
    audit.append(conn, at=now, kind="ui.signed_in", actor=user.name, data={"via": via})
    return session


def resolve(
    conn: Connection, session: str | None, *, now: int, idle: int, lifetime: int
) -> UserPrincipal:
    """The session's (enabled) user, its last use moved to now; NoSession otherwise."""
    if not session or len(session) > MAX_COOKIE_LEN:
        raise NoSession
    digest = token_hash(session)
    source = tokens.alias("source")
    row = conn.execute(
        select(
            tokens.c.id,
            tokens.c.token_hash,
            tokens.c.created_at,
            tokens.c.last_used_at,
            tokens.c.revoked_at,
            tokens.c.expires_at,
            tokens.c.source_token_id,
            source.c.id.label("source_id"),
            source.c.revoked_at.label("source_revoked_at"),
            source.c.expires_at.label("source_expires_at"),
            users.c.id.label("uid"),
            users.c.name,
            users.c.roles,
            users.c.disabled,
        )
        .select_from(
            tokens.join(users, users.c.id == tokens.c.user_id).outerjoin(
                source, source.c.id == tokens.c.source_token_id
            )
        )
        .where(tokens.c.token_hash == digest, tokens.c.kind == KIND)
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
        raise NoSession
    last = row.last_used_at if row.last_used_at is not None else row.created_at
    if row.disabled or now - row.created_at >= lifetime or now - last >= idle:
        raise NoSession
    if row.expires_at is not None and now >= row.expires_at:
        raise NoSession
    if row.source_token_id is not None and (
        row.source_id is None  # the token row is gone: treat as revoked
        or row.source_revoked_at is not None
        or (row.source_expires_at is not None and now >= row.source_expires_at)
    ):
        raise NoSession
    conn.execute(tokens.update().where(tokens.c.id == row.id).values(last_used_at=now))
    return UserPrincipal(row.uid, row.name, frozenset(row.roles.split()), row.id, now)


def end(conn: Connection, session: str | None, *, now: int) -> None:
    """Sign out: the session's row is revoked (audited ui.signed_out)."""
    if not session or len(session) > MAX_COOKIE_LEN:
        return
    row = conn.execute(
        select(tokens.c.id, users.c.name)
        .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
        .where(
            tokens.c.token_hash == token_hash(session),
            tokens.c.kind == KIND,
            tokens.c.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        return
    conn.execute(tokens.update().where(tokens.c.id == row.id).values(revoked_at=now))
    audit.append(conn, at=now, kind="ui.signed_out", actor=row.name, data={"session_id": row.id})
