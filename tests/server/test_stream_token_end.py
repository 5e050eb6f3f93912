"""A host stream ends when its token does (review L2), on a real service, SQLite and PostgreSQL.

Rotating a host token with a grace sets the old token's expires_at; the old
token's stream used to stay open until its 5-minute re-check. It now ends at
the grace's end with ``event: closed`` ``token_expired``, while the new token's
stream carries on.
"""

from __future__ import annotations

from tests.server.test_stream import approved, readers  # noqa: F401 (fixture)


def test_old_tokens_stream_closes_at_the_end_of_the_rotation_grace(world, readers):  # noqa: F811
    old = readers(world.svc.url, world.host_tokens["web1"])
    assert old.next().name == "sync"
    new_token = world.svc.admin("host", "rotate-token", "web1", "--grace", "3s").strip()
    new = readers(world.svc.url, new_token)
    assert new.next().name == "sync"

    event = old.next()  # the rotation itself: the old token is still accepted
    assert event is not None and event.data["kind"] == "host.token_rotated", event
    event = old.next()  # bounded by the reader's WAIT (30 s), well below the old 5 min
    assert event is not None and event.name == "closed", event
    assert event.data == {"reason": "token_expired"}
    assert old.next() is None

    rid = approved(world)
    event = new.next()
    while event is not None and event.data.get("kind") == "host.token_rotated":
        event = new.next()
    assert event is not None and event.data == {"kind": "request.approved", "request_id": rid}
