"""`jit-hooks enforce`: end the sshd sessions whose approval is no longer active (stdlib only).

The service lists this host's open sessions whose approval was revoked,
expired or whose user was disabled, each under its connection id
(``<sshd monitor pid>:<start time>``, see connection.py). For each one this
module checks /proc: the pid must exist, have that very start time and be an
sshd. Only then is the monitor sent SIGTERM (it passes the signal on to its
session child, which ends the session and closes the connection), through a
pidfd opened and re-checked first, so a pid recycled in between is never hit.
Sessions whose connection is already gone are reported closed.

Enforcement acts only on a positive answer: if the service cannot be reached or
answers nonsense, nothing is killed (that is logged). Failing closed here would
mean ending every session whenever the service blinks.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

from jit_hooks.errors import JitError, ServiceError
from jit_hooks.host import procfs
from jit_hooks.host.login.client import HookClient
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.log import HookLog
from jit_hooks.host.procfs import ProcStat
from jit_hooks.protocol import CONNECTION_RE, SessionQuery, SessionsAnswer

IDENT = "jit-hooks-enforce"
# Executable names a connection's monitor may have (exe link, "(deleted)" after an upgrade).
SSHD_NAMES = frozenset({"sshd"})
# sshd's monitor forwards SIGTERM to its session child and exits once it is gone:
# that takes milliseconds. A monitor still there after this gets SIGKILL.
TERM_GRACE = 5.0
# Users are warned on their terminal when their approval ends within this many
# seconds (once per run of the timer, so a few times in the last minutes).
WARN_BEFORE = 300

Check = Literal["match", "gone", "recycled", "not_sshd", "not_monitor"]


def is_sshd(pid: int, proc: str = procfs.PROC) -> bool:
    """Whether ``pid`` runs an sshd binary (by its exe link, not its changeable name)."""
    return procfs.exe_name(pid, proc) in SSHD_NAMES


def check_connection(conn: str, proc: str = procfs.PROC) -> Check:
    """Whether connection id ``conn`` still names a live sshd process on this host."""
    if not CONNECTION_RE.match(conn):
        raise ValueError("invalid connection id")
    pid_text, start = conn.split(":")
    pid = int(pid_text)
    st = procfs.stat(pid, proc)
    if st is None:
        return "gone"
    if st.start != start:
        return "recycled"
    if not is_sshd(pid, proc):
        return "not_sshd"
    # Only a per-connection monitor (a child of the sshd listener) may be ended.
    # The listener itself would take every session, break-glass included, and
    # the daemon with it: a connection id naming it is refused.
    if not is_sshd(st.ppid, proc) or b"[listener]" in procfs.cmdline(pid, proc):
        return "not_monitor"
    return "match"


def descendants(pid: int, proc: str = procfs.PROC) -> list[tuple[int, ProcStat]]:
    """Every live process below ``pid`` (one pass over /proc)."""
    children = procfs.children_map(proc)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _wait_gone(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # readable once the process has exited
    return bool(poller.poll(int(timeout * 1000)))


def _signal_verified(pid: int, start: str, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it still has start time ``start`` (via a pidfd)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        # The pidfd pins this exact process: checking after opening it rules out
        # a pid recycled between our look at /proc and the signal.
        st = procfs.stat(pid)
        if st is None or st.start != start:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _end_leftovers(procs: list[tuple[int, ProcStat]], grace: float) -> int:
    """SIGTERM, then SIGKILL after ``grace``, the listed processes still alive; how many."""
    hit = [(pid, st.start) for pid, st in procs if _signal_verified(pid, st.start, signal.SIGTERM)]

    def running(pid: int, start: str) -> bool:
        st = procfs.stat(pid)
        return st is not None and st.start == start and st.state != "Z"

    deadline = time.monotonic() + grace
    alive = hit
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [(p, s) for p, s in alive if running(p, s)]
    for pid, start in alive:
        _signal_verified(pid, start, signal.SIGKILL)
    return len(hit)


def end_connection(conn: str, *, grace: float = TERM_GRACE) -> str:
    """End the sshd connection ``conn`` and its processes if /proc proves it is that sshd.

    Returns what happened: ``terminated``, ``killed`` (SIGKILL after ``grace``),
    ``gone`` / ``recycled`` (nothing to end, nothing signalled) or ``not_sshd`` /
    ``not_monitor`` (refused: nothing signalled).

    SIGTERM makes the monitor end its session child and close the connection, but
    a command run without a pty does not die with it (measured with OpenSSH 9.2):
    the connection's processes, listed before the signal, get SIGTERM too.
    Processes that daemonised away from the connection are not found this way.
    """
    found = check_connection(conn)
    if found != "match":
        return found
    pid, start = int(conn.split(":")[0]), conn.split(":")[1]
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return "gone"
    try:
        st = procfs.stat(pid)
        if st is None or st.start != start or not is_sshd(pid):
            return "gone" if st is None else "recycled"
        below = descendants(pid)
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        outcome = "terminated"
        if not _wait_gone(pidfd, grace):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _wait_gone(pidfd, grace)
            outcome = "killed"
    except ProcessLookupError:
        outcome, below = "terminated", []
    finally:
        os.close(pidfd)
    _end_leftovers(below, grace)
    return outcome


def _ttys(conn: str) -> set[str]:
    """The pseudo-terminals (/dev/pts/N) that processes of this connection hold."""
    pid = int(conn.split(":")[0])
    out = set()
    for _, st in descendants(pid):
        major, minor = os.major(st.tty_nr), os.minor(st.tty_nr)
        if 136 <= major <= 143:  # Unix98 pty slaves
            out.add(f"/dev/pts/{(major - 136) * 256 + minor}")
    return out


def warn_users(conn: str, message: str) -> int:
    """Write ``message`` to the session's terminals (like wall); return how many got it."""
    if check_connection(conn) != "match":
        return 0
    sent = 0
    for tty in sorted(_ttys(conn)):
        try:
            fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, f"\r\n{message}\r\n".encode("ascii", "replace"))
            sent += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return sent


