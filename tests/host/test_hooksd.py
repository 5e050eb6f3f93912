"""jit-hooksd (host/daemon.py) driven by the real thin client (host/thin.py), real service.

The daemon runs as the AKC user (jit-hooks) on a socket in a temp dir, as it runs
on a host; each hook is a ``python3 -IS`` wrapper process like the packaged ones.
Every answer is compared byte for byte with the same hook run in-process (the
wrapper's fallback when no helper listens), and the daemon's log lines must be
the in-process lines plus ``via=hooksd``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jit_hooks.host import paths
from jit_hooks.host.login import frames, thin
from jit_hooks.testing.hooksd import HooksDaemon, wrapper_text
from jit_hooks.testing.keys import make_key
from jit_hooks.testing.seed import basic_world
from jit_hooks.testing.service import start_service
from jit_hooks.testing.sshd import ensure_hook_user
from jit_hooks.testing.syslog_sink import SyslogSink

REPO = str(Path(__file__).resolve().parent.parent.parent)
MODES = ("authorized-keys", "pam-account", "pam-session")
IDENTS = {m: "jit-" + m for m in MODES}
TRUSTED_BASE = Path("/var/lib/jit-hooks-test")
DENIAL = b"jit: access denied: approval service unavailable or host misconfigured\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv, jit-hooks user)")


class Env:
    """A host's worth of files in a 0755 temp dir, a real service, a real daemon."""

    def __init__(self, root: Path, svc, world, stranger):
        self.root, self.svc, self.world, self.stranger = root, svc, world, stranger
        self.sink = SyslogSink(root / "log.sock")
        ensure_hook_user()
        hook = pwd.getpwnam(paths.HOOK_USER)
        self.token = root / "host-token"
        self.token.write_text(world.host_tokens["web1"] + "\n")
        os.chown(self.token, 0, hook.pw_gid)
        os.chmod(self.token, 0o640)
        self.state = root / "state"
        self.state.mkdir(mode=0o700)
        os.chown(self.state, hook.pw_uid, hook.pw_gid)
        self.config = self.write_config("jit-hooks.toml", [svc.url])
        run_dir = root / "run"  # like /run/jit-hooks: the daemon's own directory
        run_dir.mkdir(mode=0o755)
        os.chown(run_dir, hook.pw_uid, hook.pw_gid)
        self.socket = str(run_dir / "hooksd.sock")
        for name, sock in (("bin", self.socket), ("fallback", str(root / "missing.sock"))):
            (root / name).mkdir(mode=0o755)
            for mode in MODES:
                path = root / name / mode
                path.write_text(wrapper_text(REPO, mode, sock))
                os.chmod(path, 0o755)
        self.daemon = HooksDaemon(
            REPO, self.socket, user=paths.HOOK_USER, syslog_socket=self.sink.path,
            log_path=root / "hooksd.log",
        ).start()  # fmt: skip

    def write_config(self, name: str, urls: list[str], total: float = 5.0) -> str:
        path = self.root / name
        url_list = ", ".join(f'"{u}"' for u in urls)
        path.write_text(
            f'[service]\nurls = [{url_list}]\ntoken_file = "{self.token}"\n'
            f"connect_timeout = {min(2.0, total)}\ntotal_timeout = {total}\n"
            f'[host]\nname = "web1"\n[break_glass]\naccounts = ["breakglass"]\n'
            f'[state]\ndir = "{self.state}"\n[log]\nsyslog_socket = "{self.sink.path}"\n'
        )
        os.chmod(path, 0o644)
        return str(path)

    def run(
        self,
        mode: str,
        *args: str,
        pam: dict | None = None,
        fallback: bool = False,
        wrapper: str | None = None,
        user: str | None = None,
        config: str | None = None,
    ) -> subprocess.CompletedProcess:
        cmd = [wrapper or str(self.root / ("fallback" if fallback else "bin") / mode)]
        cmd += ["--config", config or self.config, *args]
        if user:
            pw = pwd.getpwnam(user)
            ids = [f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
            cmd = ["setpriv", *ids, "--", *cmd]
        return subprocess.run(cmd, env=pam or {}, capture_output=True, timeout=60)

    def akc_args(self, key) -> tuple[str, ...]:
        return ("deploy", key.fingerprint, key.key_type, key.blob)

    def clear_state(self) -> None:
        for entry in self.state.iterdir():
            entry.unlink()

    def lines(self, ident: str, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.sink.messages(ident)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # nothing more should come
        return self.sink.messages(ident)

    def close(self) -> None:
        self.daemon.stop()
        self.sink.close()


def pam_env(pam_type: str, user: str = "deploy", auth_info: str | None = None) -> dict:
    env = {"PAM_TYPE": pam_type, "PAM_USER": user, "PAM_RHOST": "127.0.0.1", "PAM_SERVICE": "sshd"}
    if auth_info:
        env["SSH_AUTH_INFO_0"] = auth_info
    return env


@pytest.fixture(scope="module")
def env():
    # The hooks trust a config only if root alone can change it and every directory
    # above it (so not under /tmp): a root-owned 0755 directory, short for socket paths.
    TRUSTED_BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(TRUSTED_BASE, 0o755)
    root = Path(tempfile.mkdtemp(prefix="jhd", dir=TRUSTED_BASE))
    os.chmod(root, 0o755)
    svc = start_service(root / "server")
    e = None
    try:
        world = basic_world(svc, root)
        stranger = make_key(root, "stranger")  # registered nowhere
        e = Env(root, svc, world, stranger)
        yield e
    finally:
        if e:
            e.close()
        svc.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def host(env):
    if env.daemon.proc.poll() is not None:  # a test stopped it: a fresh one
        env.daemon.start()
        env.sink.wait_for("event=start", "jit-hooksd")
    env.clear_state()
    env.sink.clear()
    return env


def via_daemon_and_in_process(host, mode, *args, pam=None, before=None):
    """Run a hook through the daemon and in-process; both answers and log lines."""
    results = []
    for fallback in (False, True):
        if before:
            before()
        host.sink.clear()
        r = host.run(mode, *args, pam=pam, fallback=fallback)
        results.append((r, host.lines(IDENTS[mode], 1)))
    (d, d_lines), (p, p_lines) = results
    assert d_lines and p_lines
    assert all(line.endswith(" via=hooksd") for line in d_lines)
    assert all(line.endswith(" via=fallback") for line in p_lines)
    return d, p, d_lines, p_lines


def assert_same(d, p, d_lines, p_lines):
    """Same exit status and stdout bytes; same log lines but for the last field."""
    assert (d.returncode, d.stdout) == (p.returncode, p.stdout)
    assert [line.removesuffix(" via=hooksd") for line in d_lines] == [
        line.removesuffix(" via=fallback") for line in p_lines
    ]


def test_authorized_keys_allow_and_deny_match_the_in_process_hook(host):
    alice = host.world.keys["alice"]
    d, p, dl, pl = via_daemon_and_in_process(
        host, "authorized-keys", *host.akc_args(alice), before=host.clear_state
    )
    assert d.returncode == 0 and d.stdout.startswith(b'expiry-time="')
    assert d.stdout.endswith(f" {alice.key_type} {alice.blob} jit-request-1\n".encode())
    assert_same(d, p, dl, pl)
    assert "decision=allow" in dl[0]
    # The daemon (as jit-hooks) writes the connection record the account hook reads.
    host.clear_state()
    assert host.run("authorized-keys", *host.akc_args(alice)).stdout == d.stdout
    [record] = list(host.state.iterdir())
    assert record.stat().st_uid == pwd.getpwnam(paths.HOOK_USER).pw_uid

    d, p, dl, pl = via_daemon_and_in_process(host, "authorized-keys", *host.akc_args(host.stranger))
    assert (d.returncode, d.stdout) == (0, b"")
    assert_same(d, p, dl, pl)
    assert "reason=no_approval" in dl[0]


def test_pam_account_allow_and_deny_match(host):
    alice = host.world.keys["alice"]

    def record():  # what sshd's AKC run leaves for this connection
        host.clear_state()
        host.run("authorized-keys", *host.akc_args(alice))

    d, p, dl, pl = via_daemon_and_in_process(
        host, "pam-account", pam=pam_env("account"), before=record
    )
    assert (d.returncode, d.stdout) == (0, b"")
    assert_same(d, p, dl, pl)
    assert "decision=allow" in dl[0] and alice.fingerprint in dl[0]

    d, p, dl, pl = via_daemon_and_in_process(
        host, "pam-account", pam=pam_env("account", user="nobody"), before=host.clear_state
    )
    assert d.returncode == 1 and d.stdout.startswith(b"jit: access denied: ")
    assert_same(d, p, dl, pl)


def test_pam_session_open_and_close_match(host):
    alice = host.world.keys["alice"]
    info = f"publickey {alice.key_type} {alice.blob}"
    d, p, dl, pl = via_daemon_and_in_process(
        host, "pam-session", pam=pam_env("open_session", auth_info=info)
    )
    assert (d.returncode, d.stdout) == (0, b"")
    assert_same(d, p, dl, pl)
    d, p, dl, pl = via_daemon_and_in_process(
        host, "pam-session", pam=pam_env("close_session", auth_info=info)
    )
    assert d.returncode == 0 and "reported=yes" in dl[0]
    assert_same(d, p, dl, pl)
    # A key nobody approved: the session is refused, with the user's line.
    info = f"publickey {host.stranger.key_type} {host.stranger.blob}"
    d, p, dl, pl = via_daemon_and_in_process(
        host, "pam-session", pam=pam_env("open_session", auth_info=info)
    )
    assert d.returncode == 1 and d.stdout.startswith(b"jit: access denied: ")
    assert_same(d, p, dl, pl)


def test_duplicated_pam_items_last_wins_through_the_daemon(host):
    """The client forwards its raw environ; pam_exec's own (last) PAM_TYPE wins."""
    wrapper = str(host.root / "bin" / "pam-account")
    # An environment with PAM_TYPE twice: os.execve takes a mapping, so call execve(2).
    raw = [b"PAM_TYPE=account", b"PAM_USER=deploy", b"PAM_RHOST=127.0.0.1", b"PAM_TYPE=session"]
    script = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"args = [{wrapper!r}.encode(), b'--config', {host.config!r}.encode()]\n"
        f"envs = {raw!r}\n"
        "argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)\n"
        "envp = (ctypes.c_char_p * (len(envs) + 1))(*envs, None)\n"
        "libc.execve(args[0], argv, envp)\n"
        "sys.exit(99)\n"
    )
    r = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True, timeout=60)
    # PAM_TYPE=session (the last) is not "account": the account hook refuses to run.
    assert r.returncode == 1, r.stderr
    line = host.sink.wait_for("reason=wrong_pam_type", IDENTS["pam-account"])
    assert line.endswith("via=hooksd")


