"""Queries for users, tokens, hosts, keys and policies (keyword-only arguments).

Every change appends its audit event in the same transaction.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from jit_hooks import sshkeys
from jit_hooks.errors import KeyParseError
from jit_hooks.server import audit, auth
from jit_hooks.server.errors import Conflict, InvalidInput, NotFound
from jit_hooks.server.policy import (
    HOST_RE,
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    NAME_RE,
    ROLES,
    Policy,
    parse_policy,
)
from jit_hooks.server.tables import hosts, keys, policies, tokens, users

MAX_KEYS_PER_USER = 50


# -- users -------------------------------------------------------------------


def user_dict(row: Any) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "roles": sorted(row.roles.split()),
        "disabled": bool(row.disabled),
    }


def add_user(conn: Connection, *, name: str, roles: list[str], actor: str, now: int) -> dict:
    if not NAME_RE.match(name):
        raise InvalidInput("user name: letters, digits, '.', '_' or '-', at most 64", field="name")
    bad = set(roles) - ROLES
    if bad:
        raise InvalidInput(
            f"unknown role {sorted(bad)[0]!r} (known: {sorted(ROLES)})", field="role"
        )
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise Conflict(f"user {name!r} already exists")
    role_text = " ".join(sorted(set(roles)))
    uid = conn.execute(
        users.insert().values(name=name, roles=role_text, disabled=False, created_at=now)
    ).inserted_primary_key[0]  # type: ignore[index]
    audit.append(
        conn,
        at=now,
        kind="user.added",
        actor=actor,
        data={"user": name, "roles": sorted(set(roles))},
    )
    return get_user(conn, name=name) | {"id": uid}


def get_user(conn: Connection, *, name: str) -> dict:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise NotFound(f"unknown user {name!r}")
    return user_dict(row)


def list_users(conn: Connection) -> list[dict]:
    return [user_dict(r) for r in conn.execute(select(users).order_by(users.c.name))]


def disable_user(conn: Connection, *, name: str, actor: str, now: int) -> dict:
    user = get_user(conn, name=name)
    conn.execute(users.update().where(users.c.id == user["id"]).values(disabled=True))
    audit.append(conn, at=now, kind="user.disabled", actor=actor, data={"user": name})
    return user | {"disabled": True}


def create_user_token(
    conn: Connection,
    *,
    name: str,
    actor: str,
    now: int,
    via: str = "cli",
    label: str = "",
    expires_at: int | None = None,
) -> str:
    """A new user token (returned once; only its hash is stored).

    ``expires_at`` None: never expires (only `jit-server token create --expires never`
    and older callers; interactive sign-ins pass now + settings.user_token_ttl).
    """
    user = get_user(conn, name=name)
    if user["disabled"]:
        raise Conflict(f"user {name!r} is disabled: `jit-server user enable {name}` first")
    label = label or ("login" if via == "password" else via)
    if not NAME_RE.match(label):
        raise InvalidInput("token name: letters, digits, '.', '_' or '-', at most 64", field="name")
    token = auth.new_token("user")
    tid = conn.execute(
        tokens.insert().values(
            token_hash=auth.token_hash(token),
            kind="user",
            user_id=user["id"],
            created_at=now,
            name=label,
            expires_at=expires_at,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    audit.append(
        conn,
        at=now,
        kind="token.created",
        actor=actor,
        data={
            "user": name,
            "via": via,
            "token_id": tid,
            "name": label,
            "expires_at": expires_at,
        },
    )
    return token


def token_dict(row: Any, current_id: int | None = None) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "user": row.uname,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "expires_at": row.expires_at,
        "current": row.id == current_id,
    }


def _live_user_tokens():  # noqa: ANN202
    return (
        select(tokens, users.c.name.label("uname"))
        .join(users, users.c.id == tokens.c.user_id)
        .where(tokens.c.kind == "user", tokens.c.revoked_at.is_(None))
    )


def list_user_tokens(
    conn: Connection, *, user_id: int | None = None, current_id: int | None = None
) -> list[dict]:
    """Unrevoked user tokens (never their hashes), of one user or everyone."""
    q = _live_user_tokens().order_by(tokens.c.id)
    if user_id is not None:
        q = q.where(tokens.c.user_id == user_id)
    return [token_dict(r, current_id) for r in conn.execute(q)]


def revoke_user_token(
    conn: Connection, *, token_id: int, owner_id: int | None, actor: str, now: int, via: str
) -> dict:
    """Revoke a live user token; ``owner_id`` None means any user's (admin).

    Unknown, already revoked, host and other users' tokens are all NotFound,
    so ids don't leak.
    """
    q = _live_user_tokens().where(tokens.c.id == token_id)
    if owner_id is not None:
        q = q.where(tokens.c.user_id == owner_id)
    row = conn.execute(q).first()
    if row is None:
        raise NotFound(f"unknown token id {token_id}")
    done = conn.execute(
        tokens.update()
        .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if done != 1:  # revoked concurrently
        raise NotFound(f"unknown token id {token_id}")
    audit.append(
        conn,
        at=now,
        kind="token.revoked",
        actor=actor,
        data={"user": row.uname, "token_id": token_id, "name": row.name, "via": via},
    )
    return token_dict(row)


# -- hosts -------------------------------------------------------------------


def parse_labels(items: list[str]) -> dict[str, str]:
    """``["env=prod", "team=db"]`` -> dict, validated."""
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not LABEL_KEY_RE.match(k) or not LABEL_VALUE_RE.match(v):
            raise InvalidInput(f"label {item[:80]!r}: expected KEY=VALUE", field="label")
        out[k] = v
    return out


def host_dict(row: Any) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "labels": json.loads(row.labels),
        "created_at": row.created_at,
    }


def _new_host_token(conn: Connection, *, host_id: int, now: int) -> str:
    conn.execute(
        tokens.update()
        .where(tokens.c.host_id == host_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    token = auth.new_token("host")
    conn.execute(
        tokens.insert().values(
            token_hash=auth.token_hash(token), kind="host", host_id=host_id, created_at=now
        )
    )
    return token


def add_host(conn: Connection, *, name: str, labels: dict[str, str], actor: str, now: int) -> str:
    """Register a host (or re-add a removed one); return its new token."""
    if not HOST_RE.match(name):
        raise InvalidInput("host name: letters, digits, '.', '-'", field="name")
    text = audit.canonical(labels)
    row = conn.execute(select(hosts).where(hosts.c.name == name)).first()
    if row is not None and not row.removed:
        raise Conflict(f"host {name!r} already exists")
    if row is None:
        hid = conn.execute(
            hosts.insert().values(name=name, labels=text, removed=False, created_at=now)
        ).inserted_primary_key[0]  # type: ignore[index]
    else:
        hid = row.id
        conn.execute(hosts.update().where(hosts.c.id == hid).values(labels=text, removed=False))
    token = _new_host_token(conn, host_id=hid, now=now)
    audit.append(conn, at=now, kind="host.added", actor=actor, host=name, data={"labels": labels})
    return token


def get_host(conn: Connection, *, name: str) -> Any:
    row = conn.execute(
        select(hosts).where(hosts.c.name == name, hosts.c.removed.is_(False))
    ).first()
    if row is None:
        raise NotFound(f"unknown host {name!r}")
    return row


def list_hosts(conn: Connection) -> list[dict]:
    q = select(hosts).where(hosts.c.removed.is_(False)).order_by(hosts.c.name)
    return [host_dict(r) for r in conn.execute(q)]


def host_labels(conn: Connection) -> list[tuple[int, str, dict[str, str]]]:
    q = select(hosts.c.id, hosts.c.name, hosts.c.labels).where(hosts.c.removed.is_(False))
    return [(r.id, r.name, json.loads(r.labels)) for r in conn.execute(q)]


def remove_host(conn: Connection, *, name: str, actor: str, now: int) -> None:
    row = get_host(conn, name=name)
    conn.execute(hosts.update().where(hosts.c.id == row.id).values(removed=True))
    conn.execute(
        tokens.update()
        .where(tokens.c.host_id == row.id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    audit.append(conn, at=now, kind="host.removed", actor=actor, host=name)


# -- keys --------------------------------------------------------------------


def key_dict(row: Any) -> dict:
    return {
        "id": row.id,
        "key_type": row.key_type,
        "fingerprint": row.fingerprint,
        "comment": row.comment,
        "created_at": row.created_at,
    }


def add_key(conn: Connection, *, user_id: int, user: str, line: str, now: int) -> dict:
    try:
        key = sshkeys.parse_public_key(line)
    except KeyParseError as e:
        raise InvalidInput(f"public_key: {e}", field="public_key") from e
    if conn.execute(select(keys.c.id).where(keys.c.fingerprint == key.fingerprint)).first():
        raise Conflict(f"key {key.fingerprint} is already registered")
    count = conn.execute(
        select(func.count()).select_from(keys).where(keys.c.user_id == user_id)
    ).scalar_one()
    if count >= MAX_KEYS_PER_USER:
        raise Conflict(f"at most {MAX_KEYS_PER_USER} keys per user")
    try:
        kid = conn.execute(
            keys.insert().values(
                user_id=user_id,
                key_type=key.key_type,
                blob=key.blob,
                fingerprint=key.fingerprint,
                comment=key.comment,
                created_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    except IntegrityError as e:  # a racing insert of the same key
        raise Conflict(f"key {key.fingerprint} is already registered") from e
    audit.append(
        conn,
        at=now,
        kind="key.added",
        actor=user,
        data={"fingerprint": key.fingerprint, "key_type": key.key_type, "key_id": kid},
    )
    return key_dict(conn.execute(select(keys).where(keys.c.id == kid)).one())


def list_keys(conn: Connection, *, user_id: int) -> list[dict]:
    q = select(keys).where(keys.c.user_id == user_id).order_by(keys.c.id)
    return [key_dict(r) for r in conn.execute(q)]


def remove_key(conn: Connection, *, user_id: int, user: str, key_id: int, now: int) -> None:
    row = conn.execute(select(keys).where(keys.c.id == key_id, keys.c.user_id == user_id)).first()
    if row is None:
        raise NotFound(f"unknown key id {key_id}")
    conn.execute(keys.delete().where(keys.c.id == key_id))
    audit.append(
        conn,
        at=now,
        kind="key.removed",
        actor=user,
        data={"fingerprint": row.fingerprint, "key_id": key_id},
    )


# -- policies ----------------------------------------------------------------


def load_policies(conn: Connection) -> list[Policy]:
    return [parse_policy(json.loads(r.spec)) for r in conn.execute(select(policies.c.spec))]


def put_policy(conn: Connection, *, policy: Policy, actor: str, now: int) -> str:
    """Add or replace a policy by name; return "added" or "updated"."""
    spec = audit.canonical(policy.to_dict())
    row = conn.execute(select(policies.c.id).where(policies.c.name == policy.name)).first()
    if row is None:
        conn.execute(
            policies.insert().values(name=policy.name, spec=spec, created_at=now, updated_at=now)
        )
        what = "added"
    else:
        conn.execute(
            policies.update().where(policies.c.id == row.id).values(spec=spec, updated_at=now)
        )
        what = "updated"
    audit.append(conn, at=now, kind=f"policy.{what}", actor=actor, data=policy.to_dict())
    return what


def list_policies(conn: Connection) -> list[dict]:
    q = select(policies.c.spec).order_by(policies.c.name)
    return [json.loads(r.spec) for r in conn.execute(q)]


def remove_policy(conn: Connection, *, name: str, actor: str, now: int) -> None:
    if conn.execute(policies.delete().where(policies.c.name == name)).rowcount != 1:
        raise NotFound(f"unknown policy {name!r}")
    audit.append(conn, at=now, kind="policy.removed", actor=actor, data={"name": name})
