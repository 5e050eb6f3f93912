"""Sign-in through the IdP, database side: flows under way, claims -> jit user, token, audit.

Every finished sign-in, accepted or refused, appends ``login.sso`` or
``login.failed`` (via "sso-device" / "sso-web", with the reason) in the
transaction that decides it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select

from jit_hooks.server import admin_ops, audit, auth, store
from jit_hooks.server.errors import Conflict, InvalidInput, NotFound
from jit_hooks.server.oidc import SsoError
from jit_hooks.server.oidc_config import OidcConfig
from jit_hooks.server.tables import sso_flows, sso_identities, tokens, users

# A browser has this long from "Sign in with SSO" to coming back.
WEB_FLOW_SECONDS = 600


@dataclass(frozen=True)
class Flow:
    kind: str
    secret: str
    nonce: str | None
    expires_at: int
    poll_interval: int | None = None
    next_poll_at: int | None = None


def begin(
    conn: Connection,
    *,
    kind: str,
    secret: str,
    nonce: str | None,
    now: int,
    ttl: int,
    client: str | None = None,
    poll_interval: int | None = None,
) -> str:
    """Store a flow; returns the random value the client keeps (only its hash is stored)."""
    conn.execute(delete(sso_flows).where(sso_flows.c.expires_at <= now))
    handle = secrets.token_urlsafe(32)
    conn.execute(
        sso_flows.insert().values(
            kind=kind,
            key_hash=auth.token_hash(handle),
            secret=secret,
            nonce=nonce,
            created_at=now,
            expires_at=now + ttl,
            client=None if client is None else client[:64],
            poll_interval=poll_interval,
        )
    )
    return handle


def check_device_capacity(conn: Connection, *, config: OidcConfig, client: str, now: int) -> None:
    """SsoError too_many_sign_ins when this client, or everyone, has too many device
    sign-ins under way: the route is unauthenticated and each one costs an IdP call."""
    live = (sso_flows.c.kind == "device") & (sso_flows.c.expires_at > now)
    total = conn.execute(select(func.count()).where(live)).scalar_one()
    if total >= config.max_device_flows:
        raise SsoError("too_many_sign_ins", "too many SSO sign-ins under way; try again later")
    mine = conn.execute(
        select(func.count()).where(live, sso_flows.c.client == client[:64])
    ).scalar_one()
    if mine >= config.max_device_flows_per_client:
        raise SsoError(
            "too_many_sign_ins",
            "too many SSO sign-ins under way from your address; finish or wait for those",
        )


def pace(conn: Connection, *, handle: str, flow: Flow, now: int, slow_down: bool) -> bool:
    """Record a poll of a device flow; False if it came before its time (answer slow_down).

    RFC 8628: each slow_down adds 5 s to the interval, the IdP's or ours.
    """
    interval = flow.poll_interval or 5
    early = flow.next_poll_at is not None and now < flow.next_poll_at
    if early or slow_down:
        interval += 5
    values = {"poll_interval": interval}
    if not early:
        values["next_poll_at"] = now + interval
    conn.execute(
        sso_flows.update().where(sso_flows.c.key_hash == auth.token_hash(handle)).values(**values)
    )
    return not early


def find(conn: Connection, *, kind: str, handle: str, now: int) -> Flow | None:
    """The live flow for this handle, or None (unknown, other kind, or expired)."""
    if not handle or len(handle) > 100:
        return None
    row = conn.execute(
        select(sso_flows).where(
            sso_flows.c.key_hash == auth.token_hash(handle), sso_flows.c.kind == kind
        )
    ).first()
    if row is None or row.expires_at <= now:
        return None
    return Flow(
        row.kind, row.secret, row.nonce, row.expires_at, row.poll_interval, row.next_poll_at
    )


def finish(conn: Connection, *, handle: str) -> None:
    """The flow is used up: a handle signs in at most once."""
    conn.execute(delete(sso_flows).where(sso_flows.c.key_hash == auth.token_hash(handle)))


def map_claims(config: OidcConfig, claims: dict) -> tuple[str, frozenset[str], list[str]]:
    """(jit user name, roles from groups, groups) from validated ID token claims, or SsoError."""
    raw = claims.get(config.username_claim)
    if config.username_claim == "email":
        # Only a verified address in one of our domains names a jit user: the local
        # part alone would make alice@anywhere.example jit user alice.
        if claims.get("email_verified") is not True:
            raise SsoError("unverified_email", "the identity provider has not verified the email")
        local, at, domain = raw.rpartition("@") if isinstance(raw, str) else ("", "", "")
        if not at:
            raw = None
        elif domain.lower() not in config.email_domains:
            raise SsoError("email_domain", "the email's domain is not one jit accepts")
        else:
            raw = local
    if not isinstance(raw, str) or not re.fullmatch(config.username_regex, raw):
        raise SsoError("bad_username", f"no usable user name in claim {config.username_claim!r}")
    groups = claims.get(config.groups_claim, [])
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        groups = []
    groups = [g for g in groups if isinstance(g, str)][:200]
    roles: set[str] = set()
    for g in groups:
        roles |= config.group_roles.get(g, frozenset())
    return raw, frozenset(roles), groups


def _check_binding(conn: Connection, *, issuer: str, sub: str, user: Any, name: str) -> bool:
    """True if ``user`` is already bound to this (issuer, sub); SsoError if either is bound
    elsewhere (another subject took this name at the IdP, or this subject was someone else)."""
    if len(sub) > 255:
        raise SsoError("bad_id_token", "ID token refused: subject too long")
    uid = user.id if user is not None else None
    rows = conn.execute(
        select(sso_identities.c.user_id, sso_identities.c.sub).where(
            sso_identities.c.issuer == issuer,
            or_(sso_identities.c.sub == sub, sso_identities.c.user_id == uid),
        )
    ).all()
    for r in rows:
        if r.user_id != uid or r.sub != sub:
            raise SsoError(
                "identity_mismatch",
                f"jit user {name} belongs to another account at the identity provider",
            )
    return bool(rows)


def _deprovision(conn: Connection, *, issuer: str, sub: str, name: str, now: int) -> None:
    """The user bound to this subject left every mapped group: their roles and SSO
    tokens go (the last enabled admin keeps admin). Nothing for an unbound name: an
    IdP account that only shares it must not strip anyone."""
    if len(sub) > 255:
        return
    row = conn.execute(
        select(users)
        .select_from(users.join(sso_identities, sso_identities.c.user_id == users.c.id))
        .where(
            sso_identities.c.issuer == issuer,
            sso_identities.c.sub == sub,
            users.c.name == name,
        )
    ).first()
    if row is None:
        return
    was = frozenset(row.roles.split())
    keep: frozenset[str] = frozenset()
    if "admin" in was:
        try:
            admin_ops._keep_an_admin(conn, row, f"taking admin from {name!r}")
        except Conflict:
            keep = frozenset({"admin"})
    revoked = conn.execute(
        tokens.update()
        .where(
            tokens.c.user_id == row.id,
            tokens.c.kind == "user",
            tokens.c.name == "sso",
            tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    ).rowcount
    if was != keep or revoked:
        _set_roles(
            conn, row=row, name=name, roles=keep, was=was, now=now,
            reason="no_role", sso_tokens_revoked=revoked,
        )  # fmt: skip


def _set_roles(
    conn: Connection,
    *,
    row: Any,
    name: str,
    roles: frozenset[str],
    was: frozenset[str],
    now: int,
    **why: Any,
) -> None:
    """Give ``row`` the roles its IdP groups map to (if they changed) and audit it,
    with ``why`` (the groups, or the reason and the tokens revoked) in the event."""
    if roles != was:
        conn.execute(
            users.update().where(users.c.id == row.id).values(roles=" ".join(sorted(roles)))
        )
    audit.append(
        conn,
        at=now,
        kind="user.roles_set",
        actor="sso",
        data={"user": name, "roles": sorted(roles), "was": sorted(was), "via": "sso", **why},
    )


def sign_in(
    conn: Connection,
    *,
    config: OidcConfig,
    claims: dict | None,
    error: SsoError | None,
    via: str,
    now: int,
) -> auth.UserPrincipal:
    """The jit user these claims stand for, with roles from the groups; SsoError otherwise.

    The groups are the truth: a known user's roles become what their groups map
    to (audited ``user.roles_set``, via sso), unless that takes admin from the
    last enabled admin (refused: ``last_admin``). No mapped role: refused, and a
    user bound to this subject loses their roles and SSO tokens (not the last
    admin's admin).
    Unknown user: refused unless ``create_users`` (then created and bound to the
    IdP's ``sub``). A known user not yet bound is refused (``not_linked``) until an
    admin runs ``jit-server sso link``, or, with ``link_existing_users`` on, bound
    by this first sign-in. Another subject with a bound user's name is refused.
    Refusals are audited here, in the caller's transaction, so the caller must
    commit even when this raises: use :func:`decide`.
    """
    name = None
    try:
        if error is not None:
            raise error
        assert claims is not None
        name, roles, groups = map_claims(config, claims)
        if not roles:
            _deprovision(conn, issuer=config.issuer, sub=claims["sub"], name=name, now=now)
            raise SsoError("no_role", f"none of your groups gives a jit role (user {name})")
        row = conn.execute(select(users).where(users.c.name == name)).first()
        if row is None and not config.create_users:
            raise SsoError("unknown_user", f"{name} is not a jit user; ask an admin")
        bound = _check_binding(conn, issuer=config.issuer, sub=claims["sub"], user=row, name=name)
        if row is not None and not bound and not config.link_existing_users:
            # A local user who never signed in through SSO: the IdP account that
            # happens to carry the same name is not proof it is the same person
            # (a new hire named like the first admin would become that admin).
            raise SsoError(
                "not_linked",
                f"jit user {name} is not linked to this identity provider account yet;"
                f" a jit admin links it: jit-server sso link {name} --subject {claims['sub']}",
            )
        if row is None:
            store.add_user(conn, name=name, roles=sorted(roles), actor="sso", now=now)
            row = conn.execute(select(users).where(users.c.name == name)).one()
        if row.disabled or getattr(row, "removed_at", None) is not None:
            raise SsoError("disabled", f"jit user {name} is disabled")
        if not bound:
            conn.execute(
                sso_identities.insert().values(
                    user_id=row.id, issuer=config.issuer, sub=claims["sub"], created_at=now
                )
            )
            audit.append(
                conn,
                at=now,
                kind="user.sso_bound",
                actor="sso",
                data={"user": name, "issuer": config.issuer, "sub": claims["sub"]},
            )
        was = frozenset(row.roles.split())
        if was != roles:
            if "admin" not in roles:
                try:  # the API must keep an admin (jit-server user set-roles has the same rule)
                    admin_ops._keep_an_admin(conn, row, f"taking admin from {name!r}")
                except Conflict:
                    raise SsoError(
                        "last_admin",
                        f"{name} is the last enabled admin and their groups no longer give admin",
                    ) from None
            _set_roles(conn, row=row, name=name, roles=roles, was=was, now=now, groups=groups[:20])
    except SsoError as e:
        data = {"via": via, "reason": e.reason}
        if name:
            data["user"] = name[:64]
        if e.reason == "not_linked" and claims is not None:
            data["sub"] = str(claims.get("sub", ""))[:255]  # what `sso link` needs
        audit.append(conn, at=now, kind="login.failed", actor=None, data=data)
        raise
    audit.append(
        conn,
        at=now,
        kind="login.sso",
        actor=name,
        data={"via": via, "sub": str(claims.get("sub", ""))[:200], "roles": sorted(roles)},
    )
    return auth.UserPrincipal(row.id, name, roles)


def decide(conn: Connection, **kw) -> auth.UserPrincipal | SsoError:  # noqa: ANN003
    """sign_in(), with a refusal returned instead of raised so its audit commits."""
    try:
        return sign_in(conn, **kw)
    except SsoError as e:
        return e


def issue_token(conn: Connection, *, user: auth.UserPrincipal, ttl: int, now: int) -> str:
    """A user token for an SSO sign-in (label "sso"), ending ``ttl`` seconds from now."""
    return store.create_user_token(
        conn, name=user.name, actor=user.name, now=now, via="sso", expires_at=now + ttl
    )


def link(conn: Connection, *, name: str, issuer: str, sub: str, actor: str, now: int) -> dict:
    """Bind jit user ``name`` to the IdP account ``sub`` (admin step; audited user.sso_bound)."""
    if not sub or len(sub) > 255 or not sub.isprintable():
        raise InvalidInput("--subject: the IdP's sub claim, 1-255 printable characters")
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None or row.removed_at is not None:
        raise NotFound(f"no user {name!r}")
    taken = conn.execute(
        select(sso_identities.c.user_id, sso_identities.c.sub, users.c.name)
        .select_from(sso_identities.join(users, users.c.id == sso_identities.c.user_id))
        .where(
            sso_identities.c.issuer == issuer,
            or_(sso_identities.c.sub == sub, sso_identities.c.user_id == row.id),
        )
    ).all()
    for t in taken:
        if t.user_id == row.id and t.sub == sub:
            raise Conflict(f"{name} is already linked to subject {sub!r}")
        if t.user_id == row.id:
            raise Conflict(f"{name} is already linked to another subject ({t.sub!r})")
        raise Conflict(f"subject {sub!r} is already linked to user {t.name!r}")
    conn.execute(
        sso_identities.insert().values(user_id=row.id, issuer=issuer, sub=sub, created_at=now)
    )
    data = {"user": name, "issuer": issuer, "sub": sub, "via": "admin"}
    audit.append(conn, at=now, kind="user.sso_bound", actor=actor, data=data)
    return data
