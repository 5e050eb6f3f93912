"""The delivery worker: on the leader replica, sweep and claim; deliver in its own threads.

Every ``interval`` each replica tries the ``notify`` leader lock. The holder,
in one transaction, expires pending requests past their TTL, queues
"ends soon"/"ended" notices, and leases the due outbox rows; after COMMIT it
hands each row to a small thread pool. A delivery's result is written in its
own short transaction. A slow or hanging receiver holds one pool thread for
at most the channel's timeout; API calls and hook calls never wait for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jit_hooks.server import leader
from jit_hooks.server.notify import channels, outbox, sweep
from jit_hooks.server.notify.config import NotifyConfig

log = logging.getLogger(__name__)
THREADS = 8  # deliveries at once: bounds sockets and threads a dead receiver can hold
ERROR_LOG_EVERY = 60.0


class NotifyWorker:
    def __init__(
        self, engine: Any, cfg: NotifyConfig, clock: Callable[[], int], metrics: Any = None
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(THREADS, thread_name_prefix="jit-notify")
        self._inflight = 0
        self._lock = threading.Lock()
        self._last_error = 0.0

    def round(self) -> int | None:
        """Sweep and hand out due rows; None if another replica leads."""
        now = self.clock()
        with self._lock:
            room = THREADS * 4 - self._inflight
        with self.engine.begin() as conn:
            if not leader.try_lead(conn, "notify"):
                rows = None
            else:
                sweep.expire_pending(conn, now=now)
                sweep.announce_endings(conn, now=now, cfg=self.cfg)
                rows = (
                    outbox.claim(conn, now=now, lease_seconds=outbox.lease(self.cfg), limit=room)
                    if room > 0
                    else []
                )
            depth, age = outbox.stats(conn, now=now)
        if self.metrics is not None:
            self.metrics.notify_depth.set(depth)
            self.metrics.notify_oldest.set(age)
        if rows is None:
            return None
        for row in rows:
            with self._lock:
                self._inflight += 1
            self.pool.submit(self._deliver, row)
        return len(rows)

    def _deliver(self, row: Any) -> None:
        try:
            ch = self.cfg.channels.get(row.channel)
            error = None
            if ch is None:
                error = f"channel {row.channel!r} is no longer configured"
            else:
                try:
                    channels.send(ch, self.cfg, json.loads(row.payload))
                except channels.SendError as e:
                    error = str(e)
                except Exception as e:  # a bug must not kill the thread nor lose the row
                    log.exception("notification %s: unexpected error", row.id)
                    error = f"internal: {type(e).__name__}"
            with self.engine.begin() as conn:
                outcome = outbox.settle(
                    conn,
                    row_id=row.id,
                    ok=error is None,
                    error=error,
                    now=self.clock(),
                    cfg=self.cfg,
                )
            if self.metrics is not None:
                self.metrics.notify_attempts.labels(row.channel, outcome).inc()
            if error is not None:
                log.warning(
                    "notification id=%s channel=%s event=%s attempt failed: %s (%s)",
                    row.id, row.channel, row.event, error, outcome,
                )  # fmt: skip
        except Exception:
            # The database is gone: the lease ends and the row is sent again.
            log.exception("notification %s: could not record the attempt", row.id)
        finally:
            with self._lock:
                self._inflight -= 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval)
            try:
                await asyncio.to_thread(self.round)
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - self._last_error >= ERROR_LOG_EVERY:
                    self._last_error = time.monotonic()
                    log.exception("notification round failed (retrying)")

    def close(self) -> None:
        # Rows in flight keep their lease; the next leader sends them again.
        self.pool.shutdown(wait=False, cancel_futures=True)


def start(ctx: Any, cfg: NotifyConfig) -> tuple[asyncio.Task, NotifyWorker]:
    worker = NotifyWorker(ctx.engine, cfg, ctx.settings.clock, ctx.metrics)
    task = asyncio.get_running_loop().create_task(worker.run(), name="jit-notify")
    return task, worker
