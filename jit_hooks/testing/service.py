"""A real jit-server process over real HTTP on 127.0.0.1, for tests and the demo."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Where start_service() puts a service's data when no database URL is given:
# None means SQLite in its data dir. The test suites' backend fixture
# (tests/utils/backends.py) sets it to a factory of fresh PostgreSQL databases
# for the PostgreSQL variant of every test.
database_factory: Callable[[], str] | None = None

# A fresh SQLite service starts from a copy of one migrated database per test
# process (see _sqlite_template) instead of running `jit-server db upgrade` in a
# process of its own: that process (interpreter, Alembic, every migration) took
# 0.5 s of a service start on a quiet machine, 1.3 s of 3.9 s on a busy one, and the
# suite starts a few hundred services.
_template: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """Handle on a running service: its URL, data dir and an admin CLI runner."""

    data_dir: Path
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    env: dict = field(default_factory=dict)
    serve_args: tuple[str, ...] = ()  # extra `serve` options, e.g. ("--workers", "2")
    database_url: str | None = None  # None: SQLite in data_dir/jit.db
    # The database is already at head (a copy of a migrated template): the next
    # start() serves it without `db upgrade`. Restarts run the upgrade as before.
    migrated: bool = False

    @property
    def backend(self) -> str:
        return "sqlite" if self.database_url is None else self.database_url.split(":")[0]

    def db_args(self) -> list[str]:
        return [] if self.database_url is None else ["--database-url", self.database_url]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, *args: str, check: bool = True, input: str | None = None) -> str:
        """Run `jit-server --data-dir DIR ARGS...` and return its stdout."""
        cmd = [
            sys.executable,
            "-m",
            "jit_hooks.server.cli",
            "--data-dir",
            str(self.data_dir),
            *self.db_args(),
            *args,
        ]
        r = subprocess.run(
            cmd, capture_output=True, text=True, input=input, timeout=60, env=self.env
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r.stdout

    def start(self) -> None:
        if not self.migrated:
            self.admin("db", "upgrade")
        self.migrated = False
        self.log_path = self.data_dir / "server.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jit_hooks.server.cli",
                "--data-dir",
                str(self.data_dir),
                *self.db_args(),
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.serve_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jit-server exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                # A refused connect costs nothing: poll often, as a service is
                # started for most tests and each wait rounds up to this step.
                time.sleep(0.02)
        raise AssertionError(f"jit-server did not become healthy: {self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Run one SQL statement on the service's database (tests inspect or tamper).

        ``?`` placeholders on both backends; booleans read as 0/1 on both.
        """
        if self.database_url is None:
            import sqlite3

            conn = sqlite3.connect(self.data_dir / "jit.db", timeout=10)
            try:
                with conn:
                    return conn.execute(query, params).fetchall()
            finally:
                conn.close()
        import psycopg

        url = self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True) as pg:
            if params:
                # PostgreSQL text cannot hold NUL, so no stored value contains one; a
                # probe for one (hostile input tests) becomes U+FFFD, which matches
                # no stored value either, instead of an error from the driver.
                params = tuple(
                    p.replace("\x00", "\ufffd") if isinstance(p, str) else p for p in params
                )
                cur = pg.execute(query.replace("%", "%%").replace("?", "%s"), params)
            else:
                cur = pg.execute(query)
            rows = cur.fetchall() if cur.description else []
        return [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in rows]

    # Older name, from when the service's database was always SQLite.
    sqlite = sql

    def call(self, method: str, path: str, token: str | None = None, body=None):
        """One HTTP call; returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        return status, (json.loads(raw) if raw else None)


def start_service(
    data_dir: Path,
    port: int | None = None,
    *,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Service:
    """A running service on a fresh database: ``database_url``, or the suite's default.

    ``env`` adds to (or overrides) this process's environment for the service.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {})}
    migrated = False
    if database_url is None and database_factory is not None:
        database_url = database_factory()  # a copy of a migrated template (backends.py)
        migrated = True
    elif database_url is None and not any(k in env for k in ("JIT_DATABASE_URL", "JIT_DATA_DIR")):
        migrated = _copy_sqlite_template(data_dir / "jit.db")
    svc = Service(
        data_dir=data_dir,
        port=port or free_port(),
        env=env,
        database_url=database_url,
        migrated=migrated,
    )
    svc.start()
    return svc


def _sqlite_template() -> Path:
    """This process's migrated SQLite database, made once by `jit-server db upgrade`."""
    global _template
    if _template is None or not _template.exists():
        root = Path(tempfile.mkdtemp(prefix="jit-sqlite-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        Service(data_dir=root, port=0, env=dict(os.environ)).admin("db", "upgrade")
        # The upgrade's last connection closed, so SQLite checkpointed and removed
        # the WAL: the one file holds the whole database (WAL mode is in its header).
        if any(root.glob("jit.db-*")):
            raise AssertionError(f"template database left side files: {list(root.iterdir())}")
        _template = root / "jit.db"
    return _template


def _copy_sqlite_template(db: Path) -> bool:
    """A fresh data dir's jit.db as `db upgrade` makes it (0600, at head); False if one exists."""
    if db.exists() or any(db.parent.glob(db.name + "-*")):
        return False
    data = _sqlite_template().read_bytes()
    fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True
