"""/ui shows a grant's pending extension to its approvers and takes their review (no browser)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.test_grants import set_policy
from tests.utils.backends import services_on

R = "/api/v1/requests"


@pytest.fixture(scope="module", autouse=True)
def backend(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    with services_on(db_backend, request):
        yield db_backend


def test_pending_extension_is_shown_and_approved_on_the_page(ui_world, client_for):
    w = ui_world
    set_policy(w, max_extension=1800, extension_approvals=1)
    rid = w.request("alice", from_cidrs=["192.0.2.0/24"])[1]["id"]
    ends = w.call("bob", "POST", f"{R}/{rid}/approve", {})[1]["ends_at"]
    w.call("alice", "POST", f"{R}/{rid}/extend", {"duration_seconds": 900, "reason": "INC-9 <b>"})

    bob, alice = client_for("bob"), client_for("alice")
    page = bob.get(f"/ui/requests/{rid}").text
    assert 'id="extension"' in page and "INC-9 &lt;b&gt;" in page
    assert 'id="approve-extension"' in page and "192.0.2.0/24" in page
    # The requester sees her extension waiting, with nothing to approve.
    mine = alice.get(f"/ui/requests/{rid}").text
    assert 'id="extension"' in mine and 'id="approve-extension"' not in mine
    assert alice.post(f"/ui/requests/{rid}/approve", {"csrf": alice.csrf()}).status_code == 403

    assert bob.post(f"/ui/requests/{rid}/approve", {"csrf": bob.csrf(), "comment": "ok"}).ok
    req = w.call("alice", "GET", f"{R}/{rid}")[1]
    assert (req["ends_at"], req["extension"]) == (ends + 900, None)
    page = bob.get(f"/ui/requests/{rid}").text
    assert 'id="extension"' not in page and 'id="extended">by 15 min' in page
