"""Break-glass accounts: bypass the service, log loudly, report to the audit late but certainly.

The live report has a short budget; if it fails the report goes to the spool
(spool.py) and ``flush`` delivers it once the service answers: the enforce timer
calls it every run; jit-hooksd can call ``flush_if_due()`` from its idle loop. Each report carries a
random id, so a report delivered twice (a live call that timed out here but
reached the service, two flushers) is recorded once.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import NamedTuple

from jit_hooks.errors import ConfigError, ServiceError
from jit_hooks.host import paths
from jit_hooks.host.login import spool
from jit_hooks.host.login.client import HookClient, hard_deadline
from jit_hooks.host.login.config import HostConfig, load_config
from jit_hooks.host.login.log import HookLog
from jit_hooks.protocol import BreakGlassQuery

# Reporting is best effort and must not make an emergency login wait for a
# sick service: a short budget, whatever the configured one.
REPORT_BUDGET = 2.0
# jit-hooksd tries the spool at most this often (seconds): a look at an empty
# directory is cheap, but a service that is still down costs a timeout each time.
FLUSH_INTERVAL = 60.0
FLUSH_IDENT = "jit-hooksd"


def is_break_glass(config: HostConfig, login: str) -> bool:
    return login in config.break_glass


def _query(report: spool.Report) -> BreakGlassQuery:
    return BreakGlassQuery(
        login=report["login"],
        rhost=report["rhost"],
        connection=report["connection"],
        stage=report["stage"],
        report_id=report["report_id"],
        at=report["at"],
    )


def allow(
    config: HostConfig,
    log: HookLog,
    *,
    login: str,
    rhost: str | None,
    conn: str | None,
    stage: str,
    inv=None,  # noqa: ANN001 - hook.Invocation (the resident helper's deadline); None: SIGALRM
    now: float | None = None,
) -> int:
    """Log the use at ALERT, report it to the service's audit (else spool it), allow (0)."""
    fields = {"login": login, "rhost": rhost, "connection": conn, "stage": stage}
    log.alert(decision="allow", reason="break_glass", **fields)
    report = spool.Report(
        report_id=os.urandom(16).hex(),
        at=int(time.time() if now is None else now),
        login=login,
        rhost=rhost,
        connection=conn,
        stage=stage,
    )
    fields["report"] = report["report_id"]
    budget = min(REPORT_BUDGET, config.total_timeout)
    done = threading.Lock()  # the helper's expiry callback and the body may both get here

    def unreported(error: str) -> int:
        if not done.acquire(blocking=False):
            return 0
        try:
            name = spool.write(config.spool_dir, report)
        except (OSError, ValueError) as e:
            log.alert(
                event="break_glass_report", reported="no", spooled="no", error=error,
                spool_error=str(e), **fields,
            )  # fmt: skip
        else:
            log.alert(
                event="break_glass_report", reported="no", spooled=name, error=error, **fields
            )
        return 0

    deadline = (
        hard_deadline(budget + 0.5)
        if inv is None
        else inv.deadline(budget + 0.5, lambda: unreported("timeout"))
    )
    try:
        with deadline:
            HookClient(config, budget=budget).break_glass(_query(report))
    except (ServiceError, ConfigError) as e:
        return unreported(getattr(e, "reason", "config"))
    else:
        log.info(event="break_glass_report", reported="yes", **fields)
    return 0


class Flushed(NamedTuple):
    delivered: int
    discarded: int  # unsafe or malformed files, removed (logged at ALERT)
    left: int  # still spooled: the service did not take them (yet)


def flush(config: HostConfig, log: HookLog, *, client: HookClient | None = None) -> Flushed:
    """Deliver the spooled reports, oldest first; stop at the first service error.

    One flusher at a time per host (flock on the directory): the others return
    at once with nothing done. Raises nothing for a missing or unsafe spool
    (logged); a report is removed only after the service confirmed it.
    """
    try:
        dir_fd = spool.open_dir(config.spool_dir)
    except OSError as e:
        if spool.pending(config.spool_dir) or not isinstance(e, FileNotFoundError):
            log.alert(event="break_glass_flush", error="spool", detail=str(e))
        return Flushed(0, 0, 0)
    delivered = discarded = left = 0
    try:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Flushed(0, 0, 0)
        client = client or HookClient(config)
        failed: str | None = None
        for name, report in spool.read_all(dir_fd):
            if report is None:
                log.alert(event="break_glass_flush", discarded=name, reason="unsafe_or_malformed")
                spool.remove(dir_fd, name)
                discarded += 1
                continue
            if failed is not None:
                left += 1
                continue
            try:
                client.break_glass(_query(report))
            except (ServiceError, ConfigError) as e:
                failed = getattr(e, "reason", "config")
                left += 1
                continue
            spool.remove(dir_fd, name)
            delivered += 1
            log.info(
                event="break_glass_report", reported="yes", late=int(time.time()) - report["at"],
                login=report["login"], stage=report["stage"], report=report["report_id"],
            )  # fmt: skip
        if failed is not None:
            log.warning(event="break_glass_flush", left=left, error=failed)
    finally:
        os.close(dir_fd)  # also releases the flock
    return Flushed(delivered, discarded, left)


_last_flush = 0.0
_flush_lock = threading.Lock()


def flush_if_due(config_path: str = paths.CONFIG_PATH, *, interval: float = FLUSH_INTERVAL) -> None:
    """For jit-hooksd's idle loop: deliver the spool in a background thread, at most once
    per ``interval`` and only when something is spooled. Never raises, never blocks."""
    global _last_flush
    now = time.monotonic()
    if now - _last_flush < interval or not _flush_lock.acquire(blocking=False):
        return
    _last_flush = now

    def run() -> None:
        try:
            if not os.path.exists(config_path):
                return  # not configured here (the hooks deny anyway): nothing to say
            config = load_config(config_path)
            if spool.pending(config.spool_dir):
                flush(config, HookLog(FLUSH_IDENT, config.syslog_socket))
        except Exception as e:  # a flush problem must never reach the helper's loop
            HookLog(FLUSH_IDENT).warning(event="break_glass_flush", error=type(e).__name__)
        finally:
            _flush_lock.release()

    threading.Thread(target=run, name="jit-break-glass-flush", daemon=True).start()
