"""The service's background audit work: fold and checkpoint, on whichever replica leads.

Every ``fold_interval_ms`` each replica tries to fold (server/fold.py); the one
that holds the advisory lock chains the new events, closes miss windows, and
after its COMMIT exports a signed checkpoint when one is due
(server/checkpoints.py). A replica that dies hands the lock over with its
transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from jit_hooks.server import audit, fold
from jit_hooks.server.audit_settings import AuditSettings
from jit_hooks.server.checkpoints import Checkpointer

log = logging.getLogger(__name__)
ERROR_LOG_EVERY = 60.0  # seconds between two logged failures (a dead database fails every round)


class AuditWorker:
    def __init__(self, engine: Any, settings: AuditSettings, clock: Callable[[], int]) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.checkpointer = (
            None
            if settings.key_file is None
            else Checkpointer(
                key_file=settings.key_file,
                file=settings.checkpoint_file,
                every_events=settings.checkpoint_events,
                every_seconds=settings.checkpoint_seconds,
                to_syslog=settings.syslog,
            )
        )
        self._last_error = 0.0

    def round(self) -> int | None:
        """One fold (and maybe a checkpoint); None if another replica leads."""
        now = self.clock()
        with self.engine.begin() as conn:
            n = fold.fold(conn, now=now, window=self.settings.miss_window)
            if n is None:
                return None
            seq, digest = audit.read_head(conn)
        # Exported after the COMMIT (a checkpoint never names a head that was rolled
        # back) and off the connection (the file is fsynced; SQLite has one connection).
        if self.checkpointer is not None and self.checkpointer.due(seq, now):
            self.checkpointer.emit(seq, digest, now=now)
        return n

    async def run(self) -> None:
        interval = self.settings.fold_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.round)
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - self._last_error >= ERROR_LOG_EVERY:
                    self._last_error = time.monotonic()
                    log.exception("audit fold failed (retrying every %.1f s)", interval)


def start(ctx: Any) -> asyncio.Task:
    """Start the worker of an app's Context (engine, settings, clock) on the running loop."""
    settings = AuditSettings.from_env(ctx.settings.data_dir)
    worker = AuditWorker(ctx.engine, settings, ctx.settings.clock)
    return asyncio.get_running_loop().create_task(worker.run(), name="jit-audit-fold")
