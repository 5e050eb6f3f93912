"""Stream event ids are the stream's own numbers, not global audit ids (review L3).

Audit ids count every event of the whole service: a host reading them would
learn how busy the rest of the fleet is. Real service, SQLite and PostgreSQL.
"""

from __future__ import annotations

from tests.server.test_stream import approved, readers  # noqa: F401 (fixture)


def test_change_events_are_numbered_per_stream(world, readers):  # noqa: F811
    # The world's setup already wrote audit events (users, hosts, keys, policy).
    web1 = readers(world.svc.url, world.host_tokens["web1"])
    sync = web1.next()
    assert sync.name == "sync" and sync.id == 0
    top = world.svc.sql("SELECT max(id) FROM audit_events")[0][0]
    assert top > 5  # the stream's numbers below could not be audit ids
    ids = []
    for _ in range(2):
        rid = approved(world)
        event = web1.next()
        assert event is not None and event.data == {"kind": "request.approved", "request_id": rid}
        ids.append(event.id)
    assert ids == [1, 2]
