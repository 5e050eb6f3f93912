"""Policy validation and matching: examples plus hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jit_hooks.server.errors import InvalidInput
from jit_hooks.server.policy import (
    matches_host,
    parse_policy,
    select_for_host,
    select_for_selector,
    selector_hosts,
)


def pol(name: str, *, hosts=None, labels=None, **kw):  # noqa: ANN001, ANN003, ANN201
    d = {"name": name, "logins": ["deploy"], **kw}
    if hosts:
        d["hosts"] = hosts
    if labels:
        d["labels"] = labels
    return parse_policy(d)


def test_examples():
    by_host = pol("web1-only", hosts=["web1"])
    prod = pol("prod", labels={"env": "prod"})
    prod_db = pol("prod-db", labels={"env": "prod", "team": "db"})
    ps = [prod, prod_db, by_host]
    assert select_for_host(ps, "web1", {"env": "prod", "team": "db"}) is by_host
    assert select_for_host(ps, "db1", {"env": "prod", "team": "db"}) is prod_db
    assert select_for_host(ps, "web2", {"env": "prod"}) is prod
    assert select_for_host(ps, "dev1", {"env": "dev"}) is None
    assert select_for_selector(ps, {"env": "prod", "team": "db"}) is prod_db
    assert select_for_selector(ps, {"team": "db"}) is None
    hosts = [("web1", {"env": "prod"}), ("web2", {"env": "prod"}), ("dev", {"env": "dev"})]
    # web1 has its own policy: a label request under "prod" does not reach it.
    assert selector_hosts(ps, prod, {"env": "prod"}, hosts) == ["web2"]


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"name": "x", "logins": ["deploy"]}, "hosts"),  # neither hosts nor labels
        ({"name": "x", "logins": ["deploy"], "hosts": ["a"], "labels": {"e": "p"}}, "hosts"),
        ({"name": "x", "hosts": ["a"]}, "logins"),
        ({"name": "x", "hosts": ["a"], "logins": ["Root Login"]}, "logins"),
        ({"name": "x", "hosts": ["a"], "logins": ["d"], "options": ['command="sh"']}, "options"),
        ({"name": "x", "hosts": ["a"], "logins": ["d"], "max_duration": 0}, "max_duration"),
        (
            {"name": "x", "hosts": ["a"], "logins": ["d"], "approvals_required": 0},
            "approvals_required",
        ),
        (
            {"name": "x", "hosts": ["a"], "logins": ["d"], "approvers": {"roles": ["god"]}},
            "approvers.roles",
        ),
        ({"name": "x", "hosts": ["a"], "logins": ["d"], "typo_field": 1}, "typo_field"),
        ({"name": "bad name!", "hosts": ["a"], "logins": ["d"]}, "name"),
        ({"name": "x", "hosts": ["a"], "logins": ["d"], "auto_approve": "yes"}, "auto_approve"),
    ],
)
def test_invalid_policies_name_the_field(spec, field):
    with pytest.raises(InvalidInput) as e:
        parse_policy(spec)
    assert e.value.field == field


def test_round_trip():
    p = pol(
        "p",
        labels={"env": "prod"},
        options=["no-pty", "restrict"],
        approvers={"users": ["bob"], "roles": ["approver"]},
        approvals_required=2,
    )
    assert parse_policy(p.to_dict()) == p


KEYS = st.sampled_from(["env", "team", "tier"])
VALUES = st.sampled_from(["prod", "dev", "db", "web"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=3)
HOSTS = st.sampled_from(["h1", "h2", "h3"])


@st.composite
def policies(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        if draw(st.booleans()):
            out.append(pol(f"p{i}", hosts=draw(st.lists(HOSTS, min_size=1, max_size=2))))
        else:
            out.append(pol(f"p{i}", labels=draw(LABELS.filter(bool))))
    return out


@settings(max_examples=300, deadline=None)
@given(policies(), HOSTS, LABELS, st.randoms())
def test_most_specific_matching_policy_wins(ps, host, labels, rnd):
    best = select_for_host(ps, host, labels)
    matching = [p for p in ps if matches_host(p, host, labels)]
    if not matching:
        assert best is None  # no policy, no access
        return
    assert best in matching
    named = [p for p in matching if p.hosts]
    if named:
        assert best.hosts and best.name == min(p.name for p in named)
    else:
        most = max(len(p.labels) for p in matching)
        assert len(best.labels) == most
        assert best.name == min(p.name for p in matching if len(p.labels) == most)
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    assert select_for_host(shuffled, host, labels) == best  # order never matters


@settings(max_examples=200, deadline=None)
@given(policies(), LABELS.filter(bool), st.lists(st.tuples(HOSTS, LABELS), max_size=4))
def test_selector_never_reaches_a_host_under_another_policy(ps, selector, hosts):
    p = select_for_selector(ps, selector)
    if p is None:
        return
    assert not p.hosts and all(selector.get(k) == v for k, v in p.labels)
    for name in selector_hosts(ps, p, selector, hosts):
        labels = [lab for h, lab in hosts if h == name]
        assert any(select_for_host(ps, name, lab) == p for lab in labels)
