"""jit-hooksd: the resident helper that runs the hook bodies for the thin hook clients.

A login runs four hook processes; each used to pay ~10 ms of interpreter start,
~24 ms of imports and a TLS handshake. With the helper, each hook process is a
bare interpreter plus ``_socket`` (thin.py) and the helper, which has everything
imported already, runs the SAME hook body the process would (hook.Invocation
carries argv, the PAM environment and the parent pid; the per-request ``Run``
supervises the body and collects its stdout).

    python3 -m jit_hooks.host.login.daemon [--socket PATH] [--syslog-socket PATH]

Listens on a unix stream socket (default paths.HOOKSD_SOCKET, created 0600), or
on fd 3 under systemd socket activation (LISTEN_PID/LISTEN_FDS). Runs as the
AKC user (jit-hooks). The accept loop checks each peer (SO_PEERCRED) before any
thread exists for it: root may ask for every hook, the helper's own uid (sshd's
AuthorizedKeysCommandUser) for the AKC only, anyone else is refused there and
logged. Admitted connections get a thread each, up to ``--max-connections``;
one bounded request (frames.py) is read, the hook body runs on that same thread
(one watchdog thread answers for bodies past their deadline), up to
``--max-bodies`` alive at once, with the connection id of the PEER's parent
(sshd's monitor), and the exit status and stdout go back. Past either cap
the client gets a "busy" refusal at once and denies. The helper's own log lines
are rate-limited per reason (log.RateLimitedLog). SIGTERM exits cleanly.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jit_hooks.host import paths
from jit_hooks.host.login import (
    authorized_keys,
    break_glass,
    frames,
    httppool,
    pam_account,
    pam_session,
    pamenv,
    transport,
)
from jit_hooks.host.login.config_cache import install as install_config_cache
from jit_hooks.host.login.hook import Invocation
from jit_hooks.host.login.log import RateLimitedLog

IDENT = "jit-hooksd"
HOOKS = {
    "authorized-keys": authorized_keys,
    "pam-account": pam_account,
    "pam-session": pam_session,
}
PAM_MODES = ("pam-account", "pam-session")
# Hook bodies alive at once (answered or not): past that, a request gets the "busy"
# refusal at once. A body is counted until it really ends, so bodies stuck past their
# answer can't pile up threads without bound.
MAX_BODIES = 256
# Connections being served at once (one thread each, most waiting on their body):
# past that, the accept loop itself answers "busy", without a thread.
MAX_CONNECTIONS = 512
READ_TIMEOUT = 5.0  # to receive a whole request, and to send the answer
BACKLOG = 1024  # a login storm must not find the listen queue full
# A body with no deadline of its own (e.g. stuck reading its config) is answered for
# after this: the longest budget an admin may configure.
BODY_LIMIT = paths.MAX_TIMEOUT
# Connections refused by the accept loop stay open this long (answer sent, our side
# shut for writing), so the client reads the answer before the close: closing a unix
# socket with unread request bytes resets it. At most MAX_PARKED wait at once.
PARK_SECONDS = 1.0
MAX_PARKED = 1024
# How often the watchdog looks at the running bodies' deadlines: a body is answered
# for at most this late. With no body for WATCH_IDLE it stops ticking until the next.
WATCH_TICK = 0.05
WATCH_IDLE = 10.0
_CRED = struct.Struct("3i")


class Refused(Exception):
    """A request the helper won't run; ``args[0]`` is the log reason."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    return _CRED.unpack(raw)


