"""The agent loop: hold the stream, sync on its events, end and warn sessions on time.

Two threads. The stream thread holds ``GET /hook/stream`` and, for each
``sync``/``change`` event, asks the main loop to sync; it reconnects with
:class:`Backoff` (full jitter) whenever the stream fails or ends. The main loop
syncs (``GET /hook/sessions``: the sessions to end now and the live ones with
their end time), ends what the service says to end through enforce.py's kill
path, and keeps the live sessions' end times to act on locally:

* at each ``sessions.warn_before`` mark it writes a warning to the session's
  terminals (enforce.warn_users: checked pty, the session user's);
* at the end time it first asks the service once (one sync, within the
  client's time budget): an extension whose ``change`` event was missed (stream
  down, event late) moves the end time instead of ending the session. If that
  sync fails, or the service does not list the session as live past now, the
  agent ends it itself: a stream or service that is gone never extends access
  (fail safe). "Now" is the service's clock (the ``time`` of the last sync).

A periodic resync (``RESYNC``) picks up sessions opened since the last one.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from jit_hooks.errors import ConfigError, ServiceError
from jit_hooks.host.admin import enforce
from jit_hooks.host.agent.backoff import Backoff
from jit_hooks.host.agent.sse import Stream
from jit_hooks.host.login.client import HookClient
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.log import HookLog
from jit_hooks.protocol import SessionsAnswer

IDENT = "jit-hooks-agent"
# Seconds between syncs without events: new sessions get their warnings and
# local end within this (the timer backstop runs every 30 s as well).
RESYNC = 60.0
# After a failed sync, retry this soon (jittered) rather than wait for RESYNC.
SYNC_RETRY = 5.0
# A stream that stayed up this long was healthy: the next failure starts the
# backoff from the bottom again.
HEALTHY_STREAM = 30.0


class Live(NamedTuple):
    login: str
    request_id: int
    expires_at: int


class Agent:
    def __init__(
        self,
        config: HostConfig,
        log: HookLog,
        *,
        client: HookClient | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        grace: float = enforce.TERM_GRACE,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.client = client or HookClient(config)
        self.clock = clock
        self.backoff = backoff or Backoff(base=5.0, cap=300.0)
        self.grace = grace
        self.rng = rng or random.SystemRandom()
        self.live: dict[str, Live] = {}
        self.warned: set[tuple[str, int, int]] = set()  # (connection, expires_at, mark)
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._sync_wanted = True
        self._next_sync = 0.0
        self._stream: Stream | None = None
        self.connects = 0  # streams opened (tests, status)
        self.syncs = 0
        # Service clock minus ours at the last sync: end times are the service's.
        self.skew = 0.0

    # -- stream thread ----------------------------------------------------------

    def hold_stream(self) -> None:
        """Keep a stream open until stop; each event asks the main loop to sync."""
        while not self.stop.is_set():
            opened = None
            try:
                self._stream = Stream(self.config, self.config.read_token())
                opened = time.monotonic()
                self.connects += 1
                self.log.info(action="stream", state="open", url=self._stream.url)
                for event in self._stream:
                    if event.name in ("sync", "change"):
                        self.want_sync()
                    elif event.name == "closed":
                        self.log.warning(action="stream", state="refused", why=event.data)
                        break
                    if self.stop.is_set():
                        break
            except Exception as e:
                # Whatever one connection did (OSError, a non-HTTP answer raising
                # http.client.HTTPException, a bug), the thread must live on and
                # reconnect: a dead stream thread would leave the host on the timer.
                if not self.stop.is_set():
                    reason = getattr(e, "reason", None) or type(e).__name__
                    self.log.warning(action="stream", state="failed", error=reason)
            finally:
                if self._stream is not None:
                    self._stream.close()
            if opened is not None and time.monotonic() - opened >= HEALTHY_STREAM:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            self.log.info(action="stream", state="reconnect", delay=f"{delay:.1f}")
            self.stop.wait(delay)

    # -- main loop --------------------------------------------------------------

    def want_sync(self) -> None:
        self._sync_wanted = True
        self._wake.set()

    def run(self) -> None:
        thread = threading.Thread(target=self.hold_stream, name="stream", daemon=True)
        thread.start()
        try:
            while not self.stop.is_set():
                self.step()
                self._wake.wait(self.seconds_to_next())
                self._wake.clear()
        finally:
            self.stop.set()
            if self._stream is not None:
                self._stream.close()  # unblocks the stream thread's read

    def shutdown(self) -> None:
        self.stop.set()
        self._wake.set()

    def step(self) -> None:
        """One pass: sync if asked or due, then act on the known end times."""
        if self._sync_wanted or time.monotonic() >= self._next_sync:
            self._sync_wanted = False
            self.sync()
        self.act_on_time()

    def now(self) -> float:
        """The service's time as of the last sync (end times are on its clock)."""
        return self.clock() + self.skew

    def sync(self) -> SessionsAnswer | None:
        """Ask the service, end what it says to end, keep the live end times; None on failure."""
        try:
            answer = self.client.open_sessions()
        except (ServiceError, ConfigError) as e:
            # Keep what we knew: the known end times still apply (act_on_time).
            self.log.warning(action="sync", result="failed", error=getattr(e, "reason", e))
            self._next_sync = time.monotonic() + self.rng.uniform(0.5, 1.5) * SYNC_RETRY
            return None
        self.syncs += 1
        self.skew = answer["time"] - self.clock()
        self._next_sync = time.monotonic() + self.rng.uniform(0.9, 1.1) * RESYNC
        if answer["end"]:
            enforce.end_sessions(
                answer["end"], self.config, self.log, self.client, grace=self.grace, source="stream"
            )
        self.live = {
            a["connection"]: Live(a["login"], a["request_id"], a["expires_at"])
            for a in answer["active"]
        }
        return answer

    def confirm_ends(self) -> None:
        """Before ending sessions locally, ask the service once whether they really end.

        An extension moves a session's end in the answer (it stays live); what the
        service ends, sync() has ended. The rest of those due (sync failed, or
        the service no longer lists them live past now) stay due: act_on_time
        ends them.
        """
        due = {c: s for c, s in self.live.items() if s.expires_at <= self.now()}
        if not due:
            return
        answer = self.sync()
        if answer is None:
            return  # self.live unchanged: the due sessions end locally
        now = self.now()
        ended = {item["connection"] for item in answer["end"]}
        for conn, s in due.items():
            later = self.live.get(conn)
            if later is not None and later.expires_at > now:
                self.log.info(
                    action="keep", login=s.login, connection=conn, request=s.request_id,
                    expires_at=later.expires_at, source="local",
                )  # fmt: skip
            elif conn not in ended:
                self.live[conn] = s  # not live past now by the service either: end it

    def act_on_time(self) -> None:
        self.confirm_ends()
        now = int(self.now())
        for conn, s in list(self.live.items()):
            if s.expires_at <= now:
                del self.live[conn]
                item = {
                    "connection": conn,
                    "login": s.login,
                    "request_id": s.request_id,
                    "reason": "expired",
                }
                enforce.end_sessions(
                    [item], self.config, self.log, self.client, grace=self.grace, source="local"
                )
                continue
            # Marks passed: warn once for the nearest (a session that started
            # inside several marks gets one warning, not one per mark).
            due = [m for m in self.config.warn_before if s.expires_at - now <= m]
            if due and (conn, s.expires_at, min(due)) not in self.warned:
                self.warned.update((conn, s.expires_at, m) for m in due)
                text = enforce.warning_text(
                    login=s.login,
                    host=self.config.host_name,
                    request_id=s.request_id,
                    expires_at=s.expires_at,
                    now=now,
                )
                if enforce.warn_users(conn, text, s.login):
                    self.log.info(
                        action="warn",
                        login=s.login,
                        connection=conn,
                        request=s.request_id,
                        left=s.expires_at - now,
                        source="agent",
                    )
        self.warned = {k for k in self.warned if k[0] in self.live}

    def seconds_to_next(self) -> float:
        """Until the next sync, warning or end time (the loop also wakes on events)."""
        now = self.now()
        due = [self._next_sync - time.monotonic()]
        for conn, s in self.live.items():
            due.append(s.expires_at - now)
            due += [
                s.expires_at - m - now
                for m in self.config.warn_before
                if (conn, s.expires_at, m) not in self.warned
            ]
        return max(0.05, min(due))
