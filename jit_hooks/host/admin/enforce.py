"""`jit-hooks enforce`: end the sshd sessions whose approval is no longer active (stdlib only).

The service lists this host's open sessions whose approval was revoked,
expired or whose user was disabled, each under its connection id
(``<sshd monitor pid>:<start time>``, see connection.py). For each one this
module checks /proc: the pid must exist, have that very start time and be an
sshd. Only then is the monitor sent SIGTERM (it passes the signal on to its
session child, which ends the session and closes the connection), through a
pidfd opened and re-checked first, so a pid recycled in between is never hit.
Before that, the connection's user is read from /proc (its session child's
real uid, which sshd titles ``sshd: USER@tty``): a break-glass account's
session, or one of another login than the service named, is never ended, so a
compromised service cannot end sessions beyond the logins it grants.
Sessions whose connection is already gone are reported closed.

Enforcement acts only on a positive answer: if the service cannot be reached or
answers nonsense, nothing is killed (that is logged). Failing closed here would
mean ending every session whenever the service blinks.
"""

from __future__ import annotations

import os
import pwd
import re
import select
import signal
import stat
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

from jit_hooks.errors import JitError, ServiceError
from jit_hooks.host import procfs
from jit_hooks.host.login import notices
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
# Users are warned on their terminal this many seconds before their approval
# ends (host config sessions.warn_before overrides; the agent warns on time,
# the timer in the period after each time).
WARN_BEFORE = (600, 60)
# jit-hooks-enforce.timer's OnUnitActiveSec: the window in which a warning is due.
TIMER_PERIOD = 30.0

Check = Literal["match", "gone", "recycled", "not_sshd", "not_monitor"]
# The title sshd gives a connection's post-auth session child (it runs as the
# user): "<progname>: USER@pts/N" or "@notty"; progname is "sshd" unless run as a copy.
_SESSION_TITLE = re.compile(rb"[^\s:]+: ([^\s@\x00]+)@")


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


