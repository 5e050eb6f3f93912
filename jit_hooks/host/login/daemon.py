"""jit-hooksd: the resident helper that runs the hook bodies for the thin hook clients.

A login runs four hook processes; each used to pay ~10 ms of interpreter start,
~24 ms of imports and a TLS handshake. With the helper, each hook process is a
bare interpreter plus ``_socket`` (thin.py) and the helper, which has everything
imported already, runs the SAME hook body the process would (hook.Invocation
carries argv, the PAM environment, the parent pid and stdout).

    python3 -m jit_hooks.host.login.daemon [--socket PATH] [--syslog-socket PATH]

Listens on a unix stream socket (default paths.HOOKSD_SOCKET, created 0600), or
on fd 3 under systemd socket activation (LISTEN_PID/LISTEN_FDS). Runs as the
AKC user (jit-hooks). Per connection: SO_PEERCRED decides who may ask what
(root: every hook; the helper's own uid, i.e. sshd's AuthorizedKeysCommandUser:
the AKC only; anyone else is refused and logged); one bounded request (thin.py
has the framing) is read, the hook runs with the connection id of the PEER's
parent (sshd's monitor), and the exit status and stdout go back. Config and
token are read per request, as the hook process does. SIGTERM exits cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time

from jit_hooks.host import paths
from jit_hooks.host.login import authorized_keys, pam_account, pam_session, pamenv, thin, transport
from jit_hooks.host.login.hook import Invocation
from jit_hooks.host.login.log import HookLog

IDENT = "jit-hooksd"
HOOKS = {
    "authorized-keys": authorized_keys,
    "pam-account": pam_account,
    "pam-session": pam_session,
}
PAM_MODES = ("pam-account", "pam-session")
MAX_CONCURRENT = 256  # hook runs at once; past that: deny "helper busy"
READ_TIMEOUT = 5.0  # to receive a whole request, and to send the answer
BACKLOG = 1024  # a login storm must not find the listen queue full
# A body with no deadline of its own (e.g. stuck reading its config) is answered for
# after this: the longest budget an admin may configure.
BODY_LIMIT = paths.MAX_TIMEOUT
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
    head = _recv_exact(sock, 8, deadline)
    if head[:4] != thin.REQUEST_MAGIC:
        raise Refused("request_garbled")
    size = int.from_bytes(head[4:], "big")
    if size > thin.MAX_REQUEST:
        raise Refused("request_oversize")
    payload = _recv_exact(sock, size, deadline)
    fields, pos = [], 0
    while pos < len(payload):
        if pos + 4 > len(payload) or len(fields) > thin.MAX_ARGS + 2:
            raise Refused("request_garbled")
        n = int.from_bytes(payload[pos : pos + 4], "big")
        if pos + 4 + n > len(payload):
            raise Refused("request_garbled")
        fields.append(payload[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if len(fields) < 2:
        raise Refused("request_garbled")
    mode = fields[0].decode("ascii", "replace")
    if mode not in HOOKS:
        raise Refused("request_bad_mode")
    argv = [os.fsdecode(f) for f in fields[2:]]
    return mode, fields[1], argv


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        log = self.server.log
        try:
            pid, uid, _gid = peer_credentials(sock)
        except OSError:
            return
        try:
            try:
                mode, environ, argv = read_request(sock)
            finally:
                if uid != 0 and uid != self.server.euid:
                    raise Refused("peer_not_allowed")
            if uid != 0 and mode != "authorized-keys":
                raise Refused("peer_not_allowed")
            ppid = parent_pid(pid)
        except Refused as e:
            log.warning(decision="deny", reason=e.args[0], peer_pid=pid, peer_uid=uid)
            self._refuse()
            return
        except (OSError, ValueError, IndexError):
            log.warning(decision="deny", reason="peer_gone", peer_pid=pid, peer_uid=uid)
            self._refuse()
            return
        if not self.server.slots.acquire(blocking=False):
            log.warning(decision="deny", reason="busy", mode=mode, peer_pid=pid)
            self._answer(1, thin.USER_DENIAL if mode in PAM_MODES else b"")
            return
        try:
            status, out = self.server.run_hook(mode, argv, environ, ppid)
        finally:
            self.server.slots.release()
        self._answer(status, out)

    def _refuse(self) -> None:
        """Deny without running a hook. Unread request bytes are read away first: closing
        a unix socket with unread data resets the connection before the client reads."""
        sock = self.request
        try:
            sock.setblocking(False)
            for _ in range(64):
                if not sock.recv(65536):
                    break
        except OSError:
            pass
        self._answer(1, b"")

    def _answer(self, status: int, out: bytes) -> None:
        try:
            frame = thin.encode_answer(status, out)
        except ValueError:
            frame = thin.encode_answer(1, b"")
        try:
            self.request.settimeout(READ_TIMEOUT)
            self.request.sendall(frame)
        except OSError:
            pass  # the client gave up; it denies by itself


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG

    def __init__(self, sock: socket.socket, log: HookLog):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.log = log
        self.euid = os.geteuid()
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def run_hook(self, mode: str, argv: list[str], environ: bytes, ppid: int) -> tuple[int, bytes]:
        """Run hook ``mode`` in a worker thread; answer for it if its deadline passes."""
        out: list[str] = []
        entries = pamenv.parse_environ(environ) if mode in PAM_MODES else []
        inv = Invocation(argv, environ=entries, ppid=ppid, out=out.append, via="hooksd")
        result: list[int] = []
        done = threading.Event()

        def work() -> None:
            try:
                result.append(HOOKS[mode].main(inv=inv))
            except BaseException:  # run() already turns failures into a deny
                result.append(1)
            finally:
                done.set()

        threading.Thread(target=work, daemon=True, name=f"hook-{mode}").start()
        limit = time.monotonic() + BODY_LIMIT
        while not done.wait(0.05):
            now = time.monotonic()
            with inv.lock:
                expired = (inv.deadline_at is not None and now > inv.deadline_at) or now > limit
                if not expired or done.is_set():
                    continue
                # From here on the body's output and log lines are ignored.
                inv.cancelled = True
                inv.answering_thread = threading.get_ident()
                expiry = inv.on_expiry or inv.default_expiry
                out.clear()
            status = expiry() if expiry is not None else 1
            return status, "".join(out).encode("utf-8", "replace")
        status = result[0] if result and result[0] in thin.STATUSES else 1
        return status, "".join(out).encode("utf-8", "replace")


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
    args = parser.parse_args(argv)
    log = HookLog(IDENT, args.syslog_socket)
    keepalive = getattr(transport, "enable_keepalive", None)
    if callable(keepalive):
        keepalive()
    sock, owned = listening_socket(args.socket)
    server = Server(sock, log)

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
        log.info(event="stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