def test_peer_credentials(host):
    """Root: every hook; the AKC user: the AKC only; anyone else: refused and logged.

    The socket is 0600 (jit-hooks), so other users can't even connect (their wrapper
    falls back to the in-process hook, which can't read the token). To test the
    daemon's own check as well, this test opens the socket to everyone.
    """
    os.chmod(host.socket, 0o666)
    try:
        alice = host.world.keys["alice"]
        r = host.run("authorized-keys", *host.akc_args(alice), user=paths.HOOK_USER)
        assert r.returncode == 0 and r.stdout.endswith(f"{alice.blob} jit-request-1\n".encode())
        assert host.lines(IDENTS["authorized-keys"], 1)[0].endswith("via=hooksd")

        r = host.run("pam-account", pam=pam_env("account"), user=paths.HOOK_USER)
        assert (r.returncode, r.stdout) == (1, b"")
        uid = pwd.getpwnam(paths.HOOK_USER).pw_uid
        host.sink.wait_for(rf"reason=peer_not_allowed .*peer_uid={uid}", "jit-hooksd")

        for mode, pam in (("pam-session", pam_env("open_session")), ("authorized-keys", None)):
            args = () if pam else host.akc_args(alice)
            r = host.run(mode, *args, pam=pam, user="nobody")
            assert (r.returncode, r.stdout) == (1, b"")
        nobody = pwd.getpwnam("nobody").pw_uid

        def refused() -> int:
            return sum(f"peer_uid={nobody}" in line for line in host.sink.messages("jit-hooksd"))

        # The sink reads its datagrams on a thread of its own: give the last line time to land.
        deadline = time.monotonic() + 10
        while refused() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refused() == 2
        # No hook ran for the refused peers.
        assert host.sink.messages(IDENTS["pam-session"]) == []
        assert host.sink.messages(IDENTS["pam-account"]) == []
    finally:
        os.chmod(host.socket, 0o600)


