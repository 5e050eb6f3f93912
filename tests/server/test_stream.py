"""The host event stream (GET /api/v1/hook/stream) on a real service, SQLite and PostgreSQL.

Read with the host agent's own SSE client (jit_hooks/host/agent/sse.py), in a
thread per stream so a test can wait for events with a bound.
"""

from __future__ import annotations

import queue
import threading

import pytest

from jit_hooks.errors import BadResponse
from jit_hooks.host.agent.sse import Event, Stream
from jit_hooks.host.login.config import HostConfig

WAIT = 30  # seconds a bounded wait may take before the test fails (not a timing assert)


class Reader:
    """Reads one host's stream in a thread; events land in ``self.events``."""

    def __init__(self, url: str, token: str) -> None:
        self.stream = Stream(HostConfig(urls=(url,)), token)
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except (OSError, ValueError, AttributeError):  # closed under the reader by close()
            pass
        finally:
            self.events.put(None)  # the stream ended

    def next(self) -> Event | None:
        return self.events.get(timeout=WAIT)

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
def readers():
    opened: list[Reader] = []
    yield lambda url, token: opened.append(Reader(url, token)) or opened[-1]
    for r in opened:
        r.close()


def approved(world) -> int:
    status, body = world.request("alice")
    assert status == 201, body
    rid = body["id"]
    status, body = world.call("bob", "POST", f"/api/v1/requests/{rid}/approve", {})
    assert status == 200, body
    return rid


def test_revoke_reaches_only_its_hosts_stream(world, readers):
    rid = approved(world)
    web1 = readers(world.svc.url, world.host_tokens["web1"])
    web2 = readers(world.svc.url, world.host_tokens["web2"])
    assert web1.next().name == "sync"
    assert web2.next().name == "sync"

    status, body = world.call("bob", "POST", f"/api/v1/requests/{rid}/revoke", {"comment": "x"})
    assert status == 200, body
    event = web1.next()
    assert event is not None and event.name == "change"
    assert event.data == {"kind": "request.revoked", "request_id": rid}

    # Then something that does concern web2: the first thing web2 hears of is
    # its own token's rotation, never web1's revoke (which came first).
    world.svc.admin("host", "rotate-token", "web2")
    event = web2.next()
    assert event is not None
    assert event.name in ("change", "closed"), event
    assert event.name == "closed" or event.data["kind"].startswith("host.")
    assert "request_id" not in event.data


def test_removed_host_stream_is_closed(world, readers):
    web2 = readers(world.svc.url, world.host_tokens["web2"])
    assert web2.next().name == "sync"
    world.svc.admin("host", "remove", "web2")
    event = web2.next()
    assert event is not None and event.name == "closed", event
    assert event.data == {"reason": "token_refused"}
    assert web2.next() is None  # and the service ended the stream


def test_stream_refuses_bad_tokens(world):
    for token in ("jith_nope", world.tokens["alice"]):
        with pytest.raises(BadResponse) as e:
            Stream(HostConfig(urls=(world.svc.url,)), token)
        assert e.value.reason == "unauthorized"


def test_revoke_on_one_replica_reaches_a_stream_on_another(world, readers, tmp_path):
    """Two replicas on one PostgreSQL: the stream is held on B, the revoke is made on A."""
    if world.svc.database_url is None:
        pytest.skip("replicas share a PostgreSQL database (SQLite: one service per file)")
    from jit_hooks.testing.service import start_service

    replica_b = start_service(tmp_path / "b", database_url=world.svc.database_url)
    try:
        rid = approved(world)
        web1 = readers(replica_b.url, world.host_tokens["web1"])
        assert web1.next().name == "sync"
        status, body = world.call("bob", "POST", f"/api/v1/requests/{rid}/revoke", {})
        assert status == 200, body
        event = web1.next()
        assert event is not None and event.data == {"kind": "request.revoked", "request_id": rid}
    finally:
        replica_b.stop()


def test_drop_reaches_the_hosts_stream(world, readers):
    rid = approved(world)
    web1 = readers(world.svc.url, world.host_tokens["web1"])
    assert web1.next().name == "sync"
    status, body = world.call("alice", "POST", f"/api/v1/requests/{rid}/drop", {})
    assert status == 200, body
    event = web1.next()
    assert event is not None and event.data == {"kind": "request.dropped", "request_id": rid}


def test_disabled_user_reaches_the_hosts_of_her_open_sessions(world, readers, tmp_path):
    from jit_hooks.testing.keys import make_key

    approved(world)
    key = world.keys.get("alice") or make_key(tmp_path, "alice")
    status, answer = world.call(
        "web1", "POST", "/api/v1/hook/session",
        {"event": "open", "login": "deploy", "connection": "4242:777", "key_type": key.key_type,
         "key": key.blob},
    )  # fmt: skip
    assert status == 200 and answer["decision"] == "allow", answer
    web1 = readers(world.svc.url, world.host_tokens["web1"])
    web2 = readers(world.svc.url, world.host_tokens["web2"])
    assert web1.next().name == "sync" and web2.next().name == "sync"
    world.svc.admin("user", "disable", "alice")
    event = web1.next()
    assert event is not None and event.data == {"kind": "user.disabled"}
    # web2 has no session of alice's: the next thing it hears of is its own token.
    world.svc.admin("host", "rotate-token", "web2")
    event = web2.next()
    assert event is not None and event.data.get("kind") != "user.disabled", event


def test_extension_reaches_the_hosts_stream(world, readers):
    """An auto-approved extension moves the end: the host hears of it and resyncs."""
    from tests.server.test_grants import set_policy

    set_policy(world, max_extension=600, extension_approvals=0)
    rid = approved(world)
    web1 = readers(world.svc.url, world.host_tokens["web1"])
    assert web1.next().name == "sync"
    status, body = world.call(
        "alice", "POST", f"/api/v1/requests/{rid}/extend", {"duration_seconds": 600, "reason": "x"}
    )
    assert status == 200, body
    event = web1.next()
    assert event is not None and event.data == {"kind": "request.extended", "request_id": rid}
