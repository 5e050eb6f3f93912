"""Local notification receivers on 127.0.0.1 (tests and the demo): a webhook and an SMTP inbox.

The webhook receiver checks each delivery's HMAC signature the way a real
receiver would (jit_hooks.server.notify.signing.verify) and can misbehave on
purpose: answer 500 to the first attempts of each delivery, or hang.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jit_hooks.server.notify import signing


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """``mode``: "ok"; "fail_first" (500 to the first ``failures`` tries of each id); "hang"."""

    secret: str | None = None
    mode: str = "ok"
    failures: int = 1
    deliveries: list[Delivery] = field(default_factory=list)
    _tries: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WebhookReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner._handle(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        verified = False
        if self.secret is not None:
            try:
                signing.verify(
                    self.secret, h.headers.get(signing.HEADER, ""), body, int(time.time())
                )
                verified = True
            except signing.BadSignature:
                verified = False
        if self.mode == "hang":
            self._record(h, body, verified, 0)
            self._stop.wait()
            return
        delivery_id = h.headers.get("X-Jit-Delivery") or body.decode(errors="replace")
        with self._lock:
            self._tries[delivery_id] = self._tries.get(delivery_id, 0) + 1
            tries = self._tries[delivery_id]
        status = 500 if self.mode == "fail_first" and tries <= self.failures else 200
        if self.secret is not None and not verified:
            status = 401
        self._record(h, body, verified, status)
        h.send_response(status)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"ok")

    def _record(self, h: BaseHTTPRequestHandler, body: bytes, verified: bool, status: int) -> None:
        with self._lock:
            self.deliveries.append(
                Delivery(
                    h.path, {k.lower(): v for k, v in h.headers.items()}, body, verified, status
                )
            )

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.status == 200]

    def wait_for(self, pred, timeout: float = 30.0) -> list[Delivery]:  # noqa: ANN001
        """Wait until ``pred(accepted deliveries)`` holds; return them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.accepted()
            if pred(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met; got {len(got)} deliveries")
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


class SmtpInbox:
    """An aiosmtpd server on 127.0.0.1 keeping every message it receives."""

    def __init__(
        self, *, tls: tuple[Any, Any] | None = None, login: tuple[str, str] | None = None
    ) -> None:
        """``tls``: (cert, key) files, STARTTLS then required; ``login``: (user, password)."""
        import ssl
        from email import message_from_bytes, policy

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[Any] = []
        self.logins: list[str] = []
        inbox = self

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
            ok = login is not None and (auth_data.login, auth_data.password) == (
                login[0].encode(), login[1].encode(),
            )  # fmt: skip
            if ok:
                inbox.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802
                msg = message_from_bytes(envelope.content, policy=policy.default)
                inbox.messages.append((list(envelope.rcpt_tos), msg))
                return "250 OK"

        from jit_hooks.testing.service import free_port

        self.port = free_port()
        kw: dict[str, Any] = {}
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            kw.update(tls_context=ctx, require_starttls=True)
        if login is not None:
            kw.update(authenticator=authenticate, auth_require_tls=tls is not None)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)

    def start(self) -> SmtpInbox:
        self.controller.start()
        return self

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"inbox: {len(self.messages)} of {n} messages")
            time.sleep(0.1)
        return list(self.messages)

    def stop(self) -> None:
        self.controller.stop()
