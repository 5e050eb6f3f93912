"""The break-glass spool: reports the service did not take, kept on disk until it does.

A break-glass login during an outage must still reach the central audit, late
but certainly. When the live report fails, the PAM hook writes it here; the
enforce timer (root) and jit-hooksd deliver what is spooled once the service
answers (break_glass.flush). Every report carries a random id: the service
records one event per id however often it is delivered.

Rules, because the spool is evidence:

* The directory must be a real directory (not a symlink), owned by root or the
  hook user (the PAM hooks run as root in-process, or inside jit-hooksd as
  jit-hooks), with no group/world access; files are created 0600 with
  O_NOFOLLOW/O_EXCL relative to the directory's fd, written to a temp name and
  renamed, so a reader never sees half a report.
* Bounded: at most MAX_FILES reports of at most MAX_REPORT_BYTES each. When it
  is full the **oldest are kept** and the new report is not spooled (logged at
  ALERT): the first logins of an incident are the ones that matter, and a flood
  of later ones must not push them out. syslog still has every line.
* Names ``bg-<login time, 12 digits>-<id>.json`` sort by login time: delivered
  oldest first.

Stdlib only: the PAM hooks import it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from typing import TypedDict

from jit_hooks.host import atomic, paths
from jit_hooks.protocol import CONNECTION_RE, LOGIN_RE

MAX_FILES = 1000
MAX_REPORT_BYTES = 2048
PREFIX = "bg-"
_NAME_RE = re.compile(r"\Abg-[0-9]{1,12}-[0-9a-f]{32}\.json\Z")
REPORT_ID_RE = re.compile(r"\A[0-9a-f]{32}\Z")
_STAGES = ("authorized-keys", "account", "session")


class SpoolError(OSError):
    """Raised when the spool directory is missing, unsafe, full or unwritable."""


class Report(TypedDict):
    report_id: str
    at: int  # the login time (host clock, Unix seconds)
    login: str
    rhost: str | None
    connection: str | None
    stage: str


def valid(report: object) -> bool:
    """Whether ``report`` is a well-formed Report (what a spooled file must hold)."""
    if not isinstance(report, dict) or set(report) != set(Report.__annotations__):
        return False
    rhost, conn = report["rhost"], report["connection"]
    return (
        isinstance(report["report_id"], str)
        and bool(REPORT_ID_RE.match(report["report_id"]))
        and isinstance(report["at"], int)
        and not isinstance(report["at"], bool)
        and 0 <= report["at"] < 10**12
        and isinstance(report["login"], str)
        and bool(LOGIN_RE.match(report["login"]))
        and (rhost is None or (isinstance(rhost, str) and len(rhost) <= 253))
        and (conn is None or (isinstance(conn, str) and bool(CONNECTION_RE.match(conn))))
        and report["stage"] in _STAGES
    )


def _trusted_owners() -> set[int]:
    owners = {0}
    try:
        import pwd

        owners.add(pwd.getpwnam(paths.HOOK_USER).pw_uid)
    except (KeyError, ImportError):
        pass
    return owners


def open_dir(path: str) -> int:
    """An fd of the spool directory after checking it; SpoolError if unsafe or missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SpoolError(e.errno, f"spool {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid not in _trusted_owners() or st.st_mode & 0o077:
        os.close(fd)
        raise SpoolError(
            f"spool {path} must be owned by root or {paths.HOOK_USER} and mode 0700 "
            f"(is {st.st_mode & 0o7777:04o} uid {st.st_uid})"
        )
    return fd


def _entries(dir_fd: int) -> list[str]:
    return sorted(n for n in os.listdir(dir_fd) if _NAME_RE.match(n))


def write(path: str, report: Report) -> str:
    """Spool ``report``; returns the file name. SpoolError if it can't (full, unsafe, ...)."""
    if not valid(report):
        raise ValueError("invalid break-glass report")
    data = json.dumps(report, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_REPORT_BYTES:
        raise ValueError("break-glass report too large")
    name = f"{PREFIX}{report['at']:012d}-{report['report_id']}.json"  # sorts by time
    dir_fd = open_dir(path)
    try:
        if len(_entries(dir_fd)) >= MAX_FILES:
            raise SpoolError(f"spool {path} is full ({MAX_FILES} reports): the oldest are kept")
        atomic.write_atomic(name, data, mode=0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return name


def pending(path: str) -> bool:
    """Whether anything waits in the spool (cheap: one directory listing; False if unreadable)."""
    try:
        return any(n.startswith(PREFIX) for n in os.listdir(path))
    except OSError:
        return False


def read_all(dir_fd: int) -> Iterator[tuple[str, Report | None]]:
    """(name, report) oldest first; report None if the file is unsafe or malformed.

    Files this process may not open (a root-written report seen by jit-hooksd)
    are skipped silently: root's enforce run delivers them.
    """
    owners = _trusted_owners()
    for name in _entries(dir_fd):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except PermissionError:
            continue
        except OSError:
            yield name, None
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_uid not in owners
                or st.st_mode & 0o077
                or st.st_size > MAX_REPORT_BYTES
            ):
                yield name, None
                continue
            try:
                report = json.loads(f.read(MAX_REPORT_BYTES + 1))
            except ValueError:
                report = None
        yield name, report if valid(report) else None


def remove(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
