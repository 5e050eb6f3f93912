"""Login notices: why a session without a terminal was ended, and an approval ending soon.

A session with a pty gets its warnings written to its terminal (enforce.warn_users).
One without (``ssh host cmd``, scp, sftp) has nowhere to write: when enforce or the
agent ends such a session (its approval revoked, given back, expired, its user
disabled), it records one notice for that login on this host here, and the PAM
account hook, which runs on every login anyway, prints it once at that login's
next login (pam_exec ``stdout``: sshd sends it as a banner, the ssh client shows
it on stderr). No process and no service call is added to a login.

A notice is bound to the key the ended session logged in with (the service
names it with the session): on a shared login only that key's next login reads
it, and another key's login leaves it in place. No key, no notice.

The notice holds fields, not text: the hook rebuilds the one line from a login
that matches LOGIN_RE, an integer request id, a reason from a fixed table and a
time, so nothing a service or a file says reaches the user verbatim.

Where: the spool directory (spool.py's rules: a real directory, owned by root or
the hook user, mode 0700), one file per login, ``notice-<login>.json``, written
by root (enforce, the agent) as ``root:jit-hooks 0640`` so that jit-hooksd (the
hook user) can read it and, owning the directory, remove it; only a file owned
by root is shown. Bounded: at most MAX_BYTES a file and MAX_NOTICES files (a
full spool drops expired notices, then the oldest); a later notice for the same
login replaces the earlier one; one older than MAX_AGE is not shown. A notice is
shown only if it could be removed first, so it is shown once.

The same hook also tells a login that starts within the largest
``sessions.warn_before`` mark of its approval's end when access ends and the
command to extend (``ending_text``): a session without a terminal gets no
warning later, and this needs no state (the end comes with the hook's own answer).

Stdlib only: the PAM account hook imports it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import TypedDict

from jit_hooks.host import atomic, paths
from jit_hooks.host.login import spool
from jit_hooks.protocol import FINGERPRINT_RE, LOGIN_RE

PREFIX = "notice-"
SUFFIX = ".json"
MAX_BYTES = 512
MAX_NOTICES = 1000
# A notice older than this is about a session too long gone to matter: not shown,
# and the first to go when the spool is full.
MAX_AGE = 7 * 86400
# A temp file this old belongs to a writer that was killed (a write takes ms).
STALE_TEMP = 60
# The service's reasons for ending a session (protocol.SessionToEnd) and how the
# notice says them; any other reason is not recorded.
REASONS = {
    "revoked": "revoked",  # also a grant its requester gave back (jit drop)
    "expired": "expired",
    "user_disabled": "ended: user disabled",
    "not_active": "no longer active",
}


class Notice(TypedDict):
    login: str
    request_id: int | None
    reason: str
    at: int  # when the session was ended (host clock, Unix seconds)
    fingerprint: str  # the key the session logged in with: shown only to that key


def _name(login: str) -> str:
    if not LOGIN_RE.match(login):
        raise ValueError("invalid login")
    return f"{PREFIX}{login}{SUFFIX}"


def valid(notice: object) -> bool:
    if not isinstance(notice, dict) or set(notice) != set(Notice.__annotations__):
        return False
    rid, at = notice["request_id"], notice["at"]
    return (
        isinstance(notice["login"], str)
        and bool(LOGIN_RE.match(notice["login"]))
        and (rid is None or (isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0))
        and notice["reason"] in REASONS
        and isinstance(at, int)
        and not isinstance(at, bool)
        and 0 <= at < 10**12
        and isinstance(notice["fingerprint"], str)
        and bool(FINGERPRINT_RE.match(notice["fingerprint"]))
    )


def _hook_gid() -> int | None:
    import pwd

    try:
        return pwd.getpwnam(paths.HOOK_USER).pw_gid
    except KeyError:
        return None


def record(
    spool_dir: str,
    *,
    login: str,
    request_id: int | None,
    reason: str,
    fingerprint: str | None,
    at: int | None = None,
) -> bool:
    """Record (or replace) the notice for ``login``; False if not recorded (bad reason, or
    no key to show it to: on a shared login only the ended session's key may read it).

    A full spool makes room: expired notices and a killed writer's temp files go
    first, then the oldest notices.

    Raises spool.SpoolError (OSError) if the directory is missing or unsafe.
    """
    notice = Notice(
        login=login,
        request_id=request_id,
        reason=reason,
        at=int(time.time()) if at is None else at,
        fingerprint=fingerprint,  # type: ignore[typeddict-item] # None: refused by valid()
    )
    if not valid(notice):
        return False
    data = json.dumps(notice, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_BYTES:
        return False
    name = _name(login)
    dir_fd = spool.open_dir(spool_dir)
    try:
        _make_room(dir_fd, name, time.time())
        gid = _hook_gid() if os.geteuid() == 0 else None
        mode = 0o640 if gid is not None else 0o600
        atomic.write_atomic(
            name,
            data,
            mode=mode,
            uid=0 if gid is not None else None,
            gid=gid,
            dir_fd=dir_fd,
        )
    finally:
        os.close(dir_fd)
    return True


def _make_room(dir_fd: int, name: str, now: float) -> None:
    """Keep at most MAX_NOTICES - 1 notices besides ``name``: expired ones and stale temp
    files are removed, then the oldest (by mtime) until there is room."""
    ours: list[tuple[float, str]] = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if not entry.name.startswith(PREFIX) or entry.name == name:
                continue
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
                if entry.name.endswith(SUFFIX):
                    if now - mtime > MAX_AGE:
                        os.unlink(entry.name, dir_fd=dir_fd)
                    else:
                        ours.append((mtime, entry.name))
                elif entry.name.endswith(".tmp") and now - mtime > STALE_TEMP:
                    os.unlink(entry.name, dir_fd=dir_fd)
            except OSError:
                pass  # taken meanwhile, or not ours to remove (a planted directory)
    ours.sort()
    for _mtime, old in ours[: max(0, len(ours) - (MAX_NOTICES - 1))]:
        try:
            os.unlink(old, dir_fd=dir_fd)
        except OSError:
            pass


def take(spool_dir: str, login: str, fingerprint: str) -> Notice | None:
    """The notice for ``login`` logging in with key ``fingerprint``, removed so it is shown
    once; None if none (or unsafe). Another key's notice stays, unshown, for that key.

    The common case, no notice, costs one failed open. Raises OSError only for
    unexpected failures; callers treat any failure as "no notice".
    """
    name = _name(login)
    try:
        os.lstat(os.path.join(spool_dir, name))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        # Nothing this process can see (a spool it can't enter holds nothing it
        # could show either; `jit-hooks status` checks the spool directory).
        return None
    dir_fd = spool.open_dir(spool_dir)  # SpoolError if the directory is unsafe
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink (ELOOP) or worse: never followed, dropped
            os.unlink(name, dir_fd=dir_fd)
            return None
        if stat.S_ISDIR(os.fstat(fd).st_mode):  # planted: unlink can't drop it, rmdir can
            os.close(fd)
            os.rmdir(name, dir_fd=dir_fd)
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (
                not stat.S_ISREG(st.st_mode)
                # Only root (enforce, the agent) writes notices: jit-hooks owns the
                # spool directory, so a file of its own may have been planted.
                or st.st_uid != 0
                or st.st_mode & 0o027  # no group write, nothing for others
                or st.st_size > MAX_BYTES
            ):
                notice = None
            else:
                try:
                    notice = json.loads(f.read(MAX_BYTES + 1))
                except ValueError:
                    notice = None
        good = (
            valid(notice)
            and notice["login"] == login  # type: ignore[index]
            and time.time() - notice["at"] <= MAX_AGE  # type: ignore[index]
        )
        if good and notice["fingerprint"] != fingerprint:  # type: ignore[index]
            return None  # another person on this shared login: kept for them
        # Removed before it is shown: a notice that can't be removed would be shown
        # at every login; one that is unsafe, malformed or too old is dropped.
        os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return notice if good else None  # type: ignore[return-value]


def text(notice: Notice, host: str | None) -> str:
    """The one line the user reads (printable ASCII by construction)."""
    where = f" on {host}" if host else ""
    # With the date: it may be shown days later (up to MAX_AGE).
    end = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(notice["at"]))
    rid = notice["request_id"]
    what = f"approval {rid}" if rid is not None else "its approval"
    line = (
        f"jit: your previous session{where} as {notice['login']} was ended {end}: "
        f"{what} {REASONS[notice['reason']]}"
    )
    return "".join(c if " " <= c <= "~" else "?" for c in line)[:200]


def ending_text(*, login: str, host: str | None, request_id: int, expires_at: int, now: int) -> str:
    """The line a login starting near its approval's end reads: when, and how to extend."""
    minutes = max(1, round((expires_at - now) / 60))
    end = time.strftime("%H:%M UTC", time.gmtime(expires_at))
    where = f"{login}@{host}" if host else login
    line = (
        f"jit: your access as {where} ends at {end} (in about {minutes} min, request "
        f"{request_id}). To keep it: jit extend {request_id} --for 30m"
    )
    return "".join(c if " " <= c <= "~" else "?" for c in line)[:200]