def raw_exchange(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "request_garbled"),
        (frames.REQUEST_MAGIC + (frames.MAX_REQUEST + 1).to_bytes(4, "big"), "request_oversize"),
        (frames.REQUEST_MAGIC + (100).to_bytes(4, "big") + b"short", "request_truncated"),
        (frames.REQUEST_MAGIC + (8).to_bytes(4, "big") + (99).to_bytes(4, "big") + b"abcd",
         "request_garbled"),
        (frames.encode_request("rm-rf", [], b""), "request_bad_mode"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_and_the_daemon_keeps_serving(host, data, reason):
    assert frames.decode_answer(raw_exchange(host.socket, data)) == (1, b"")
    host.sink.wait_for(f"decision=deny reason={reason}", "jit-hooksd")
    alice = host.world.keys["alice"]
    r = host.run("authorized-keys", *host.akc_args(alice))
    assert r.returncode == 0 and alice.blob.encode() in r.stdout


class FakeHelper:
    """Fault injection: a socket that answers like a broken helper (can't be produced
    with the real daemon, whose answers are always well-formed)."""

    def __init__(self, path: str, answer: bytes | None):
        self.path, self.answer = path, answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            if self.answer is not None:
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


@pytest.mark.parametrize(
    "answer, error",
    [
        (None, "bad_answer_header"),  # closed without a word
        (b"HTTP/1.1 200 OK\r\n\r\n", "bad_answer_header"),
        (frames.ANSWER_MAGIC + bytes([7]) + (0).to_bytes(4, "big"), "bad_status"),
        (frames.encode_answer(0, b"ssh-ed25519 AAAA x\n")[:-3], "bad_answer_length"),
        (frames.encode_answer(0, b"ssh-ed25519 AAAA x\n") + b"extra", "bad_answer_length"),
    ],
)
@pytest.mark.parametrize("mode", ["authorized-keys", "pam-account"])
def test_a_broken_helper_answer_denies(host, answer, error, mode):
    path = str(host.root / "fake.sock")
    wrapper = host.root / "fake-wrapper"
    wrapper.write_text(wrapper_text(REPO, mode, path))
    os.chmod(wrapper, 0o755)
    fake = FakeHelper(path, answer)
    try:
        args = () if mode == "pam-account" else host.akc_args(host.world.keys["alice"])
        r = host.run(mode, *args, pam=pam_env("account"), wrapper=str(wrapper))
    finally:
        fake.close()
    assert r.returncode == 1
    assert r.stdout == (DENIAL if mode == "pam-account" else b"")
    line = host.sink.wait_for("decision=deny reason=hooksd", IDENTS[mode])
    assert f"error={error}" in line


def test_daemon_killed_mid_request_denies(host, tmp_path):
    """The service hangs, the daemon dies while the client waits: the client denies."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts (backlog) and never answers
    config = host.write_config("hang.toml", [f"http://127.0.0.1:{hang.getsockname()[1]}"], 20)
    try:
        proc = subprocess.Popen(
            [str(host.root / "bin" / "pam-account"), "--config", config],
            env=pam_env("account"),
            stdout=subprocess.PIPE,
        )
        time.sleep(1.0)  # the request is in the daemon, waiting on the service
        assert proc.poll() is None
        host.daemon.proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        hang.close()
    assert proc.returncode == 1 and out == DENIAL
    assert "error=bad_answer_header" in host.sink.wait_for("reason=hooksd", IDENTS["pam-account"])


def test_no_helper_falls_back_to_the_in_process_hook(host):
    alice = host.world.keys["alice"]
    r = host.run("authorized-keys", *host.akc_args(alice), fallback=True)
    assert r.returncode == 0 and alice.blob.encode() in r.stdout
    [line] = host.lines(IDENTS["authorized-keys"], 1)
    assert "decision=allow" in line and line.endswith(" via=fallback")
    assert host.sink.messages("jit-hooksd") == []


def test_sigterm_stops_the_daemon_and_removes_its_socket(host):
    assert host.daemon.stop() == 0
    assert not os.path.exists(host.socket)
    host.sink.wait_for("event=stop", "jit-hooksd")


def test_fifty_parallel_clients_all_get_the_right_answer(host):
    alice, stranger = host.world.keys["alice"], host.stranger

    def one(i: int):
        key = alice if i % 2 == 0 else stranger
        return key, host.run("authorized-keys", *host.akc_args(key))

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    for key, r in results:
        assert r.returncode == 0, r.stderr
        if key is alice:
            assert r.stdout.endswith(f" {alice.blob} jit-request-1\n".encode())
        else:
            assert r.stdout == b""
    lines = host.lines(IDENTS["authorized-keys"], 50)
    assert len(lines) == 50 and all(line.endswith("via=hooksd") for line in lines)


def test_thin_timeout_is_the_longest_budget_plus_one():
    assert thin.TIMEOUT == paths.MAX_TIMEOUT + 1


class TlsDrip:
    """A "service" that drips a TLS handshake record one byte at a time: the only way a
    hook's service call outlives its budget (each read is bounded, the handshake is
    not), so it meets the hook process's SIGALRM backstop or the helper's watchdog."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn: socket.socket) -> None:
        # A handshake record header announcing 16 KiB, then one byte every 0.1 s.
        with conn:
            try:
                conn.sendall(b"\x16\x03\x03\x40\x00")
                while not self.stop.wait(0.1):
                    conn.sendall(b"\x00")
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_budget_is_enforced_by_the_daemon_like_the_hard_deadline(host):
    drip = TlsDrip()
    config = host.write_config("drip.toml", [drip.url], total=1.0)
    try:
        results = []
        for fallback in (False, True):
            host.sink.clear()
            r = host.run("pam-account", pam=pam_env("account"), fallback=fallback, config=config)
            results.append((r, host.lines(IDENTS["pam-account"], 1)))
    finally:
        drip.close()
    (d, dl), (p, pl) = results
    assert d.returncode == 1 and d.stdout == DENIAL, host.sink.lines
    assert "reason=timeout" in dl[0] and dl[0].endswith(" via=hooksd")
    assert_same(d, p, dl, pl)
    # The late body said nothing more once the daemon had answered for it.
    time.sleep(1.0)
    assert len(host.sink.messages(IDENTS["pam-account"])) == 1


