"""API fuzzing: schemathesis against the real service's /openapi.json, over real HTTP.

Every operation is fuzzed with schema-valid (positive) and schema-violating
(negative) cases, authenticated so the cases get past auth: user routes with a
token of a user holding every role, hook routes with a host token. The
database is seeded with requests and keys whose small integer ids the
generated path parameters hit, so review / revoke / cancel / delete run on real
rows. Checks: no 5xx, and every answer conforms to the published schema.

A short stateful phase follows: schemathesis' state machine, links inferred
from the schema's response -> parameter dependencies.

Figures (cases, failures) go to $JIT_SECURITY_REPORT (JSON) when set.
"""

from __future__ import annotations

import os
import time

import pytest
import requests
import schemathesis  # test extra: a missing install fails, never skips
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from jit_hooks.testing.seed import World, make_key
from jit_hooks.testing.service import start_service
from tests.utils.report import record

# Per operation and mode. 20 operations x 2 modes x EXAMPLES, plus the host-token
# portion and the stateful phase: > 5,000 calls in about two minutes on 2 cores.
EXAMPLES = int(os.environ.get("JIT_FUZZ_EXAMPLES", "150"))
STATEFUL_EXAMPLES = int(os.environ.get("JIT_FUZZ_STATEFUL", "60"))
TIME_CAP = float(os.environ.get("JIT_FUZZ_SECONDS", "200"))  # whole module, all phases
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]

STATS = {"cases": 0, "failures": [], "by_status": {}}
# Revocation routes are fuzzed with a throwaway user's tokens: root's own revoked
# (by logout, or an admin's DELETE) would turn every later case into a 401.
TOKEN_OPS = ("/api/v1/logout", "/api/v1/tokens/{token_id}")


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory, backend: str):
    # ``backend``: one service per backend (see tests/server/conftest.py shared_world).
    # The figures are this backend's: the PostgreSQL run must reach the case count on
    # its own, not on the SQLite run's (and the report adds both up once each).
    STATS.update(cases=0, failures=[], by_status={})
    tmp = tmp_path_factory.mktemp("fuzz")
    svc = start_service(tmp / "server")
    try:
        w = World(svc)
        w.user("root", "admin", "approver", "requester")
        w.user("alice", "requester")
        w.user("bob", "approver")
        w.user("tok", "requester")
        for _ in range(4):  # live token rows for fuzzed ids to land on
            w.secrets.append(svc.admin("token", "create", "tok").strip())
        w.host("web1", "env=prod")
        w.host("web2", "env=staging")
        w.policy()
        keys = tmp / "keys"
        keys.mkdir()
        w.add_key("alice", keys)
        w.add_key("root", keys)
        for i in range(8):  # rows for fuzzed ids to land on
            for who in ("alice", "root"):
                rid = w.request(who, reason=f"seed {who} {i}")["id"]
                # One pending request per person, host and login: all but the last
                # are decided (1, 3, 5 approved, the rest cancelled).
                if rid in (1, 3, 5):
                    w.approve("bob", rid)
                elif i < 7:
                    w.call(w.tokens[who], "POST", f"/api/v1/requests/{rid}/cancel")
        for i in range(6):
            key = make_key(keys, f"extra{i}")
            w.call(w.tokens["root"], "POST", "/api/v1/keys", {"public_key": key.line})
        schema = schemathesis.openapi.from_url(svc.url + "/openapi.json")
        yield w, schema
    finally:
        svc.stop()
        ok = sum(n for status, n in STATS["by_status"].items() if 200 <= status < 300)
        record(
            fuzz_cases=STATS["cases"],
            fuzz_2xx=ok,
            fuzz_5xx=sum(n for status, n in STATS["by_status"].items() if status >= 500),
            fuzz_failures=len(STATS["failures"]),
        )
    assert w.leaked_secrets() == [], "token in the service log"


# The host event stream answers a host token with an event stream that stays open:
# fuzzed with a user token (a clean 403 each time); its host side is
# tests/server/test_stream*.py.
ENDLESS_OPS = {"/api/v1/hook/stream"}

# Negative cases may carry made-up headers; the ones that frame the HTTP message
# itself (a `content-length: .R`) make the request invalid HTTP, which uvicorn's
# parser refuses with its own text/plain 400 before any of the service's code
# runs. The contract fuzzed here is the application's, so those are dropped.
FRAMING_HEADERS = {
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "expect",
    "te",
    "upgrade",
    "trailer",
}


def drop_framing_headers(case) -> None:  # noqa: ANN001
    for name in [n for n in (case.headers or {}) if n.lower() in FRAMING_HEADERS]:
        del case.headers[name]


def operations(schema) -> list:  # noqa: ANN001
    return [r.ok() for r in schema.get_all_operations()]


