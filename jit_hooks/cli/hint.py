"""`jit hint HOST LOGIN`: at ssh time, say on stderr when you hold no active approval.

Meant for an ssh_config ``Match exec`` line (packaging/requester/ssh_config.d/jit.conf,
docs/cli.md): ssh runs it before connecting, with stdin and stdout on /dev/null
and stderr on the terminal. It **always exits 1**, so the Match never applies and
ssh goes on exactly as it would without the snippet; the only effect is one line
on stderr when the service says you have no approval for LOGIN@HOST.

Bounded and quiet: at most ``BUDGET`` seconds in all (SIGALRM backstop over the
socket timeouts), and anything that goes wrong (not logged in, service
unreachable, TLS error, an answer it can't read) prints nothing at all: a hint
must never slow down or block a connection. It imports only the stdlib (no
click, no requests): it runs before every matching ssh (`python3 -X importtime`
figures in docs/cli.md).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jit_hooks.protocol import API_PREFIX

# Seconds for the whole hint (config, connect, TLS, answer): an ssh that waits
# longer than this for a hint is worse than no hint.
BUDGET = 1.0
# Never 0: ssh treats the Match as applying when the command exits 0.
EXIT = 1
MAX_ANSWER = 1024 * 1024


class NoHint(Exception):
    """Raised when the hint can't be decided (no config, no answer in time, bad answer)."""


def settings(environ: Mapping[str, str]) -> tuple[str, str, str | None]:
    """(url, token, ca_file) as `jit` would use them: config file, then JIT_* variables."""
    from pathlib import Path

    from jit_hooks.cli import userconfig
    from jit_hooks.errors import ConfigError

    path = environ.get(userconfig.ENV_CONFIG)
    try:
        data = userconfig.load(Path(path).expanduser() if path else userconfig.default_path())
    except ConfigError as e:
        raise NoHint(str(e)) from None
    url = environ.get("JIT_URL") or data.get("url")
    token = environ.get("JIT_TOKEN") or data.get("token")
    ca_file = environ.get("JIT_CA_FILE") or data.get("ca_file")
    if not url or not token:
        raise NoHint("not logged in")
    if any(c in token for c in "\r\n") or not token.isprintable():
        raise NoHint("malformed token")
    return url, token, os.path.expanduser(ca_file) if ca_file else None


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (main) thread after ``seconds``, whatever it is doing."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError("hint budget spent")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of the service URL; NoHint if it is not one."""
    scheme, sep, rest = url.partition("://")
    authority, _, prefix = rest.partition("/")
    if authority.startswith("["):  # an IPv6 literal, [::1]:8443
        host, _, after = authority[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else after
    else:
        host, _, port_text = authority.partition(":")
    if not sep or scheme not in ("https", "http") or not host or "@" in authority:
        raise NoHint("bad service URL")
    try:
        port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    except ValueError:
        raise NoHint("bad service URL") from None
    return scheme, host, port, ("/" + prefix).rstrip("/")


def _get(url: str, path: str, token: str, ca_file: str | None, timeout: float) -> bytes:
    """GET ``path`` under the service URL over HTTP/1.1 (Connection: close); the body of a
    200 answer. A plain socket, not http.client: it would cost the hint ~25 ms of imports."""
    import socket

    scheme, host, port, prefix = _split_url(url)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if scheme == "https":
            import ssl

            ctx = ssl.create_default_context(cafile=ca_file)
            sock = ctx.wrap_socket(sock, server_hostname=host)
        name = f"[{host}]" if ":" in host else host
        request = (
            f"GET {prefix}{path} HTTP/1.1\r\nHost: {name}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"
            "Connection: close\r\n\r\n"
        )
        sock.sendall(request.encode("ascii", "strict"))
        data = b""
        while len(data) <= MAX_ANSWER:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if not sep or len(data) > MAX_ANSWER or len(status) < 2 or status[1] != "200":
        raise NoHint("no 200 answer")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    return body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)  # ValueError: caught as no hint
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2 :]


def approved_requests(url: str, token: str, ca_file: str | None, timeout: float) -> list[dict]:
    """The caller's approved requests (GET /requests?scope=mine&state=approved)."""
    import json

    body = _get(url, f"{API_PREFIX}/requests?scope=mine&state=approved", token, ca_file, timeout)
    try:
        data = json.loads(body)
    except ValueError:
        raise NoHint("answer is not JSON") from None
    items = data.get("requests") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise NoHint("unexpected answer")
    return [r for r in items if isinstance(r, dict)]


def host_names(host: str) -> set[str]:
    """The names HOST may have on the service: as typed, and its first DNS label."""
    host = host.strip().lower().rstrip(".")
    return {host, host.split(".", 1)[0]}


def coverage(requests: list[dict], host: str, login: str, now: float) -> str:
    """ "yes" if an approval covers LOGIN@HOST now, "maybe" if only a label-selector
    approval for LOGIN might (the client can't see host labels), else "no"."""
    names = host_names(host)
    found = "no"
    for r in requests:
        if r.get("state") != "approved" or r.get("login") != login:
            continue
        starts, ends = r.get("starts_at"), r.get("ends_at")
        if not isinstance(ends, int) or ends <= now:
            continue
        if isinstance(starts, int) and starts > now:
            continue
        target = r.get("host")
        if isinstance(target, str) and target.lower() in names:
            return "yes"
        if not target and r.get("selector"):
            found = "maybe"
    return found


def _printable(text: str, limit: int = 255) -> str:
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text[:limit])


def message(host: str, login: str) -> str:
    """The hint line: what is missing and the exact command that asks for it."""
    import shlex

    h, u = _printable(host), _printable(login, 64)
    return (
        f"jit: no active approval for {u}@{h} - run: jit request {shlex.quote(h)} "
        f"--login {shlex.quote(u)} --duration 1h --reason '...' "
        f"(or: jit ssh {shlex.quote(h)} --as {shlex.quote(u)} --wait)"
    )


def hint(host: str, login: str, environ: Mapping[str, str], budget: float = BUDGET) -> str | None:
    """The line to print for LOGIN@HOST, or None (approved, maybe approved, or unknown)."""
    started = time.monotonic()
    try:
        with deadline(budget):
            url, token, ca_file = settings(environ)
            left = max(0.05, budget - (time.monotonic() - started))
            requests = approved_requests(url, token, ca_file, timeout=left)
    except (NoHint, OSError, ValueError, UnicodeError):
        return None  # TimeoutError and ssl.SSLError are OSErrors
    if coverage(requests, host, login, time.time()) != "no":
        return None
    return message(host, login)


def main(argv: list[str] | None = None) -> int:
    """``jit hint HOST LOGIN``: prints the hint if due; always exits EXIT (1)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2 or not args[0] or not args[1] or args[0].startswith("-"):
        if args[:1] in (["-h"], ["--help"]):
            print("usage: jit hint HOST LOGIN  (for ssh_config: Match exec \"jit hint '%n' '%r'\")")
        return EXIT
    line = hint(args[0], args[1], os.environ)
    if line is not None:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except OSError:
            pass
    return EXIT


if __name__ == "__main__":
    raise SystemExit(main())