# -- robustness: peers checked before a thread, caps, bounded log ---------------------


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.fixture
def small_daemon(host):
    """A second helper on its own socket with small caps (the module's stays as it is)."""
    daemons: list[HooksDaemon] = []

    def start(*args: str) -> HooksDaemon:
        return _start_helper(host, daemons, "small", HooksDaemon, args=args)

    yield start
    for d in daemons:
        d.stop()


def _start_helper(host, started: list, name: str, cls: type[HooksDaemon], **kw) -> HooksDaemon:  # noqa: ANN001, ANN003
    """Another jit-hooksd (``cls``) on its own socket ``NAME<n>.sock``, started and awaited."""
    sock = str(host.root / "run" / f"{name}{len(started)}.sock")
    d = cls(
        REPO, sock, user=paths.HOOK_USER, syslog_socket=host.sink.path,
        log_path=host.root / f"{name}.log", **kw,
    ).start()  # fmt: skip
    started.append(d)
    host.sink.wait_for(f"event=start socket={sock}", "jit-hooksd")
    return d


CLIENTS = """
import socket, sys
path, count = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    socks.append(s)
print("connected", flush=True)
answers = []
for s in socks:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError as e:
        data = type(e).__name__.encode()
    answers.append(data)
sys.stdin.readline()  # hold every connection open until the test has looked
print(repr(answers), flush=True)
"""