def parent_pid(pid: int) -> int:
    """Field 4 of /proc/PID/stat: the peer's parent, i.e. sshd's per-connection monitor."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        data = f.read()
    return int(data[data.rindex(")") + 2 :].split()[1])


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused("request_timeout")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(size - len(data), 65536))
        except TimeoutError:
            raise Refused("request_timeout") from None
        if not chunk:
            raise Refused("request_truncated")
        data += chunk
    return bytes(data)


def read_request(sock: socket.socket) -> tuple[str, bytes, list[str]]:
    """(mode, raw environ, argv) of one request frame; raises Refused if it is not one."""
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        size = frames.request_size(_recv_exact(sock, 8, deadline))
        mode, environ, argv = frames.decode_request(_recv_exact(sock, size, deadline))
    except frames.Garbled as e:
        raise Refused(e.args[0]) from None
    return mode, environ, [os.fsdecode(a) for a in argv]


class Run:
    """The helper's own state for one hook body it supervises (hook.Supervisor).

    The body runs on its connection's thread; the ``Watchdog`` thread watches the
    deadline the body declares (``deadline``) and, when it passes, answers for the
    body (``expire``): from then on the body is not live (its output and log lines
    are dropped) and its service connections (``attach``) are shut, so a drip or a
    hang can't keep it, or its socket, beyond the budget. ``finish`` settles which
    of the two answers.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deadline_at: float | None = None
        self.on_expiry: Callable[[], int] | None = None
        self.default_expiry: Callable[[], int] | None = None
        self.cancelled = False
        self.finished = False  # the body ended and its own answer goes out
        self.answering_thread: int | None = None
        self.out: list[str] = []
        self._conns: set[httppool.Cuttable] = set()
        # Set by the watchdog once its answer for this run went out (or failed to):
        # the connection's thread closes the socket only after that.
        self.answered = threading.Event()

    def live(self) -> bool:
        return not self.cancelled or threading.get_ident() == self.answering_thread

    def write(self, text: str) -> None:
        with self.lock:
            if self.live():
                self.out.append(text)

    @contextmanager
    def deadline(self, seconds: float, on_expiry: Callable[[], int] | None) -> Iterator[None]:
        with self.lock:
            self.deadline_at = time.monotonic() + seconds
            self.on_expiry = on_expiry
        try:
            yield
        finally:
            with self.lock:
                self.deadline_at = None
                self.on_expiry = None

    def attach(self, conn: httppool.Cuttable) -> None:
        """A service connection of the body, to cut if the run expires."""
        with self.lock:
            if self.cancelled:
                conn.cut()
                raise TimeoutError("answered already: hard deadline reached")
            self._conns.add(conn)

    def detach(self, conn: httppool.Cuttable) -> None:
        with self.lock:
            self._conns.discard(conn)

    def finish(self) -> bool:
        """The body ended: True if its own answer goes out (the watchdog did not answer for
        it); from then on ``expire`` does nothing."""
        with self.lock:
            self.finished = True
            return not self.cancelled

    def expire(self, now: float, limit: float) -> Callable[[], int] | None | bool:
        """If the body's deadline (or ``limit``) passed: cancel the run and return what
        answers for it (the expiry callback, or None: plain deny); else False."""
        with self.lock:
            due = (self.deadline_at is not None and now > self.deadline_at) or now > limit
            if not due or self.finished or self.cancelled:
                return False
            self.cancelled = True
            self.answering_thread = threading.get_ident()
            self.out.clear()
            for conn in self._conns:
                conn.cut()  # wakes the body's blocked read
            return self.on_expiry or self.default_expiry