def _real_uid(pid: int, proc: str) -> int | None:
    try:
        with open(f"{proc}/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def session_login(conn: str, proc: str = procfs.PROC) -> str | None:
    """The login whose session connection ``conn`` carries; None if /proc does not prove one.

    Read from the monitor's session child: its real uid (set by sshd, not by the
    user) and its title ``sshd: USER@...`` must name the same account. A
    connection still authenticating, or a child whose title was changed, gives None.
    """
    pid = int(conn.split(":")[0])
    for child, _ in procfs.children_map(proc).get(pid, []):
        m = _SESSION_TITLE.match(procfs.cmdline(child, proc))
        uid = _real_uid(child, proc)
        if m is None or uid is None or not is_sshd(child, proc):
            continue
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return None
        return name if name.encode() == m.group(1) else None
    return None


def owner_refusal(conn: str, login: str, config: HostConfig, proc: str = procfs.PROC) -> str | None:
    """Why connection ``conn`` must not be ended as ``login``'s session, or None if it may.

    Only a connection /proc shows to be that very login's, and not a break-glass
    account's, is ended: the service's word alone is not enough.
    """
    if check_connection(conn, proc) != "match":
        return None  # gone or refused anyway: end_connection says which, signals nothing
    actual = session_login(conn, proc)
    if actual is not None and actual in config.break_glass:
        return "pid_is_break_glass"
    if actual is None or actual != login:
        return "pid_is_other_login"
    return None


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


def _uid(login: str) -> int | None:
    try:
        return pwd.getpwnam(login).pw_uid
    except KeyError:
        return None


def write_tty(path: str, uid: int | None, message: str) -> bool:
    """Write ``message`` to pty ``path`` only if it is a pty slave owned by ``uid``.

    Runs as root on a device path a user can influence: no symlink is followed
    (O_NOFOLLOW), the device never becomes our controlling terminal (O_NOCTTY),
    a full or stopped terminal never blocks us (O_NONBLOCK), and what was opened
    is checked (a tty, a pty slave's major, the session user's) before writing.
    """
    if uid is None:
        return False
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not (
            stat.S_ISCHR(st.st_mode)
            and 136 <= os.major(st.st_rdev) <= 143
            and os.isatty(fd)
            and st.st_uid == uid
        ):
            return False
        # Only printable ASCII reaches the terminal: no escape sequences.
        text = "".join(c if " " <= c <= "~" else "?" for c in message)
        os.write(fd, f"\r\n{text}\r\n".encode("ascii"))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def warn_users(conn: str, message: str, login: str) -> int:
    """Write ``message`` to the session's terminals (like wall); return how many got it."""
    if check_connection(conn) != "match":
        return 0
    uid = _uid(login)
    return sum(write_tty(tty, uid, message) for tty in sorted(_ttys(conn)))


def warning_text(
    *, login: str, host: str | None, request_id: int, expires_at: int, now: int
) -> str:
    """What a user reads on the terminal before the end: when, and the command to extend."""
    minutes = max(1, round((expires_at - now) / 60))
    end = time.strftime("%H:%M UTC", time.gmtime(expires_at))
    where = f"{login}@{host}" if host else login
    return (
        f"jit: your access as {where} ends at {end} (in about {minutes} min, request "
        f"{request_id}) and this session will be closed then. To keep it: "
        f"jit extend {request_id} --for 30m"
    )


def end_sessions(
    items: list, config: HostConfig, log: HookLog, client: HookClient, *, grace: float, source: str
) -> tuple[int, int, int]:
    """End the listed sessions (``end`` items of a SessionsAnswer); (ended, closed, refused).

    Shared by the timer (run_once) and the agent (host/agent/): one kill path.
    """
    ended = closed = refused = 0
    for item in items:
        fields = {
            "login": item["login"],
            "connection": item["connection"],
            "request": item["request_id"],
            "why": item["reason"],
        }
        why_not = owner_refusal(item["connection"], item["login"], config)
        if why_not is not None:
            refused += 1
            log.alert(action="refused", **fields, reason=why_not, source=source)
            continue
        # Listed before the kill: a session with no terminal learns why at its next login.
        # (Only a connection /proc proves to be that sshd is ended: see end_connection.)
        terminal = bool(_ttys(item["connection"]))
        outcome = end_connection(item["connection"], grace=grace)
        if outcome in ("not_sshd", "not_monitor"):
            refused += 1
            log.alert(action="refused", **fields, reason=f"pid_is_{outcome}", source=source)
            continue
        if outcome in ("terminated", "killed"):
            ended += 1
            notice = {} if terminal else {"notice": _record_notice(config, item)}
            log.alert(action="end", **fields, result=outcome, source=source, **notice)
        else:
            log.info(action="close", **fields, result=outcome, source=source)
        if report_closed(config, log, client, item["login"], item["connection"], fields):
            closed += 1
    return ended, closed, refused


def _record_notice(config: HostConfig, item: dict) -> str:
    """Record the next-login notice of an ended session without a pty (login/notices.py)."""
    try:
        done = notices.record(
            config.spool_dir, login=item["login"], request_id=item["request_id"],
            reason=item["reason"], fingerprint=item.get("fingerprint"),
        )  # fmt: skip
    except OSError as e:
        return f"failed_{e.errno or 'unsafe'}"
    return "recorded" if done else "skipped"


def report_closed(
    config: HostConfig, log: HookLog, client: HookClient, login: str, conn: str, fields: dict
) -> bool:
    try:
        client.session(
            SessionQuery(
                event="close",
                host=config.host_name,
                login=login,
                rhost=None,
                connection=conn,
                key_type=None,
                key=None,
                fingerprint=None,
            )
        )
        return True
    except JitError as e:
        # The session is ended either way; the next run reports it again.
        log.warning(action="report", **fields, reported="no", error=getattr(e, "reason", e))
        return False


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
    period: float = TIMER_PERIOD,
) -> Result:
    """Ask the service once and act on its answer; ServiceError if it gave none."""
    client = client or HookClient(config)
    try:
        answer: SessionsAnswer = client.open_sessions()
    except ServiceError as e:
        log.warning(action="none", reason="service_unavailable", error=e.reason, url=e.url)
        raise
    ended, closed, refused = end_sessions(
        answer["end"], config, log, client, grace=grace, source="timer"
    )
    warned = 0
    now = int(clock())
    for active in answer["active"]:
        left = active["expires_at"] - now
        # Each configured warning is due once: in the timer period after its time.
        if any(0 < left <= w and left > w - period for w in config_warnings(config)):
            text = warning_text(
                login=active["login"],
                host=config.host_name,
                request_id=active["request_id"],
                expires_at=active["expires_at"],
                now=now,
            )
            if warn_users(active["connection"], text, active["login"]):
                warned += 1
                log.info(
                    action="warn",
                    login=active["login"],
                    connection=active["connection"],
                    request=active["request_id"],
                    left=left,
                    source="timer",
                )
    return Result(ended=ended, closed=closed, refused=refused, warned=warned)


def config_warnings(config: HostConfig) -> tuple[int, ...]:
    """Seconds before the end at which users are warned (host config ``sessions.warn_before``)."""
    return config.warn_before or WARN_BEFORE