def hold_connections(path: str, count: int, user: str | None = None) -> subprocess.Popen:
    """``count`` connections to ``path`` that send nothing; prints "connected", then,
    after a line on stdin, what each received (in order)."""
    cmd = ["/usr/bin/python3", "-I", "-c", CLIENTS, path, str(count)]
    if user:
        pw = pwd.getpwnam(user)
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "connected\n"
    return proc


def finish(proc: subprocess.Popen) -> list[bytes]:
    out, _ = proc.communicate("go\n", timeout=60)
    return eval(out)  # noqa: S307 - our own child's repr of a list of bytes


def peak_threads(pid: int, until: Callable[[], bool], timeout: float = 30) -> int:
    peak, deadline = 0, time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        peak = max(peak, threads_of(pid))
        time.sleep(0.01)
    return max(peak, threads_of(pid))


def test_refused_peers_get_no_thread_and_their_log_lines_are_bounded(host, small_daemon):
    """200 connections from a user who may not ask (socket opened to everyone for the
    test): each is refused by the accept loop itself, so the helper never runs more
    threads than at rest; its log says so in a bounded number of lines and counts the
    rest. (Before: a thread per connection, each waiting up to 5 s for a request, and
    one log line each.)"""
    d = small_daemon()
    os.chmod(d.socket_path, 0o666)
    at_rest = threads_of(d.proc.pid)
    nobody = pwd.getpwnam("nobody").pw_uid
    refused = f"reason=peer_not_allowed .*peer_uid={nobody}"

    def logged() -> list[str]:
        return [m for m in host.sink.messages("jit-hooksd") if f"peer_uid={nobody}" in m]

    proc = hold_connections(d.socket_path, 200, user="nobody")
    try:
        # Until the accept loop went through all 200 (the rate limit then counts them).
        peak = peak_threads(d.proc.pid, lambda: len(logged()) >= 20)
        host.sink.wait_for(refused, "jit-hooksd")
        answers = finish(proc)
    finally:
        proc.kill()
    assert answers == [frames.encode_answer(1, b"")] * 200
    # No thread per refused peer (the old helper peaked at at_rest + 200). The helper's
    # own background threads (the break-glass spool flush, the HTTP pool's reaper) may
    # start at any moment during the burst: they are not per connection.
    assert peak <= at_rest + 2
    assert d.stop() == 0  # SIGTERM: the helper reports what it suppressed, then stops
    host.sink.wait_for("event=stop", "jit-hooksd")
    lines = logged()
    assert 1 <= len(lines) <= 21  # the burst, and maybe one refilled token
    suppressed = [m for m in host.sink.messages("jit-hooksd") if "event=suppressed" in m]
    counted = sum(int(m.split("count=")[1].split()[0]) for m in suppressed)
    carried = sum(int(m.split("suppressed=")[1].split()[0]) for m in lines if "suppressed=" in m)
    assert len(lines) + counted + carried == 200  # every refusal is accounted for