class Result(NamedTuple):
    ended: int
    closed: int
    refused: int
    warned: int


def run_once(
    config: HostConfig,
    log: HookLog,
    *,
    client: HookClient | None = None,
    clock: Callable[[], float] = time.time,
    grace: float = TERM_GRACE,
) -> Result:
    """Ask the service once and act on its answer; ServiceError if it gave none."""
    client = client or HookClient(config)
    try:
        answer: SessionsAnswer = client.open_sessions()
    except ServiceError as e:
        log.warning(action="none", reason="service_unavailable", error=e.reason, url=e.url)
        raise
    ended = closed = refused = warned = 0
    for item in answer["end"]:
        fields = {
            "login": item["login"],
            "connection": item["connection"],
            "request": item["request_id"],
            "why": item["reason"],
        }
        outcome = end_connection(item["connection"], grace=grace)
        if outcome in ("not_sshd", "not_monitor"):
            refused += 1
            log.alert(action="refused", **fields, reason=f"pid_is_{outcome}")
            continue
        if outcome in ("terminated", "killed"):
            ended += 1
            log.alert(action="end", **fields, result=outcome)
        else:
            log.info(action="close", **fields, result=outcome)
        try:
            client.session(
                SessionQuery(
                    event="close",
                    host=config.host_name,
                    login=item["login"],
                    rhost=None,
                    connection=item["connection"],
                    key_type=None,
                    key=None,
                    fingerprint=None,
                )
            )
            closed += 1
        except JitError as e:
            # The session is ended either way; the next run reports it again.
            log.warning(action="report", **fields, reported="no", error=getattr(e, "reason", e))
    now = int(clock())
    for active in answer["active"]:
        left = active["expires_at"] - now
        if 0 < left <= WARN_BEFORE:
            minutes = max(1, round(left / 60))
            sent = warn_users(
                active["connection"],
                f"jit: your access as {active['login']} ends in about {minutes} min "
                f"(request {active['request_id']}); this session will be closed then.",
            )
            if sent:
                warned += 1
                log.info(
                    action="warn",
                    login=active["login"],
                    connection=active["connection"],
                    request=active["request_id"],
                    left=left,
                )
    return Result(ended=ended, closed=closed, refused=refused, warned=warned)