def fuzz_operation(op, base_url: str, token: str | None, deadline: float, examples: int) -> int:  # noqa: ANN001
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    done = 0
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        n = examples
        if op.path == "/api/v1/login" and mode is GenerationMode.POSITIVE:
            n = 4  # each well-formed attempt is a real PAM check with its ~2 s failure delay
        elif op.path == "/api/v1/login":
            n = 10  # some negative cases are well-formed enough to reach PAM too

        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case) -> None:  # noqa: ANN001
            nonlocal done
            if time.monotonic() > deadline:
                return
            drop_framing_headers(case)
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=10)
            done += 1
            STATS["by_status"][response.status_code] = (
                STATS["by_status"].get(response.status_code, 0) + 1
            )
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except Exception as e:  # collect: the test fails at the end with all of them
                STATS["failures"].append(f"{case.operation.label}: {str(e)[:1500]}")

        try:
            run()
        except Unsatisfiable:
            # Nothing to violate (no parameters, no body): no negative cases exist.
            assert mode is GenerationMode.NEGATIVE, op.label
    STATS["cases"] += done
    return done


def test_fuzz_operations(fuzz_env):
    w, schema = fuzz_env
    deadline = time.monotonic() + TIME_CAP * 0.8
    ops = operations(schema)
    assert len(ops) >= 15, [o.label for o in ops]
    user_token = w.tokens["root"]
    host_token = w.host_tokens["web1"]
    for op in ops:
        is_hook = op.path.startswith("/api/v1/hook/")
        token = w.tokens["tok"] if op.path in TOKEN_OPS else user_token
        if op.path in ENDLESS_OPS:  # a host's accepted call never ends: the user-token pass only
            fuzz_operation(op, w.svc.url, user_token, deadline, max(10, EXAMPLES // 8))
            continue
        fuzz_operation(op, w.svc.url, host_token if is_hook else token, deadline, EXAMPLES)
        if is_hook:  # the same with a user token: must be a clean 403 every time
            fuzz_operation(op, w.svc.url, user_token, deadline, max(10, EXAMPLES // 8))
    failures = STATS["failures"]
    assert failures == [], f"{len(failures)} failing cases:\n" + "\n---\n".join(failures[:5])
    assert STATS["cases"] >= 5000 or os.environ.get("JIT_FUZZ_EXAMPLES"), STATS["cases"]
    # The cases got past auth and reached real rows, not just 401/404.
    ok = sum(n for status, n in STATS["by_status"].items() if 200 <= status < 300)
    assert ok >= STATS["cases"] // 10, STATS["by_status"]
    # The service survived: still healthy, audit chain intact.
    assert w.call(None, "GET", "/healthz")[0] == 200
    assert "audit chain OK" in w.svc.admin("audit", "verify")


def test_fuzz_stateful(fuzz_env):
    """Sequences of calls chained by links schemathesis infers from the schema
    (POST /requests -> approve -> revoke, POST /keys -> DELETE ...)."""
    w, schema = fuzz_env
    token, url = w.tokens["root"], w.svc.url  # bounded by examples x steps (600 calls)
    calls: dict[str, int] = {}
    failures: list[str] = []

    class Workflow(schema.as_state_machine()):
        def setup(self) -> None:
            self.session = requests.Session()

        def get_call_kwargs(self, case) -> dict:  # noqa: ANN001
            t = w.tokens["tok"] if case.operation.path in TOKEN_OPS else token
            drop_framing_headers(case)
            headers = {"Authorization": f"Bearer {t}"}
            return {"headers": headers, "session": self.session, "base_url": url, "timeout": 10}

        def validate_response(self, response, case, additional_checks=(), **kwargs) -> None:  # noqa: ANN001, ANN003
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as e:
                failures.append(f"{case.operation.label}: {str(e)[:1500]}")

    # Small batches: link-driven generation depends on what the server answered,
    # which Hypothesis may flag as a flaky strategy; that only ends one batch.
    flaky = 0
    for _ in range(STATEFUL_EXAMPLES // 10):
        try:
            Workflow.run(
                settings=settings(
                    max_examples=10,
                    stateful_step_count=10,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
            )
        except FlakyStrategyDefinition:
            flaky += 1
    total = sum(calls.values())
    STATS["cases"] += total
    STATS["failures"] += failures
    record(fuzz_stateful_calls=total)
    assert failures == [], f"{len(failures)} failing calls:\n" + "\n---\n".join(failures[:5])
    assert total >= STATEFUL_EXAMPLES, calls
    # Chains reached the state-changing operations.
    assert any("/approve" in label or "/revoke" in label for label in calls), calls
    assert "audit chain OK" in w.svc.admin("audit", "verify")
