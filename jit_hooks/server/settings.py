"""Typed service settings, built from CLI options and the environment."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jit_hooks.errors import JitError

DEFAULT_DATA_DIR = "/var/lib/jit-server"
DB_FILENAME = "jit.db"
MAX_BODY_BYTES = 64 * 1024
# PostgreSQL connections per service process (= threads that run transactions,
# jit_hooks/server/unit.py). Replicas x workers x this must stay below the
# server's max_connections.
DB_POOL_SIZE = 10
# Web page sessions (jit_hooks/server/ui/): signed out after this long without a
# page view, and after this long at most whatever the activity (docs/ui.md).
UI_SESSION_IDLE = 30 * 60
UI_SESSION_LIFETIME = 12 * 3600
# Lifetime of a user token from an interactive sign-in (password, SSO):
# JIT_USER_TOKEN_TTL seconds. Tokens an admin creates by name have their own
# --expires (jit_hooks/server/cli.py).
USER_TOKEN_TTL = 12 * 3600


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Settings:
    """Everything the service needs; one instance per app."""

    database_url: str
    data_dir: Path | None = None
    pam_service: str = "login"
    max_body_bytes: int = MAX_BODY_BYTES
    # PostgreSQL only; SQLite always uses one connection (db.py).
    db_pool_size: int = DB_POOL_SIZE
    ui_session_idle: int = UI_SESSION_IDLE
    ui_session_lifetime: int = UI_SESSION_LIFETIME
    user_token_ttl: int = USER_TOKEN_TTL
    clock: Callable[[], int] = field(default=_now, compare=False)

    @classmethod
    def from_options(
        cls,
        *,
        data_dir: str | None = None,
        database_url: str | None = None,
        db_pool_size: int | None = None,
    ) -> Settings:
        """Resolve --data-dir / --database-url / --db-pool-size (and env vars) into settings."""
        database_url = database_url or os.environ.get("JIT_DATABASE_URL") or None
        ddir = Path(data_dir or os.environ.get("JIT_DATA_DIR") or DEFAULT_DATA_DIR)
        if not database_url:
            database_url = f"sqlite:///{ddir / DB_FILENAME}"
        return cls(
            database_url=database_url,
            data_dir=ddir,
            db_pool_size=db_pool_size or DB_POOL_SIZE,
            ui_session_idle=int(os.environ.get("JIT_UI_SESSION_IDLE") or UI_SESSION_IDLE),
            ui_session_lifetime=int(
                os.environ.get("JIT_UI_SESSION_LIFETIME") or UI_SESSION_LIFETIME
            ),
            user_token_ttl=user_token_ttl_from_env(),
        )


def user_token_ttl_from_env() -> int:
    """JIT_USER_TOKEN_TTL (seconds, >= 1), or the default; a bad value is an error, not 0."""
    raw = os.environ.get("JIT_USER_TOKEN_TTL") or ""
    if not raw:
        return USER_TOKEN_TTL
    if not raw.isdigit() or int(raw) < 1:
        raise JitError(f"JIT_USER_TOKEN_TTL: expected a number of seconds >= 1, got {raw[:40]!r}")
    return int(raw)
