"""A throwaway PostgreSQL 15 cluster (Debian's server binaries) for tests and benchmarks.

`initdb` in a temp dir, a free port on 127.0.0.1, its own unix socket directory:
never the machine's own cluster, never port 5432. Runs as the `postgres` system
user (initdb refuses root). A streaming standby can be cloned from a primary
with `pg_basebackup`, made synchronous and promoted, for the failover tests
(tests/ha); :func:`multi_host_url` gives the libpq URL a replica uses to find
whichever of them is writable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jit_hooks.testing.service import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"


def available() -> bool:
    """Whether Debian's PostgreSQL 15 server binaries and the `postgres` user exist."""
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        return False
    return (PG_BIN / "initdb").exists() and (PG_BIN / "postgres").exists()


def _as_postgres() -> dict:
    pw = pwd.getpwnam(SUPERUSER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@dataclass
class PostgresCluster:
    """One PostgreSQL server process on 127.0.0.1:`port`, data in `root/data`."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    name: str = "primary"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, db: str = "postgres", *, user: str = SUPERUSER) -> str:
        """A SQLAlchemy URL for psycopg 3 over TCP on loopback."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{db}"

    def libpq_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------

    def init(self, *, extra_conf: str = "") -> PostgresCluster:
        self._prepare_root()
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
             "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
        )  # fmt: skip
        self._write_conf(extra_conf)
        # Loopback only, trust: a throwaway cluster reachable from this machine alone.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )
        return self

    def clone_standby(
        self, primary: PostgresCluster, *, app_name: str = "standby"
    ) -> PostgresCluster:
        """A streaming standby of `primary` (pg_basebackup -R writes standby.signal)."""
        self._prepare_root()
        self._run(
            [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", SUPERUSER, "-D", str(self.data), "-R", "-X", "stream", "--no-sync", "-c", "fast",
             "-d", f"application_name={app_name}"],
        )  # fmt: skip
        self._write_conf("")
        return self

    def start(self, timeout: float = 30.0) -> PostgresCluster:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data)],
            stdout=log, stderr=subprocess.STDOUT, **_as_postgres(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited: {self.log_path.read_text()[-3000:]}")
            r = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                capture_output=True,
            )
            if r.returncode == 0:
                return self
            time.sleep(0.1)
        raise AssertionError(f"postgres not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server; mode "fast" (clean), "immediate" (no checkpoint) or "kill" (-9)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT, "kill": signal.SIGKILL}[mode]
        children = _children(self.proc.pid)
        self.proc.send_signal(sig)
        if mode == "kill":
            # A crash takes every backend with it. A backend outliving its postmaster
            # keeps serving its client until it notices (tens of ms): it could still
            # answer, even commit, after "the primary died".
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if mode == "kill":
            # Wait until they are gone, so the port and shared memory are free for a restart.
            _wait_gone(children)
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        self.proc = None

    def kill(self) -> None:
        """kill -9 the postmaster and every backend at once (a crash: no checkpoint, no goodbye)."""
        self.stop(mode="kill")

    def make_synchronous(self, standby_names: str = "standby") -> None:
        """Commits wait for ``standby_names`` to have flushed them (synchronous_commit = on).

        Set with ALTER SYSTEM on this server only, after cloning: a standby cloned
        afterwards would inherit it and, once promoted, wait for a standby of its own.
        """
        self.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{standby_names}'")
        self.psql("ALTER SYSTEM SET synchronous_commit = 'on'")
        self.psql("SELECT pg_reload_conf()")

    def wait_streaming(
        self, app_name: str = "standby", *, sync: bool, timeout: float = 30.0
    ) -> None:
        """Wait until standby ``app_name`` streams from this server (as the sync standby)."""
        want = "sync" if sync else "async"
        deadline = time.monotonic() + timeout
        while True:
            state = self.psql(
                "SELECT state || ' ' || sync_state FROM pg_stat_replication"
                f" WHERE application_name = '{app_name}'"
            )
            if state == f"streaming {want}":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"standby {app_name!r} is {state or 'not connected'}")
            time.sleep(0.1)

    def in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"

    def promote(self, timeout: float = 30.0) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "promote", "-w",
                   "-t", str(int(timeout))])  # fmt: skip

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- SQL -------------------------------------------------------------------

    def psql(self, sql: str, *, db: str = "postgres") -> str:
        """Run SQL through psql; returns unaligned, tuples-only output."""
        r = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
             "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if r.returncode != 0:
            raise AssertionError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    # -- internals -------------------------------------------------------------

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pw = pwd.getpwnam(SUPERUSER)
        for p in (self.root, self.socket_dir):
            os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(p, 0o700)
        # The postgres user must be able to reach root/ (temp dirs are 0700 root).
        parent = self.root.parent
        while parent != parent.parent and str(parent).startswith(tempfile.gettempdir()):
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
            parent = parent.parent

    def _write_conf(self, extra: str) -> None:
        conf = self.data / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(
                "\n# jit-hooks test cluster\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = on\n"  # kill -9 tests must see real durability
                "max_connections = 200\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "hot_standby = on\n"
                "shared_buffers = 64MB\n"
                f"{extra}\n"
            )

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **_as_postgres())
        if r.returncode != 0:
            raise AssertionError(f"{cmd[0]} failed: {r.stdout}{r.stderr}")


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
        time.sleep(0.05)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def multi_host_url(clusters: list[PostgresCluster], db: str, **params: str) -> str:
    """One SQLAlchemy URL naming every cluster; libpq connects to the first writable one.

    SQLAlchemy's psycopg dialect takes the hosts as repeated ``host=HOST:PORT``
    query parameters (a single comma-separated ``host=a:1,b:2`` is not split
    into ports and fails to resolve).
    """
    query = "&".join(
        [f"host={c.libpq_host()}" for c in clusters]
        + [f"{k}={v}" for k, v in {"target_session_attrs": "read-write", **params}.items()]
    )
    return f"postgresql+psycopg://{SUPERUSER}@/{db}?{query}"


def make_cluster(base: Path | None = None, **kw) -> PostgresCluster:
    """An initialised (not yet started) cluster in a new temp dir."""
    root = Path(tempfile.mkdtemp(prefix="jit-pg-", dir=base))
    return PostgresCluster(root=root, **kw)