class Watchdog:
    """One thread that answers for every body past its deadline (``Run.expire``).

    A body runs on its connection's thread (no thread of its own, no hand-off per
    request). This thread, started with the first request, looks at the running
    bodies every ``WATCH_TICK`` seconds; for one whose deadline (or ``BODY_LIMIT``)
    passed it gets the answer the body would give on timeout, sends it on the
    client's socket and ends the stream (the client has its answer at once), and
    leaves the body to end by itself: it is not live any more (output and log lines
    dropped, service connections cut) and keeps its ``bodies`` slot, and its
    connection's thread, until it really ends.

    The thread must not die: a body past its deadline would then hang its client
    until the thin client's own timeout. An exception while checking one body denies
    that body at once (it can't be watched, so it isn't trusted to finish) and the
    loop goes on; one elsewhere in a pass is logged and the next pass runs. Both are
    logged (``reason=watchdog_error``, rate-limited). Should the thread end anyway,
    the next ``add`` and the accept loop (``revive``) start it again.
    """

    def __init__(self, log: RateLimitedLog | None = None) -> None:
        self._lock = threading.Lock()
        self._runs: dict[Run, tuple[socket.socket, float]] = {}
        self._thread: threading.Thread | None = None
        self._parked = False
        self._wake = threading.Event()
        self._idle_since = time.monotonic()
        self._log = log

    def add(self, run: Run, sock: socket.socket, limit: float) -> None:
        """Watch ``run``; raises (RuntimeError) if the thread can't be started, and then
        ``run`` is not watched and the next ``add`` tries again."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._start()  # e.g. "can't start new thread" (TasksMax): nothing kept
            elif self._parked:
                self._parked = False
                self._wake.set()
            self._runs[run] = (sock, limit)

    def remove(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(run, None)

    def revive(self) -> None:
        """Start the thread again if it ended while bodies are watched (the accept loop
        asks between requests); if it can't be started now, the next call tries again."""
        thread = self._thread
        if thread is None or thread.is_alive():  # the usual case: no lock taken
            return
        with self._lock:
            if self._runs and self._thread is not None and not self._thread.is_alive():
                try:
                    self._start()
                except RuntimeError:
                    pass

    def _start(self) -> None:
        # Under self._lock.
        thread = threading.Thread(target=self._loop, daemon=True, name="watchdog")
        thread.start()
        self._thread = thread
        self._parked = False
        self._idle_since = time.monotonic()

    def _loop(self) -> None:
        while True:
            try:
                self._pass()
            except Exception as e:  # noqa: BLE001 - the next pass must run: see the class
                self._note(e)
                time.sleep(WATCH_TICK)

    def _pass(self) -> None:
        # A steady tick, not woken per request: a wake-up as each body starts would
        # compete with that body for the GIL on every login. After WATCH_IDLE with no
        # body it parks, and the first body after that wakes it.
        with self._lock:
            runs = list(self._runs.items())
            if runs:
                self._idle_since = time.monotonic()
            elif time.monotonic() - self._idle_since > WATCH_IDLE:
                self._parked = True
                self._wake.clear()
        if self._parked:
            self._wake.wait()
            self._idle_since = time.monotonic()
            return
        now = time.monotonic()
        for run, (sock, limit) in runs:
            try:
                self._check(run, sock, limit, now)
            except Exception as e:  # noqa: BLE001 - one body's failure: deny it, go on
                self._give_up(run, sock, e)
        time.sleep(WATCH_TICK)

    def _check(self, run: Run, sock: socket.socket, limit: float, now: float) -> None:
        expiry = run.expire(now, limit)
        if expiry is False:
            return
        self.remove(run)
        if not callable(expiry):
            _answer(run, sock, frames.encode_answer(1, b""))
            return
        # The callback logs (syslog can block ~1 s on a wedged /dev/log) and may
        # spool: on a thread of its own, so no other overdue body's answer waits
        # for it. Rare (a body past its deadline) and bounded by --max-bodies:
        # each of these bodies still holds its slot.
        try:
            threading.Thread(
                target=_answer_by, args=(run, sock, expiry), daemon=True, name="expiry"
            ).start()
        except RuntimeError:  # no thread to be had: deny now, then log
            _answer(run, sock, frames.encode_answer(1, b""))
            _quietly(expiry)
        # Nothing after a started expiry thread: _give_up must not answer twice.

    def _give_up(self, run: Run, sock: socket.socket, error: Exception) -> None:
        """Checking ``run`` failed: deny it now (unless its answer is out or its own
        finished body gives it), cut its service connections, stop watching it."""
        if not run.answered.is_set():
            with run.lock:
                body_answers = run.finished and not run.cancelled
                if not body_answers:
                    run.cancelled = True  # the body's own answer is not sent any more
                    run.answering_thread = threading.get_ident()
                    run.out.clear()
                conns = [] if body_answers else list(run._conns)
            for conn in conns:
                try:
                    conn.cut()
                except Exception:  # noqa: BLE001 - the deny goes out regardless
                    pass
            if not body_answers:
                _answer(run, sock, frames.encode_answer(1, b""))
        self.remove(run)
        self._note(error, decision="deny")

    def _note(self, error: BaseException, **fields: object) -> None:
        # After the answer: a line can block on a wedged /dev/log (see _check).
        if self._log is None:
            return
        try:
            what = f"{type(error).__name__}: {error}"[:200]
            self._log.warning(**fields, reason="watchdog_error", error=what)
        except Exception:  # noqa: BLE001 - logging must not end the watchdog
            pass


def _answer_by(run: Run, sock: socket.socket, expiry: Callable[[], int]) -> None:
    """Answer for an overdue ``run`` with what its expiry callback gives (any failure: deny)."""
    with run.lock:
        run.answering_thread = threading.get_ident()  # its writes and log lines count
    try:
        status = expiry()
        out = "".join(run.out).encode("utf-8", "replace")
        frame = frames.encode_answer(status, out)
    except Exception:  # noqa: BLE001 - whatever failed, the answer is a deny
        frame = frames.encode_answer(1, b"")
    _answer(run, sock, frame)


