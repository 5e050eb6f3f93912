"""Audit settings (fold, checkpoints, miss aggregation), from the environment.

They are read from ``JIT_AUDIT_*`` variables so that `jit-server serve`, its
``--workers`` processes and the admin commands all see the same values without
each call site passing them along.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jit_hooks.errors import JitError

KEY_FILE = "audit-signing.key"
CHECKPOINT_FILE = "audit-checkpoints.jsonl"


class AuditSettingsError(JitError):
    """Raised when a JIT_AUDIT_* variable does not hold what it should."""


def _int(name: str, default: int, lo: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AuditSettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if value < lo:
        raise AuditSettingsError(f"{name}: must be at least {lo}, got {value}")
    return value


@dataclass(frozen=True)
class AuditSettings:
    key_file: Path | None  # Ed25519 signing key (PEM, 0600), made on first need
    checkpoint_file: Path | None  # append-only JSONL of signed checkpoints
    checkpoint_events: int = 1000  # a checkpoint at least every N events ...
    checkpoint_seconds: int = 300  # ... and every T seconds while the chain grows
    fold_interval_ms: int = 500  # how often the leader folds
    miss_window: int = 60  # seconds over which unauthenticated misses are counted
    syslog: bool = True  # also send each checkpoint to syslog (authpriv)

    @classmethod
    def from_env(cls, data_dir: Path | None) -> AuditSettings:
        def path(var: str, name: str) -> Path | None:
            raw = os.environ.get(var)
            if raw:
                return Path(raw)
            return None if data_dir is None else data_dir / name

        return cls(
            key_file=path("JIT_AUDIT_KEY", KEY_FILE),
            checkpoint_file=path("JIT_AUDIT_CHECKPOINTS", CHECKPOINT_FILE),
            checkpoint_events=_int("JIT_AUDIT_CHECKPOINT_EVENTS", 1000, 1),
            checkpoint_seconds=_int("JIT_AUDIT_CHECKPOINT_SECONDS", 300, 1),
            fold_interval_ms=_int("JIT_AUDIT_FOLD_INTERVAL_MS", 500, 10),
            miss_window=_int("JIT_AUDIT_MISS_WINDOW", 60, 1),
            syslog=os.environ.get("JIT_AUDIT_SYSLOG", "1") != "0",
        )


_miss_window: int | None = None


def miss_window() -> int:
    """The miss-aggregation window of this process (read once: it is on the hook path)."""
    global _miss_window
    if _miss_window is None:
        _miss_window = _int("JIT_AUDIT_MISS_WINDOW", 60, 1)
    return _miss_window
