"""Pinned grants on the host: the service's ranges are checked before sshd or PAM use them."""

from __future__ import annotations

import pytest

from jit_hooks.errors import BadResponse
from jit_hooks.host.login import answers


@pytest.mark.parametrize(
    "cidrs",
    [
        ["10.0.0.1/8"],  # host bits: not canonical
        ["0.0.0.0/0"],
        ["::/0"],
        [],
        ["10.0.0.0/8 "],
        ["10.0.0.0/08"],
        ['10.0.0.0/8"'],
        ["localhost"],
        [f"10.{i}.0.0/16" for i in range(17)],
        "10.0.0.0/8",
        [8],
    ],
)
def test_bad_ranges_are_refused(cidrs):
    with pytest.raises(BadResponse):
        answers.check_cidrs(cidrs)
    allow = {"decision": "allow", "reason": "", "request_id": 1, "expires_at": 1764003600}
    with pytest.raises(BadResponse):
        answers.decision({**allow, "from_cidrs": cidrs})


def test_canonical_ranges_pass_and_match_the_remote_address():
    cidrs = answers.check_cidrs(["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])
    assert cidrs == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert answers.check_cidrs(None) is None
    for ok in ("10.1.2.3", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"):
        assert answers.rhost_allowed(ok, cidrs), ok
    for no in ("192.0.2.8", "127.0.0.1", "2001:db9::1", None, "", "web1.example.org", "10.0.0.1 "):
        assert not answers.rhost_allowed(no, cidrs), no