def _answer(run: Run, sock: socket.socket, frame: bytes) -> None:
    try:
        # Never blocks: an answer is a few bytes into a socket the client only reads
        # from; a client that isn't reading gets none.
        sock.setblocking(False)
        sock.send(frame)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        run.answered.set()


def _quietly(expiry: Callable[[], int]) -> None:
    try:
        expiry()
    except Exception:  # noqa: BLE001 - the answer went out already; this is its log line
        pass


class Server(socketserver.UnixStreamServer):
    """Accept loop: peer check, connection cap and refusals happen here, before any
    thread exists; each admitted connection then gets a thread (``serve_connection``)."""

    request_queue_size = BACKLOG

    def __init__(
        self,
        sock: socket.socket,
        log: RateLimitedLog,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_bodies: int = MAX_BODIES,
    ):
        super().__init__(sock.getsockname(), socketserver.BaseRequestHandler, False)
        self.socket.close()
        self.socket = sock
        self.log = log
        self.euid = os.geteuid()
        self.connections = threading.BoundedSemaphore(max_connections)
        self.bodies = threading.BoundedSemaphore(max_bodies)
        self.parked: collections.deque[tuple[float, socket.socket]] = collections.deque()
        self.watchdog = Watchdog(log)

    # -- the accept loop (one thread) ------------------------------------------

    def process_request(self, request, client_address) -> None:  # noqa: ANN001
        sock: socket.socket = request
        try:
            pid, uid, _gid = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        if uid != 0 and uid != self.euid:
            self.log.warning(decision="deny", reason="peer_not_allowed", peer_pid=pid, peer_uid=uid)
            self.park(sock, frames.encode_answer(1, b""))
            return
        if not self.connections.acquire(blocking=False):
            self.log.warning(decision="deny", reason="busy", limit="connections", peer_pid=pid)
            self.park(sock, frames.encode_refusal("busy"))
            return
        try:
            threading.Thread(
                target=self.serve_connection, args=(sock, pid, uid), daemon=True, name="conn"
            ).start()
        except RuntimeError:  # can't start a thread: out of memory or a ulimit
            self.connections.release()
            self.log.warning(decision="deny", reason="busy", limit="threads", peer_pid=pid)
            self.park(sock, frames.encode_refusal("busy"))

    def park(self, sock: socket.socket, frame: bytes) -> None:
        """Answer ``frame`` without blocking and keep the socket a moment (PARK_SECONDS)."""
        try:
            sock.setblocking(False)
            _drain(sock)
            sock.send(frame)  # a few bytes into an empty socket buffer: never blocks
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self.parked.append((time.monotonic(), sock))
        while len(self.parked) > MAX_PARKED:
            _close_drained(self.parked.popleft()[1])

    def service_actions(self) -> None:
        """Between requests and every poll interval: close parked sockets, report
        suppressed log lines."""
        now = time.monotonic()
        while self.parked and now - self.parked[0][0] >= PARK_SECONDS:
            _close_drained(self.parked.popleft()[1])
        self.log.flush()
        self.watchdog.revive()  # should its thread have died with bodies watched
        # Break-glass reports spooled during an outage (in a thread, at most once a minute).
        break_glass.flush_if_due()

    def shutdown_request(self, request) -> None:  # noqa: ANN001
        try:
            request.close()
        except OSError:
            pass

    # -- one connection (its own thread) ---------------------------------------

    def serve_connection(self, sock: socket.socket, pid: int, uid: int) -> None:
        try:
            self._serve(sock, pid, uid)
        except Exception:  # noqa: BLE001 - the client denies on a closed socket
            pass
        finally:
            sock.close()
            self.connections.release()

    def _serve(self, sock: socket.socket, pid: int, uid: int) -> None:
        log = self.log
        try:
            mode, environ, argv = read_request(sock)
            if uid != 0 and mode != "authorized-keys":
                raise Refused("peer_not_allowed")
            ppid = parent_pid(pid)
        except Refused as e:
            log.warning(decision="deny", reason=e.args[0], peer_pid=pid, peer_uid=uid)
            self._refuse(sock)
            return
        except (OSError, ValueError, IndexError):
            log.warning(decision="deny", reason="peer_gone", peer_pid=pid, peer_uid=uid)
            self._refuse(sock)
            return
        if not self.bodies.acquire(blocking=False):
            log.warning(decision="deny", reason="busy", limit="bodies", mode=mode, peer_pid=pid)
            self._send(sock, frames.encode_refusal("busy"))
            return
        answer = self.run_hook(mode, argv, environ, ppid, sock)
        if answer is None:
            return  # the watchdog answered for the body
        try:
            frame = frames.encode_answer(*answer)
        except ValueError:
            frame = frames.encode_answer(1, b"")
        self._send(sock, frame)

    def _refuse(self, sock: socket.socket) -> None:
        """Deny without running a hook; unread request bytes are read away first."""
        try:
            sock.setblocking(False)
            _drain(sock)
        except OSError:
            pass
        self._send(sock, frames.encode_answer(1, b""))

    def _send(self, sock: socket.socket, frame: bytes) -> None:
        try:
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(frame)
        except OSError:
            pass  # the client gave up; it denies by itself

    def run_hook(
        self, mode: str, argv: list[str], environ: bytes, ppid: int, sock: socket.socket
    ) -> tuple[int, bytes] | None:
        """Run hook ``mode`` on this thread, holding a ``bodies`` slot until it really ends,
        under the watchdog; (status, stdout), or None if the watchdog answered for it."""
        run = Run()
        try:
            entries = pamenv.parse_environ(environ) if mode in PAM_MODES else []
            inv = Invocation(argv, environ=entries, ppid=ppid, via="hooksd", supervisor=run)
        except BaseException:
            self.bodies.release()
            return 1, b""
        status = 1
        try:
            try:
                self.watchdog.add(run, sock, time.monotonic() + BODY_LIMIT)
            except Exception as e:  # noqa: BLE001 - no body runs unwatched: deny
                self.log.warning(decision="deny", reason="watchdog", mode=mode, error=str(e))
                return 1, b""
            with httppool.watching(run):
                status = HOOKS[mode].main(inv=inv)
        except BaseException:  # run() already turns failures into a deny
            status = 1
        finally:
            self.watchdog.remove(run)
            self.bodies.release()
        if not run.finish():
            run.answered.wait()  # the socket stays open until the watchdog's answer is out
            return None
        status = status if status in frames.STATUSES else 1
        return status, "".join(run.out).encode("utf-8", "replace")


