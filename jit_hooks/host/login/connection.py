"""Which sshd connection a hook runs for, and the key the AKC accepted on it.

The AuthorizedKeysCommand and the PAM hooks of one connection are all children
of sshd's per-connection monitor process (measured on OpenSSH 9.2, which has
no %C for the AKC). Its pid plus its start time (clock ticks since boot, from
/proc/PID/stat) names the connection without pid-reuse ambiguity.

The AKC records the key it printed under that id in the state directory
(0700, owned by the AKC user); the PAM account hook, which runs as root and
gets an empty SSH_AUTH_INFO_0, reads it back. sshd runs the AKC once more for
the signature check of the key it finally accepts, so the last record written
is the accepted key. Records older than RECORD_MAX_AGE are ignored and purged.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import TypedDict

from jit_hooks.errors import ConfigError
from jit_hooks.host import atomic, paths, procfs
from jit_hooks.host.login import trust
from jit_hooks.protocol import (
    ALLOWED_KEY_OPTIONS,
    CONNECTION_RE,
    FINGERPRINT_RE,
    KEY_TYPES,
    LOGIN_RE,
)

# sshd's LoginGraceTime defaults to 120 s: the account check always follows the
# last AKC call within that, so a record older than this belongs to nobody.
RECORD_MAX_AGE = 300


class AcceptedKey(TypedDict):
    login: str
    key_type: str
    fingerprint: str
    request_id: int
    expires_at: int
    options: list[str]
    written_at: float
    from_cidrs: list[str] | None  # checked by answers.check_cidrs before any use


def connection_id(pid: int | None = None) -> str:
    """``"<pid>:<start time>"`` of ``pid`` (default: our parent, sshd's monitor)."""
    pid = os.getppid() if pid is None else pid
    conn = f"{pid}:{procfs.start_time(pid)}"
    if not CONNECTION_RE.match(conn):
        raise ValueError(f"unexpected /proc/{pid}/stat format")
    return conn


def _hook_uid() -> int | None:
    import pwd  # only when the state dir is not root's

    try:
        return pwd.getpwnam(paths.HOOK_USER).pw_uid
    except KeyError:
        return None


def check_state_dir(state_dir: str) -> None:
    """ConfigError unless only root or the hook user can change ``state_dir``.

    Whoever can write a record there decides which key the account hook asks
    about (and the AKC's reuse): the directory must be a real directory (not a
    symlink) owned by root or jit-hooks with no group/other bits, and every
    directory above it root-owned and not group/world-writable (trust.py's rule).
    """
    try:
        st = os.lstat(state_dir)
    except OSError as e:
        raise ConfigError(f"state dir: {e.strerror or e}", path=state_dir) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("state dir is not a directory (a symlink?)", path=state_dir)
    if st.st_uid != 0 and st.st_uid != _hook_uid():
        raise ConfigError(
            f"state dir is owned by uid {st.st_uid}, not root or "
            f"{paths.HOOK_USER}: chown {paths.HOOK_USER} {state_dir}",
            path=state_dir,
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"state dir has mode {st.st_mode & 0o7777:04o}, must be 0700: chmod 0700 {state_dir}",
            path=state_dir,
        )
    trust.check_dirs(state_dir, "state dir")


def _record_path(state_dir: str, conn: str) -> str:
    if not CONNECTION_RE.match(conn):
        raise ValueError("invalid connection id")
    return os.path.join(state_dir, "conn-" + conn.replace(":", "-"))


def record_accepted(
    state_dir: str,
    conn: str,
    *,
    login: str,
    key_type: str,
    fingerprint: str,
    request_id: int,
    expires_at: int,
    options: list[str] | None = None,
    now: float | None = None,
    from_cidrs: list[str] | None = None,
) -> None:
    """Atomically write (or replace) the accepted-key record of ``conn``; raises OSError."""
    record = AcceptedKey(
        login=login,
        key_type=key_type,
        fingerprint=fingerprint,
        request_id=request_id,
        expires_at=expires_at,
        options=list(options or []),
        written_at=time.time() if now is None else now,
        from_cidrs=from_cidrs,
    )
    # Not durable: the state directory is on tmpfs, and a record lives for one login.
    data = json.dumps(record).encode("ascii")
    atomic.write_atomic(_record_path(state_dir, conn), data, mode=0o600, durable=False)


def accepted_key(
    state_dir: str, conn: str, *, max_age: float = RECORD_MAX_AGE, now: float | None = None
) -> AcceptedKey | None:
    """The record the AKC wrote for ``conn``, if fresh and safely stored; else None.

    A record is only trusted if it is a regular file, not a symlink, owned by
    the owner of the state directory (the AKC user) or root, and writable by
    nobody else: anything else could have been planted.
    """
    now = time.time() if now is None else now
    try:
        dir_st = os.stat(state_dir)
        # O_NONBLOCK: a FIFO planted in the state dir must not hang the hook
        # (the fstat below then refuses anything but a regular file).
        fd = os.open(_record_path(state_dir, conn), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (OSError, ValueError):
        return None
    with os.fdopen(fd, encoding="ascii", errors="replace") as f:
        st = os.fstat(f.fileno())
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid not in (0, dir_st.st_uid)
            or st.st_mode & 0o022
            or st.st_size > 4096
        ):
            return None
        try:
            record = json.loads(f.read(4096))
        except ValueError:
            return None
    if not _valid(record) or not (0 <= now - record["written_at"] <= max_age):
        return None
    return record


def _valid(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("login"), str)
        and bool(LOGIN_RE.match(record["login"]))
        and record.get("key_type") in KEY_TYPES
        and isinstance(record.get("fingerprint"), str)
        and bool(FINGERPRINT_RE.match(record["fingerprint"]))
        and isinstance(record.get("request_id"), int)
        and isinstance(record.get("expires_at"), int)
        and isinstance(record.get("written_at"), int | float)
        and isinstance(record.get("options"), list)
        and all(o in ALLOWED_KEY_OPTIONS for o in record["options"])
    )


def purge_stale(
    state_dir: str, *, max_age: float = RECORD_MAX_AGE, now: float | None = None
) -> int:
    """Remove records (and leftover temp files) older than ``max_age``; return how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = os.scandir(state_dir)
    except OSError:
        return 0
    with entries:
        for entry in entries:
            if not entry.name.startswith("conn-"):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
    return removed
