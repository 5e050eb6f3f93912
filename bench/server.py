"""jit-server plus one no-op route, the floor of P3 (same app, middleware and uvicorn settings).

    python -m bench.server --data-dir DIR --listen 127.0.0.1:PORT [--tls-cert F --tls-key F]

``GET /bench/noop`` goes through everything a hook call goes through (uvicorn,
the app's middleware, routing, an ``async def`` LeanRoute on the event loop
like the login-path hooks, JSON through a response model) except
authentication, the database and the decision itself. The uvicorn settings
are those of `jit-server serve` (jit_hooks/server/cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jit_hooks.testing.service import Service

NOOP_PATH = "/bench/noop"
REPO = Path(__file__).resolve().parent.parent


class BenchService(Service):
    """jit_hooks/testing/service.py's Service, with ``python -m bench.server`` as the process.

    With ``tls`` = (cert, key, ca) it serves HTTPS like production, and talks to
    itself trusting ``ca``.
    """

    extra_args: tuple[str, ...] = ()
    tls: tuple[Path, Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else None

    def call(self, method: str, path: str, token: str | None = None, body=None):  # noqa: ANN001
        """One HTTP(S) call; returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._context()) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        return status, (json.loads(raw) if raw else None)

    def get_text(self, path: str) -> str:
        """GET a non-JSON page (e.g. /metrics)."""
        with urllib.request.urlopen(self.url + path, timeout=10, context=self._context()) as r:
            return r.read().decode()

    def start(self) -> None:
        self.admin("db", "upgrade")
        self.log_path = self.data_dir / "server.log"
        tls_args = (
            ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])] if self.tls else []
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.server", "--data-dir", str(self.data_dir),
                 "--listen", f"127.0.0.1:{self.port}", *self.extra_args, *tls_args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench server exited: {self.log_path.read_text()}")
            try:
                ctx = self._context()
                with urllib.request.urlopen(self.url + NOOP_PATH, timeout=1, context=ctx) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"bench server did not come up: {self.log_path.read_text()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.server")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument(
        "--pool-size",
        type=int,
        default=0,
        help="experiment: SQLite pool of exactly N connections (0: the service's default)",
    )
    p.add_argument(
        "--no-hook-audit",
        action="store_true",
        help="experiment only (never a real deployment): hook decisions are not audited, "
        "to measure what the audit write costs",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (jit-server serve --workers)",
    )
    p.add_argument(
        "--h11-asyncio",
        action="store_true",
        help="experiment: uvicorn's pure-Python h11 parser and the stdlib asyncio loop "
        "(what `jit-server serve` used before httptools + uvloop)",
    )
    a = p.parse_args(argv)
    import uvicorn

    host, _, port = a.listen.rpartition(":")
    if a.workers > 1:
        # As `jit-server serve --workers N`: each spawned worker builds the app itself.
        os.environ[_WORKER_ENV] = json.dumps(vars(a))
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=a.workers, host=host,
                    port=int(port), ssl_certfile=a.tls_cert, ssl_keyfile=a.tls_key,
                    log_level="info", access_log=False, server_header=False,
                    proxy_headers=False, **_uvicorn_options(a))  # fmt: skip
        return 0
    app = _app(a)
    uvicorn.run(app, host=host, port=int(port), ssl_certfile=a.tls_cert, ssl_keyfile=a.tls_key,
                log_level="info", access_log=False, server_header=False,
                proxy_headers=False, **_uvicorn_options(a))  # fmt: skip
    return 0


_WORKER_ENV = "JIT_BENCH_SERVER_ARGS"


def _uvicorn_options(a: argparse.Namespace) -> dict:
    """Those of `jit-server serve`, or h11 + asyncio for the --h11-asyncio experiment."""
    from jit_hooks.server.workers import NoDelayH11Protocol, uvicorn_options

    if a.h11_asyncio:
        return {"http": NoDelayH11Protocol, "loop": "asyncio"}
    return uvicorn_options()


def worker_app():  # noqa: ANN201
    """The app of one worker process (uvicorn's factory)."""
    return _app(argparse.Namespace(**json.loads(os.environ[_WORKER_ENV])))


def _app(a: argparse.Namespace):  # noqa: ANN202
    """The service's app with the experiment flags applied, plus the no-op route."""

    if a.no_hook_audit:
        from jit_hooks.server import decisions

        decisions._record = lambda *args, **kwargs: None  # type: ignore[assignment]

    if a.pool_size:
        from jit_hooks.server import db

        db.SQLITE_POOL = {"pool_size": a.pool_size, "max_overflow": 0, "pool_timeout": 10}

    from jit_hooks.server.app import create_app
    from jit_hooks.server.leanroute import LeanRoute
    from jit_hooks.server.settings import Settings

    app = create_app(Settings.from_options(data_dir=a.data_dir))

    # The same kind of route as the login-path hooks (routes/hooks.py): ``async
    # def`` and a LeanRoute (FastAPI's per-request machinery skipped the same way).
    async def noop() -> dict:
        return {"status": "ok"}

    app.router.add_api_route(NOOP_PATH, noop, methods=["GET"], route_class_override=LeanRoute)

    return app


if __name__ == "__main__":
    sys.exit(main())