def _drain(sock: socket.socket) -> None:
    """Read away what the client sent (non-blocking socket; at most one request's worth)."""
    for _ in range(frames.MAX_REQUEST // 65536 + 2):
        try:
            if not sock.recv(65536):
                return
        except BlockingIOError:
            return


def _close_drained(sock: socket.socket) -> None:
    try:
        _drain(sock)
    except OSError:
        pass
    sock.close()


def listening_socket(path: str) -> tuple[socket.socket, bool]:
    """(socket, whether we bound it): systemd's fd 3 if socket-activated, else ``path``, 0600."""
    if (
        os.environ.get("LISTEN_PID") == str(os.getpid())
        and int(os.environ.get("LISTEN_FDS", "0") or 0) >= 1
    ):
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        return socket.socket(fileno=3), False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SystemExit(f"{IDENT}: {path} exists and is not a socket")
        os.unlink(path)  # a stale socket of an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=IDENT, description=__doc__.split("\n")[0])
    parser.add_argument("--socket", default=paths.HOOKSD_SOCKET, help="unix socket to listen on")
    parser.add_argument(
        "--syslog-socket", default=paths.SYSLOG_SOCKET, help="where the helper's own lines go"
    )
    parser.add_argument(
        "--max-connections", type=_positive, default=MAX_CONNECTIONS,
        help="connections served at once; past that: refused as busy",
    )  # fmt: skip
    parser.add_argument(
        "--max-bodies", type=_positive, default=MAX_BODIES,
        help="hook bodies alive at once (answered or not); past that: refused as busy",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # Config, CA and token are read again only when one of them changes (config_cache.py).
    install_config_cache()
    log = RateLimitedLog(IDENT, args.syslog_socket)
    transport.enable_keepalive()
    sock, owned = listening_socket(args.socket)
    server = Server(sock, log, max_connections=args.max_connections, max_bodies=args.max_bodies)

    def stop(signum, frame):  # noqa: ANN001
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info(event="start", socket=sock.getsockname() or "fd3", uid=os.geteuid())
    try:
        server.serve_forever(poll_interval=0.5)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
        if owned:
            try:
                os.unlink(args.socket)
            except OSError:
                pass
        log.flush(force=True)
        log.info(event="stop")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