def test_connections_past_the_cap_are_refused_at_once(host, small_daemon):
    """--max-connections 3: three silent connections hold a thread each; the next ones
    get the "busy" refusal from the accept loop without a thread, and a hook run then
    denies (PAM: the user's one line) with error=helper_busy."""
    d = small_daemon("--max-connections", "3")
    wrapper = host.root / "small-pam-account"
    wrapper.write_text(wrapper_text(REPO, "pam-account", d.socket_path))
    os.chmod(wrapper, 0o755)
    at_rest = threads_of(d.proc.pid)
    proc = hold_connections(d.socket_path, 10)  # as root: an allowed peer
    try:
        time.sleep(0.5)  # the three admitted connections are waiting for their request
        assert threads_of(d.proc.pid) <= at_rest + 3
        host.sink.clear()
        r = host.run("pam-account", pam=pam_env("account"), wrapper=str(wrapper))
        assert (r.returncode, r.stdout) == (1, DENIAL)
        assert "error=helper_busy" in host.sink.wait_for("reason=hooksd", IDENTS["pam-account"])
        answers = finish(proc)
    finally:
        proc.kill()
    # The first three waited for a request that never came; the rest were refused.
    assert answers[:3] == [frames.encode_answer(1, b"")] * 3
    assert answers[3:] == [frames.encode_refusal("busy")] * 7
    with pytest.raises(frames.Refusal, match="helper_busy"):
        frames.decode_answer(answers[3])
    host.sink.wait_for(r"reason=busy limit=connections", "jit-hooksd")
    # Slots come back: a normal run through this helper works again.
    alice = host.world.keys["alice"]
    akc = host.root / "small-akc"
    akc.write_text(wrapper_text(REPO, "authorized-keys", d.socket_path))
    os.chmod(akc, 0o755)
    r = host.run("authorized-keys", *host.akc_args(alice), wrapper=str(akc))
    assert r.returncode == 0 and alice.blob.encode() in r.stdout


class StuckBody:
    """Fault injection: a hook body that declares a short deadline and then stays stuck
    however the helper answers for it (what a body blocked in getaddrinfo or a kernel
    call would do). Can't be produced for real with the shipped bodies: their service
    connections are cut by the watchdog and the trust rule refuses a FIFO as config or
    token, so this stands in for the hooks module in an in-process helper."""

    def __init__(self):
        self.release = threading.Event()
        self.started = self.ended = 0

    def main(self, inv) -> int:  # noqa: ANN001 - hook.Invocation
        self.started += 1
        try:
            with inv.deadline(0.2):
                self.release.wait(60)
            inv.write("output\n")  # dropped if the helper answered already
            return 0
        finally:
            self.ended += 1


def ask(path: str, mode: str = "pam-account") -> bytes:
    return raw_exchange(path, frames.encode_request(mode, [], b""))


def test_a_body_stuck_past_its_answer_keeps_its_slot_until_it_really_ends(tmp_path, monkeypatch):
    from jit_hooks.host.login import daemon
    from jit_hooks.host.login.log import RateLimitedLog

    stuck = StuckBody()
    monkeypatch.setitem(daemon.HOOKS, "pam-account", stuck)
    sink = SyslogSink(tmp_path / "log.sock")
    sock, _owned = daemon.listening_socket(str(tmp_path / "h.sock"))
    server = daemon.Server(sock, RateLimitedLog("jit-hooksd", str(sink.path)), max_bodies=2)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        # Two bodies get stuck; each request is answered (deny) at its deadline anyway.
        assert frames.decode_answer(ask(str(tmp_path / "h.sock"))) == (1, b"")
        assert frames.decode_answer(ask(str(tmp_path / "h.sock"))) == (1, b"")
        assert stuck.ended == 0
        # Both slots are still held by the stuck bodies: the next request is refused at
        # once, and no third body thread starts.
        for _ in range(5):
            assert ask(str(tmp_path / "h.sock")) == frames.encode_refusal("busy")
        assert stuck.started == 2
        sink.wait_for("reason=busy limit=bodies", "jit-hooksd")
        # The bodies end (their late output goes nowhere) and their slots come back.
        stuck.release.set()
        for _ in range(500):
            if stuck.ended == 2:
                break
            time.sleep(0.01)
        assert stuck.ended == 2
        for _ in range(100):  # the next body is not stuck: release is set
            answer = ask(str(tmp_path / "h.sock"))
            if answer != frames.encode_refusal("busy"):
                break
            time.sleep(0.02)  # the slot is released just after the body's last line
        assert frames.decode_answer(answer) == (0, b"output\n")
        assert stuck.started == 3
    finally:
        server.shutdown()
        server.server_close()
        sink.close()


