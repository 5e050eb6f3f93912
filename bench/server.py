"""jit-server plus one no-op route, the floor of P3 (same app, middleware and uvicorn settings).

    python -m bench.server --data-dir DIR --listen 127.0.0.1:PORT

``GET /bench/noop`` goes through everything a hook call goes through (uvicorn,
the app's middleware, routing, a sync handler in the thread pool, JSON
response) except authentication, the database and the decision itself. The
uvicorn settings are those of `jit-server serve` (jit_hooks/cli/server.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.utils.service import Service

NOOP_PATH = "/bench/noop"
REPO = Path(__file__).resolve().parent.parent


class BenchService(Service):
    """tests/utils/service.py's Service, with ``python -m bench.server`` as the process."""

    extra_args: tuple[str, ...] = ()

    def start(self) -> None:
        self.admin("db", "upgrade")
        self.log_path = self.data_dir / "server.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.server", "--data-dir", str(self.data_dir),
                 "--listen", f"127.0.0.1:{self.port}", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench server exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + NOOP_PATH, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"bench server did not come up: {self.log_path.read_text()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.server")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument(
        "--pool-size",
        type=int,
        default=0,
        help="experiment: SQLAlchemy pool of exactly N connections (0: the service's default)",
    )
    a = p.parse_args(argv)
    import uvicorn

    if a.pool_size:
        import functools

        import sqlalchemy

        from jit_hooks.server import db

        db.create_engine = functools.partial(
            sqlalchemy.create_engine, pool_size=a.pool_size, max_overflow=0, pool_timeout=10
        )

    from jit_hooks.server.app import create_app
    from jit_hooks.server.settings import Settings

    app = create_app(Settings.from_options(data_dir=a.data_dir))

    @app.get(NOOP_PATH)
    def noop() -> dict:
        return {"status": "ok"}

    host, _, port = a.listen.rpartition(":")
    uvicorn.run(app, host=host, port=int(port), log_level="info", access_log=False,
                server_header=False, proxy_headers=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
