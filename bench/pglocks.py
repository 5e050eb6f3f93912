"""Lock waits in a PostgreSQL cluster during a benchmark, seen two ways.

* ``LockSampler``: a thread polls ``pg_locks`` for ungranted locks every few
  milliseconds (its own backend, its own connection) and counts wait episodes:
  one (waiting pid, lock) pair seen in consecutive samples is one wait. Catches
  short waits, but only those that span a sample.
* ``LockWaitLog``: the cluster runs with ``log_lock_waits = on`` and a small
  ``deadlock_timeout``; every wait longer than that is logged by PostgreSQL
  itself ("process N still waiting for ShareLock on transaction M after 5.1
  ms") with the waiting statement. Misses nothing longer than the timeout.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path

# Settings for the cluster's postgresql.conf (PostgresCluster.init(extra_conf=...)).
DEADLOCK_TIMEOUT_MS = 5
LOCK_LOG_CONF = f"log_lock_waits = on\ndeadlock_timeout = '{DEADLOCK_TIMEOUT_MS}ms'\n"

_UNGRANTED = """
SELECT l.pid, l.locktype, l.mode,
       coalesce(l.relation::regclass::text, ''), l.page, l.tuple,
       coalesce(l.transactionid::text, ''), coalesce(l.objid::text, ''),
       left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 100)
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted
"""


class LockSampler:
    """Polls pg_locks every ``interval`` s; counts per bucket (the case under load)."""

    def __init__(self, conninfo: str, *, interval: float = 0.005) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.backend_pid: int = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.interval = interval
        self.bucket: str | None = None  # set by the benchmark around each load run
        self.samples: Counter[str] = Counter()
        self.waits: Counter[str] = Counter()  # wait episodes per bucket
        self.kinds: dict[str, Counter[str]] = {}  # per bucket: "locktype mode on what"
        self._prev: set[tuple] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-lock-sampler", daemon=True)

    def start(self) -> LockSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            bucket = self.bucket
            rows = self.conn.execute(_UNGRANTED).fetchall()
            if bucket is not None:
                self.samples[bucket] += 1
                now = set()
                for pid, locktype, mode, rel, page, tup, xid, objid, query in rows:
                    if pid == self.backend_pid:
                        continue
                    target = rel + (f" ({page},{tup})" if tup is not None else "") or xid or objid
                    key = (pid, locktype, mode, target)
                    now.add(key)
                    if key not in self._prev:
                        self.waits[bucket] += 1
                        # A row lock wait is a wait for the holder's transaction: which
                        # row shows in the waiter's statement, not in the xid.
                        what = "a transaction" if locktype == "transactionid" else target
                        kind = f"{locktype} {mode} on {what or '?'}: {query}"
                        self.kinds.setdefault(bucket, Counter())[kind] += 1
                self._prev = now
            else:
                self._prev = set()
            time.sleep(self.interval)

    def report(self, bucket: str) -> dict:
        return {
            "samples": self.samples[bucket],
            "interval_ms": self.interval * 1000,
            "waits": self.waits[bucket],
            "top": dict(self.kinds.get(bucket, Counter()).most_common(5)),
        }


_WAIT = re.compile(r"\[(\d+)\].*?LOG:\s+process \d+ still waiting for (.+?) after ([\d.]+) ms")
_STATEMENT = re.compile(r"\[(\d+)\].*?STATEMENT:\s+(.*)")
_ERROR = re.compile(r"\[\d+\].*?(?:ERROR|FATAL):\s+(.*)")


class LockWaitLog:
    """Counts PostgreSQL's own "still waiting for" (and ERROR) log lines since the last read."""

    def __init__(self, log_path: Path) -> None:
        self.path = log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0

    def read(self) -> dict:
        """Waits logged since the previous call: count and the most common (lock, statement)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            raw = f.read()
        # Only whole lines: a line being written now is read next time.
        raw = raw[: raw.rfind(b"\n") + 1]
        self.offset += len(raw)
        waits, kinds, errors = 0, Counter(), Counter()
        pending: dict[str, str] = {}  # pid -> lock text awaiting its STATEMENT line
        for line in raw.decode(errors="replace").splitlines():
            m = _WAIT.search(line)
            if m:
                waits += 1
                lock = re.sub(r"\d+", "N", m.group(2))  # one kind, whatever the xid/tuple
                pending[m.group(1)] = lock
                kinds[lock] += 1
                continue
            e = _ERROR.search(line)
            if e:  # e.g. a serialization failure or deadlock a retry hid from the client
                errors[re.sub(r"\d+", "N", e.group(1))[:100]] += 1
                continue
            s = _STATEMENT.search(line)
            if s and s.group(1) in pending:
                lock = pending.pop(s.group(1))
                kinds[lock] -= 1
                kinds[f"{lock}: {s.group(2)[:100]}"] += 1
        return {
            "waits": waits,
            "kinds": Counter({k: n for k, n in kinds.items() if n > 0}),
            "errors": errors,
        }