def test_watchdog_answers_a_body_past_its_deadline_also_after_parking(monkeypatch):
    """The watchdog answers for an overdue body on its socket (deny, then EOF); idle, it
    stops ticking, and the next body wakes it (a body must never go unwatched)."""
    from jit_hooks.host.login import daemon

    monkeypatch.setattr(daemon, "WATCH_IDLE", 0.1)
    dog = daemon.Watchdog()

    def overdue_body_is_answered() -> None:
        run = daemon.Run()
        ours, client = socket.socketpair()
        try:
            run.deadline_at = time.monotonic() + 0.05
            dog.add(run, ours, time.monotonic() + 30)
            assert run.answered.wait(10)
            client.settimeout(10)
            data = b""
            while chunk := client.recv(1024):
                data += chunk
            assert frames.decode_answer(data) == (1, b"")
            assert not run.finish()  # the body's own answer is not sent any more
        finally:
            ours.close()
            client.close()

    overdue_body_is_answered()
    for _ in range(200):
        if dog._parked:
            break
        time.sleep(0.01)
    assert dog._parked
    overdue_body_is_answered()


def test_a_watchdog_that_fails_to_start_denies_frees_the_slot_and_is_retried(tmp_path, monkeypatch):
    """Fault injection (a thread start refused, as under TasksMax, can't be arranged for
    one thread only): the first watchdog start raises. That request is denied and logged
    without running its body, its --max-bodies slot comes back, and the next request
    starts the watchdog, which answers for the body past its deadline."""
    from jit_hooks.host.login import daemon
    from jit_hooks.host.login.log import RateLimitedLog

    stuck = StuckBody()
    monkeypatch.setitem(daemon.HOOKS, "pam-account", stuck)
    real_start, refused = threading.Thread.start, []

    def start(thread: threading.Thread) -> None:
        if thread.name == "watchdog" and not refused:
            refused.append(thread)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    sink = SyslogSink(tmp_path / "log.sock")
    path = str(tmp_path / "h.sock")
    sock, _owned = daemon.listening_socket(path)
    server = daemon.Server(sock, RateLimitedLog("jit-hooksd", str(sink.path)), max_bodies=1)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        assert frames.decode_answer(ask(path)) == (1, b"")
        assert refused and stuck.started == 0  # no body ran unwatched
        sink.wait_for("decision=deny reason=watchdog", "jit-hooksd")
        # The one slot is free again and the watchdog runs: the stuck body is answered
        # (deny) at its deadline instead of the client waiting for the body.
        assert frames.decode_answer(ask(path)) == (1, b"")
        assert stuck.started == 1 and stuck.ended == 0
        assert server.watchdog._thread is not None and server.watchdog._thread.is_alive()
    finally:
        stuck.release.set()
        server.shutdown()
        server.server_close()
        sink.close()


class WedgedLogBody:
    """Fault injection: bodies stuck past a short deadline whose expiry callback (the
    deny and its syslog line) is slow for the first body only, as one syslog line is on
    a wedged /dev/log (HookLog waits up to 1 s per line); a wedged syslog socket that
    blocks exactly one caller can't be arranged for real."""

    def __init__(self):
        self.release = threading.Event()
        self.wedged = threading.Event()
        self.calls = 0

    def main(self, inv) -> int:  # noqa: ANN001 - hook.Invocation
        self.calls += 1
        first = self.calls == 1

        def expiry() -> int:
            if first:
                self.wedged.set()
                self.release.wait(60)
            inv.write("denied first\n" if first else "denied\n")
            return 1

        inv.supervisor.default_expiry = expiry
        with inv.deadline(0.2):
            self.release.wait(60)
        return 0


def test_a_slow_expiry_callback_delays_no_other_bodys_answer(tmp_path, monkeypatch):
    from jit_hooks.host.login import daemon
    from jit_hooks.host.login.log import RateLimitedLog

    body = WedgedLogBody()
    monkeypatch.setitem(daemon.HOOKS, "pam-account", body)
    path = str(tmp_path / "h.sock")
    sock, _owned = daemon.listening_socket(path)
    server = daemon.Server(sock, RateLimitedLog("jit-hooksd", str(tmp_path / "nolog")))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    first: list[bytes] = []
    asker = threading.Thread(target=lambda: first.append(ask(path)), daemon=True)
    try:
        asker.start()
        assert body.wedged.wait(30)  # the first body's callback is stuck in its log line
        # The second body, overdue while the first callback still blocks, is answered
        # with its own callback's deny (the old watchdog ran callbacks one after another:
        # this request timed out).
        assert frames.decode_answer(ask(path)) == (1, b"denied\n")
        assert asker.is_alive() and not first
        body.release.set()
        asker.join(30)
        assert [frames.decode_answer(a) for a in first] == [(1, b"denied first\n")]
    finally:
        body.release.set()
        server.shutdown()
        server.server_close()


