"""Host event streams: each replica tells its connected hosts when their sessions must change.

One :class:`Hub` per replica (process). Hosts hold ``GET /api/v1/hook/stream``
(routes/stream.py); the hub keeps an asyncio queue per stream, keyed by host
id. While anyone listens, one task polls the shared database every
``POLL_SECONDS`` for new audit events of the kinds that change live sessions
(:data:`REQUEST_KINDS`, ``user.disabled``, ``host.*``), maps each to the hosts
it concerns and puts a small notice into those hosts' queues only. The notice
carries no session data: the host answers it with ``GET /hook/sessions`` (the
same indexed, audited call as ``jit-hooks enforce``), so what a host learns
still comes only from its own token's view.

Why the audit log: every revoke, drop, extend and disable already writes its
event in the transaction of the change, on every replica and backend, so a
change made on replica A is seen by the hubs of B and C within a poll, with no
extra write on the change's path and no channel that could miss a commit.
PostgreSQL hands out ids before commit, so ids commit out of order: each poll
re-reads the matching ids above the cursor it had ``SETTLE_SECONDS`` ago (a
transaction that took its id before then has committed or failed by now), never
more than ``ID_SLACK`` ids back (index ix_audit_events_kind_id: kind, id), and
skips the ids it already delivered. So a poll re-reads the last half-minute's
session-changing events, not the last 100,000 ids' (review L4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, select

from jit_hooks.server.tables import audit_events, hosts, request_hosts, sessions, users

log = logging.getLogger(__name__)

# How often each replica looks for new events while streams are open: the
# largest share of the revoke-to-session-end time (bench P6), one small indexed
# query per replica per poll however many hosts listen.
POLL_SECONDS = 0.25
# Events committed out of id order (PostgreSQL) are caught by re-reading the ids
# above the cursor of this many seconds ago: longer than any transaction that
# writes an audit event (hook calls and API changes commit in well under a second;
# the database's busy timeouts are shorter than this).
SETTLE_SECONDS = 30.0
# And never more ids back than this, whatever the time window holds.
ID_SLACK = 10_000
# Request events after which a host's sessions may have to end or move their end:
# the kinds really audited (an approved extension is request.extended, extend.py;
# expiry is by time, which the agent keeps, not an event).
REQUEST_KINDS = (
    "request.revoked",
    "request.dropped",
    "request.extended",
    "request.approved",
)
USER_KINDS = ("user.disabled", "user.removed")
# Host token changes (admin_ops.rotate_host_token, store.remove_host): the host's
# streams re-check their token, close if refused, and close at a grace's end.
HOST_KINDS = ("host.token_rotated", "host.removed")
KINDS = REQUEST_KINDS + USER_KINDS + HOST_KINDS
# Bound on a stream's queue: a host that stops reading is closed, never buffered for.
QUEUE_MAX = 256
# Seconds between keep-alive comments on each stream: the host agent treats three
# missed ones as a dead stream (jit_hooks/host/agent/sse.py). The hub sends them
# a slice of the streams per poll, so 10,000 streams are not woken in one burst and
# no stream keeps a timer of its own (bench P7: idle CPU per stream).
HEARTBEAT = 20.0
# Streams one host may hold: its agent's, plus one for a restart whose old
# connection is not yet seen dead. A newer stream closes the oldest, so one
# leaked token can hold no more than this many of the replica's descriptors.
STREAMS_PER_HOST = 2
# Descriptors kept free for hook calls, API calls and the database whatever the
# streams: a quarter of RLIMIT_NOFILE, at least this many. Streams beyond the rest
# are refused (503) so that logins never fail for want of a descriptor.
FD_RESERVE_MIN = 128


def stream_cap() -> int:
    """Streams this process accepts: RLIMIT_NOFILE less the reserve, or JIT_STREAM_MAX if lower.

    Read on every new stream (one syscall) so a limit changed while running
    (prlimit, ``serve`` raising its soft limit) counts at once.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = 1 << 30 if soft == resource.RLIM_INFINITY else soft - max(FD_RESERVE_MIN, soft // 4)
    raw = os.environ.get("JIT_STREAM_MAX", "")
    if raw.isdigit():
        cap = min(cap, int(raw))
    return max(cap, 0)


@dataclass(frozen=True)
class Notice:
    """One thing a host should act on: ``kind`` and the audit id it came from."""

    id: int
    kind: str
    request_id: int | None = None
    # For host.* events: the stream re-checks its token before anything else.
    recheck_token: bool = False

    def sse(self, seq: int) -> bytes:
        """The ``change`` event, numbered ``seq`` on its stream: audit ids are global and
        would tell a host how busy the rest of the fleet is (review L3)."""
        data: dict[str, object] = {"kind": self.kind}
        if self.request_id is not None:
            data["request_id"] = self.request_id
        payload = json.dumps(data, separators=(",", ":"))
        return f"id: {seq}\nevent: change\ndata: {payload}\n\n".encode()


@dataclass
class Hub:
    """The streams of one replica and the poll that feeds them (see the module docstring)."""

    ctx: Any  # server.context.Context (typed loosely: context imports nothing of ours)
    poll_seconds: float = POLL_SECONDS
    listeners: dict[int, set[asyncio.Queue]] = field(default_factory=dict)
    cursor: int | None = None  # the highest audit id seen
    _seen: set[int] = field(default_factory=set)
    _task: asyncio.Task | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Heartbeat slices: the queues of slot i get a keep-alive every len(slots) polls.
    _slots: list[set[asyncio.Queue]] = field(default_factory=list)
    _slot_of: dict[int, int] = field(default_factory=dict)
    _added: int = 0
    _tick: int = 0
    # Each host's queues, oldest first (STREAMS_PER_HOST).
    _order: dict[int, list[asyncio.Queue]] = field(default_factory=dict)
    # (clock, cursor) after each poll of the last SETTLE_SECONDS: the re-read window.
    _marks: deque[tuple[float, int]] = field(default_factory=deque)
    clock: Callable[[], float] = time.monotonic

    @property
    def streams(self) -> int:
        return sum(len(q) for q in self.listeners.values())

    async def subscribe(self, host_id: int) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_MAX)
        if self.cursor is None:
            # Events before the first stream concern nobody listening: a host
            # syncs its full state on connect (routes/stream.py).
            self.cursor, self._seen = await self.ctx.run(_start)
            # Until a poll is SETTLE_SECONDS old, re-read from ID_SLACK below the start.
            self._marks = deque([(self.clock(), max(0, self.cursor - ID_SLACK))])
        order = self._order.setdefault(host_id, [])
        while len(order) >= STREAMS_PER_HOST:
            oldest = order[0]
            log.warning("host id %s opened another stream: its oldest is closed", host_id)
            _close(oldest)
            self.unsubscribe(host_id, oldest)
        order.append(queue)
        self.listeners.setdefault(host_id, set()).add(queue)
        if not self._slots:
            self._slots = [set() for _ in range(max(1, round(HEARTBEAT / self.poll_seconds)))]
        slot = self._added % len(self._slots)
        self._added += 1
        self._slots[slot].add(queue)
        self._slot_of[id(queue)] = slot
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="stream-hub")
        return queue

    def unsubscribe(self, host_id: int, queue: asyncio.Queue) -> None:
        slot = self._slot_of.pop(id(queue), None)
        if slot is not None:
            self._slots[slot].discard(queue)
        order = self._order.get(host_id)
        if order is not None:
            if queue in order:
                order.remove(queue)
            if not order:
                del self._order[host_id]
        queues = self.listeners.get(host_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.listeners[host_id]

    def publish(self, host_ids: Iterable[int], notice: Notice) -> int:
        """Put ``notice`` into the queues of ``host_ids``' streams; how many got it."""
        sent = 0
        for host_id in host_ids:
            for queue in self.listeners.get(host_id, ()):
                sent += _offer(queue, notice)
        return sent

    def broadcast(self, notice: Notice) -> int:
        """Put ``notice`` into every stream's queue (bench P7's fan-out; shutdown)."""
        return self.publish(list(self.listeners), notice)

    async def _run(self) -> None:
        while self.listeners:
            if _server_exiting():
                # uvicorn waits for open responses before it shuts down: a stream
                # never ends by itself, so the hub ends them (hosts reconnect elsewhere).
                self.broadcast_close()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database blip must not end the hub: next poll retries
                log.exception("stream hub poll failed")
            if self._slots:
                for queue in list(self._slots[self._tick % len(self._slots)]):
                    _offer(queue, KEEPALIVE)
                self._tick += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    def broadcast_close(self) -> None:
        for queues in self.listeners.values():
            for queue in queues:
                _close(queue)

    def window_low(self) -> int:
        """The id above which a poll re-reads (see the module docstring)."""
        cursor = self.cursor or 0
        now = self.clock()
        marks = self._marks
        # Drop marks made before the newest one that is already SETTLE_SECONDS old.
        while len(marks) > 1 and marks[1][0] <= now - SETTLE_SECONDS:
            marks.popleft()
        settled = marks[0][1] if marks else cursor
        return max(settled, cursor - ID_SLACK)

    async def poll_once(self) -> int:
        """Read new events, deliver them; how many notices went out."""
        low = self.window_low()
        rows, targets = await self.ctx.run(lambda conn: _changes(conn, low, self._seen))
        sent = 0
        for row, host_ids in zip(rows, targets, strict=True):
            self._seen.add(row.id)
            self.cursor = max(self.cursor or 0, row.id)
            notice = Notice(
                id=row.id,
                kind=row.kind,
                request_id=_request_id(row.data),
                recheck_token=row.kind in HOST_KINDS,
            )
            sent += self.publish(host_ids, notice)
        self._marks.append((self.clock(), self.cursor or 0))
        if len(self._seen) > 4096:
            self._seen = {i for i in self._seen if i > low}
        return sent

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


KEEPALIVE = Notice(id=0, kind="heartbeat")


def _offer(queue: asyncio.Queue, notice: Notice) -> int:
    """Queue ``notice``; 1 if queued. A full queue gets None instead: the stream closes,
    the host reconnects and syncs, rather than the replica buffering without bound."""
    try:
        queue.put_nowait(notice)
        return 1
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait(None)
        return 0


def _close(queue: asyncio.Queue) -> None:
    """Make the stream reading ``queue`` end (None), dropping a queued notice if it is full."""
    try:
        queue.put_nowait(None)
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait(None)


def _server_exiting() -> bool:
    """Whether the uvicorn server running us was told to stop (its SIGTERM handler's flag).

    uvicorn offers the app no shutdown signal before it waits for open
    responses; its signal handler is a bound method of the Server, whose
    ``should_exit`` is set by SIGTERM/SIGINT.
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


def _start(conn: Connection) -> tuple[int, set[int]]:
    """The newest audit id, and the ids of the window the first polls re-read."""
    top = int(conn.execute(select(func.coalesce(func.max(audit_events.c.id), 0))).scalar_one())
    q = select(audit_events.c.id).where(
        and_(audit_events.c.kind.in_(KINDS), audit_events.c.id > top - ID_SLACK)
    )
    return top, {r[0] for r in conn.execute(q)}


def _request_id(data: str) -> int | None:
    try:
        value = json.loads(data).get("request_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _changes(conn: Connection, low: int, seen: set[int]) -> tuple[list[Any], list[list[int]]]:
    """New session-changing events above ``low`` not in ``seen``, and each one's host ids."""
    rows = [
        r
        for r in conn.execute(
            select(audit_events.c.id, audit_events.c.kind, audit_events.c.host, audit_events.c.data)
            .where(and_(audit_events.c.kind.in_(KINDS), audit_events.c.id > low))
            .order_by(audit_events.c.id)
        )
        if r.id not in seen
    ]
    targets = [_hosts_of(conn, r) for r in rows]
    return rows, targets


def _hosts_of(conn: Connection, row: Any) -> list[int]:
    """The hosts an event concerns: a request's hosts, a user's open sessions' hosts, a host."""
    if row.kind in HOST_KINDS:
        if row.host is None:
            return []
        found = conn.execute(select(hosts.c.id).where(hosts.c.name == row.host)).scalar()
        return [] if found is None else [found]
    if row.kind in USER_KINDS:
        try:
            name = json.loads(row.data).get("user")
        except (ValueError, AttributeError):
            return []
        q = (
            select(sessions.c.host_id)
            .distinct()
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(users.c.name == name, sessions.c.closed_at.is_(None))
        )
        return [r[0] for r in conn.execute(q)]
    rid = _request_id(row.data)
    if rid is None:
        return []
    q = select(request_hosts.c.host_id).where(request_hosts.c.request_id == rid)
    return [r[0] for r in conn.execute(q)]


def hub_of(app: Any) -> Hub:
    """The app's hub, made on first use (no task runs until a host connects)."""
    hub = getattr(app.state, "stream_hub", None)
    if hub is None:
        hub = app.state.stream_hub = Hub(app.state.ctx)
    return hub
