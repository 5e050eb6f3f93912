"""A notification receiver answering 3xx: the redirect is never followed, nor counted delivered.

Review finding (urllib's default opener followed a 302 to any address the receiver named,
as a GET to an internal URL, and the outbox marked the row delivered).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.server.test_notify import _config, _notified_world


def _server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_a_302_is_not_followed_and_the_row_stays_undelivered(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []

    class Target(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(("target", self.command, self.path))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    target = _server(Target)

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(("receiver", self.command, self.path))
            self.send_response(302)
            self.send_header(
                "Location", f"http://127.0.0.1:{target.server_port}/internal/admin?x=1"
            )
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    recv = _server(Redirecting)
    w = _notified_world(tmp_path, _config(webhook=f"http://127.0.0.1:{recv.server_port}/hook"))
    try:
        status, req = w.request()
        assert status == 201, req
        # Retried (base 0.2 s, cap 1 s): wait for a few attempts of the one row.
        deadline = time.monotonic() + 60
        rows: list = []
        while time.monotonic() < deadline:
            rows = w.svc.sql(
                "SELECT attempts, delivered_at, last_error FROM notify_outbox "
                "WHERE channel = 'hook' AND event = 'request.created'"
            )
            if rows and (rows[0][0] >= 3 or rows[0][1] is not None):
                break
            time.sleep(0.2)
        assert rows and rows[0][0] >= 3, rows
        attempts, delivered_at, last_error = rows[0]
        assert delivered_at is None
        assert "302" in (last_error or "")
        assert [s for s in seen if s[0] == "target"] == []  # nothing followed the Location
        assert len([s for s in seen if s[0] == "receiver"]) >= 3
    finally:
        w.svc.stop()
        recv.shutdown()
        target.shutdown()