# -- the watchdog survives a failing pass ----------------------------------------------

# Fault injection, run inside a real jit-hooksd process before its main(). (1) The first
# calls of Run.expire (the watchdog's check of one body) raise FAULTS: nothing in the
# shipped code raises there (locks, socket shutdowns whose OSError is caught), so a bug
# or a stray exception in a pass can't be produced for real. (2) pam-account is a body
# stuck past its 0.3 s deadline (as StuckBody; the shipped bodies' service calls are cut
# by the watchdog or end by their own budget): its expiry answer is "expired", and if
# nobody answers for it, it answers for itself after STUCK seconds with an allow.
WATCHDOG_FAULT = """
import time
from jit_hooks.host.login import daemon
_real, _faults = daemon.Run.expire, list(FAULTS)
def _expire(self, now, limit):
    if _faults:
        raise _faults.pop(0)("injected fault in the watchdog pass")
    return _real(self, now, limit)
daemon.Run.expire = _expire
class _Stuck:
    def main(self, inv):
        def expired():
            inv.write("expired\\n")
            return 1
        with inv.deadline(0.3, expired):
            time.sleep(STUCK)
        inv.write("late\\n")
        return 0
daemon.HOOKS["pam-account"] = _Stuck()
"""
STUCK = 10


class FaultyDaemon(HooksDaemon):
    """A real jit-hooksd (as jit-hooks, ``python3 -IS``) with WATCHDOG_FAULT injected."""

    def __init__(self, *args, faults: str, **kw):  # noqa: ANN002, ANN003
        super().__init__(*args, **kw)
        self.fault = WATCHDOG_FAULT.replace("FAULTS", faults).replace("STUCK", str(STUCK))

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("-c") + 1
        assert cmd[i].endswith("sys.exit(main())")
        cmd[i] = cmd[i].removesuffix("sys.exit(main())") + f"exec({self.fault!r}); sys.exit(main())"
        return cmd


@pytest.fixture
def faulty_daemon(host):
    started = []

    def start(faults: str) -> tuple[FaultyDaemon, str]:
        d = _start_helper(host, started, "faulty", FaultyDaemon, faults=faults)
        wrapper = host.root / f"faulty{len(started)}-pam-account"
        wrapper.write_text(wrapper_text(REPO, "pam-account", d.socket_path))
        os.chmod(wrapper, 0o755)
        return d, str(wrapper)

    yield start
    for d in started:
        d.stop()


def _stuck_body(host, wrapper: str) -> tuple[int, bytes]:
    r = host.run("pam-account", pam=pam_env("account"), wrapper=wrapper)
    return r.returncode, r.stdout


def test_a_failing_watchdog_pass_denies_that_body_and_the_watchdog_goes_on(host, faulty_daemon):
    """The watchdog's check of the first body raises once. That body is denied at once
    (it can't be watched) with one line from the helper, and the watchdog keeps running:
    the next stuck body gets its expiry answer. (Before: the exception ended the watchdog
    thread for good; each stuck body answered for itself when it ended: allowed.)"""
    d, wrapper = faulty_daemon("[RuntimeError]")
    assert _stuck_body(host, wrapper) == (1, b"")  # plain deny, not the body's late allow
    line = host.sink.wait_for("reason=watchdog_error", "jit-hooksd")
    assert "decision=deny" in line and "RuntimeError: injected fault" in line, line
    host.sink.clear()
    assert _stuck_body(host, wrapper) == (1, b"expired\n")
    assert _stuck_body(host, wrapper) == (1, b"expired\n")
    assert d.proc.poll() is None
    # One fault, one line: the later bodies were watched by the same, healthy loop.
    assert [m for m in host.sink.messages("jit-hooksd") if "watchdog_error" in m] == []


def test_a_dead_watchdog_thread_is_started_again(host, faulty_daemon):
    """An exception no pass catches (SystemExit: it ends the thread quietly) kills the
    watchdog while a body is stuck. The accept loop starts it again between requests and
    the new thread gives that body its expiry answer; later bodies are watched too.
    (Before: the dead thread was kept; each stuck body answered for itself: allowed.)"""
    d, wrapper = faulty_daemon("[SystemExit]")
    assert _stuck_body(host, wrapper) == (1, b"expired\n")
    assert _stuck_body(host, wrapper) == (1, b"expired\n")
    assert d.proc.poll() is None
