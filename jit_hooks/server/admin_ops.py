"""Day-2 administration done by `jit-server` on the database: roles, enable/remove
users, host labels, host token rotation with a grace period, token lifetimes.

Every change appends its audit event in the same transaction (docs/server.md
lists the kinds); a refused change writes nothing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from jit_hooks.server import audit, auth, store
from jit_hooks.server.errors import Conflict, InvalidInput, NotFound
from jit_hooks.server.policy import ROLES
from jit_hooks.server.tables import hosts, keys, tokens, users

# Named tokens an admin creates for automation live this long unless told otherwise.
AUTOMATION_TOKEN_TTL = 90 * 86400
MAX_DURATION = 10 * 365 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"([0-9]{1,9})([smhd]?)")


def parse_duration(text: str, *, what: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds -> seconds (0 allowed)."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m is None:
        raise InvalidInput(
            f"{what}: expected a duration like 90d, 12h, 30m or 45s, got {text[:40]!r}"
        )
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds > MAX_DURATION:
        raise InvalidInput(f"{what}: at most 10 years")
    return seconds


def iso(ts: int | None) -> str | None:
    """Unix seconds -> ISO 8601 UTC (``2026-11-30T14:05:25Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- users -------------------------------------------------------------------


def _user_row(conn: Connection, name: str) -> Any:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise NotFound(f"unknown user {name!r}")
    if row.removed_at is not None:
        raise Conflict(f"user {name!r} was removed on {iso(row.removed_at)}")
    return row


def _other_enabled_admins(conn: Connection, user_id: int) -> int:
    q = select(users.c.roles).where(
        users.c.id != user_id, users.c.disabled.is_(False), users.c.removed_at.is_(None)
    )
    return sum("admin" in r.roles.split() for r in conn.execute(q))


def _keep_an_admin(conn: Connection, row: Any, change: str) -> None:
    """Refuse a change that would leave nobody able to administer through the API."""
    if (
        "admin" in row.roles.split()
        and not row.disabled
        and not _other_enabled_admins(conn, row.id)
    ):
        raise Conflict(f"{change} would leave no enabled admin: add another admin first")


def set_roles(conn: Connection, *, name: str, roles: list[str], actor: str, now: int) -> dict:
    bad = set(roles) - ROLES
    if bad or not roles:
        raise InvalidInput(
            f"roles: expected one or more of {sorted(ROLES)}, got {sorted(bad or roles)}",
            field="roles",
        )
    row = _user_row(conn, name)
    new = sorted(set(roles))
    if "admin" not in new:
        _keep_an_admin(conn, row, f"taking admin from {name!r}")
    conn.execute(users.update().where(users.c.id == row.id).values(roles=" ".join(new)))
    audit.append(
        conn,
        at=now,
        kind="user.roles_set",
        actor=actor,
        data={"user": name, "roles": new, "was": sorted(row.roles.split())},
    )
    return store.get_user(conn, name=name)


def disable_user(conn: Connection, *, name: str, actor: str, now: int) -> dict:
    row = _user_row(conn, name)
    if row.disabled:
        raise Conflict(f"user {name!r} is already disabled")
    _keep_an_admin(conn, row, f"disabling {name!r}")
    return store.disable_user(conn, name=name, actor=actor, now=now)


def enable_user(conn: Connection, *, name: str, actor: str, now: int) -> dict:
    row = _user_row(conn, name)
    if not row.disabled:
        raise Conflict(f"user {name!r} is not disabled")
    conn.execute(users.update().where(users.c.id == row.id).values(disabled=False))
    audit.append(conn, at=now, kind="user.enabled", actor=actor, data={"user": name})
    return store.get_user(conn, name=name)


def remove_user(conn: Connection, *, name: str, actor: str, now: int) -> dict:
    """Remove a user for good: tokens revoked, keys deleted, disabled, name kept taken.

    The row stays: requests, reviews and sessions point at it and the audit log
    names it, so history reads the same afterwards.
    """
    row = _user_row(conn, name)
    _keep_an_admin(conn, row, f"removing {name!r}")
    revoked = conn.execute(
        tokens.update()
        .where(tokens.c.user_id == row.id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    n_keys = conn.execute(keys.delete().where(keys.c.user_id == row.id)).rowcount
    conn.execute(users.update().where(users.c.id == row.id).values(disabled=True, removed_at=now))
    audit.append(
        conn,
        at=now,
        kind="user.removed",
        actor=actor,
        data={"user": name, "tokens_revoked": revoked, "keys_removed": n_keys},
    )
    return {"user": name, "tokens_revoked": revoked, "keys_removed": n_keys}


def removed_at(conn: Connection, *, name: str) -> int | None:
    return conn.execute(select(users.c.removed_at).where(users.c.name == name)).scalar()


def list_users(conn: Connection, *, include_removed: bool = False) -> list[dict]:
    q = select(users).order_by(users.c.name)
    if not include_removed:
        q = q.where(users.c.removed_at.is_(None))
    out = []
    for r in conn.execute(q):
        d = store.user_dict(r)
        if include_removed:
            d["removed_at"] = iso(r.removed_at)
        out.append(d)
    return out


# -- tokens ------------------------------------------------------------------


def create_named_token(
    conn: Connection, *, name: str, label: str, ttl: int | None, actor: str, now: int
) -> str:
    """An admin-made token; ``ttl`` None never expires (asked for explicitly)."""
    if ttl is not None and ttl < 1:
        raise InvalidInput("--expires: a token must live at least one second (or `never`)")
    _user_row(conn, name)
    return store.create_user_token(
        conn,
        name=name,
        actor=actor,
        now=now,
        label=label,
        expires_at=None if ttl is None else now + ttl,
    )


def token_rows(conn: Connection, *, user: str | None, now: int) -> list[dict]:
    """Unrevoked user tokens with ISO 8601 UTC times and a state (live / expired)."""
    uid = None if user is None else store.get_user(conn, name=user)["id"]
    out = []
    for t in store.list_user_tokens(conn, user_id=uid):
        exp = t.get("expires_at")
        out.append(
            {
                "id": t["id"],
                "user": t["user"],
                "name": t["name"],
                "created_at": iso(t["created_at"]),
                "last_used_at": iso(t["last_used_at"]),
                "expires_at": iso(exp),
                "state": "expired" if exp is not None and now >= exp else "live",
            }
        )
    return out


# -- hosts -------------------------------------------------------------------


def set_host_labels(
    conn: Connection, *, name: str, labels: dict[str, str], actor: str, now: int
) -> dict:
    """Replace a host's labels (all of them). Requests already made keep their hosts."""
    row = store.get_host(conn, name=name)
    conn.execute(hosts.update().where(hosts.c.id == row.id).values(labels=audit.canonical(labels)))
    audit.append(
        conn,
        at=now,
        kind="host.labels_set",
        actor=actor,
        host=name,
        data={"labels": labels, "was": json.loads(row.labels)},
    )
    return {"name": name, "labels": labels}


def rotate_host_token(conn: Connection, *, name: str, grace: int, actor: str, now: int) -> str:
    """A new host token; the old one(s) stay valid ``grace`` seconds more (0: revoked now).

    A token already due to expire sooner (an earlier rotation's) keeps its
    earlier end: rotating never lengthens an old token's life.
    """
    row = store.get_host(conn, name=name)
    live = (tokens.c.host_id == row.id) & tokens.c.revoked_at.is_(None)
    if grace == 0:
        conn.execute(tokens.update().where(live).values(revoked_at=now))
    else:
        until = now + grace
        conn.execute(
            tokens.update()
            .where(live, (tokens.c.expires_at.is_(None)) | (tokens.c.expires_at > until))
            .values(expires_at=until)
        )
    # An earlier rotation's shorter end is kept: the audit records each old token's
    # real end, not now + grace for all of them.
    ends: list[int] = []
    if grace:
        q = select(tokens.c.expires_at).where(live, tokens.c.expires_at > now)
        ends = sorted(conn.execute(q).scalars())
    token = auth.new_token("host")
    conn.execute(
        tokens.insert().values(
            token_hash=auth.token_hash(token), kind="host", host_id=row.id, created_at=now
        )
    )
    audit.append(
        conn,
        at=now,
        kind="host.token_rotated",
        actor=actor,
        host=name,
        data={
            "grace_seconds": grace,
            # the last old token's end; None: no old token is still accepted
            "old_valid_until": iso(ends[-1]) if ends else (iso(now) if not grace else None),
            "old_tokens_valid_until": [iso(e) for e in ends],
        },
    )
    return token


def host_token_count(conn: Connection, *, name: str, now: int) -> int:
    """How many tokens of the host are accepted right now (tests and `host list`)."""
    row = store.get_host(conn, name=name)
    q = select(func.count()).where(
        tokens.c.host_id == row.id,
        tokens.c.revoked_at.is_(None),
        (tokens.c.expires_at.is_(None)) | (tokens.c.expires_at > now),
    )
    return int(conn.execute(q).scalar_one())
