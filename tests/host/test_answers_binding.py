"""answers.mismatch and the sessions list: an answer is only used for the question it names."""

from __future__ import annotations

import time

import pytest

from jit_hooks.errors import BadResponse
from jit_hooks.host.login import answers
from jit_hooks.host.login.client import HookClient

FP = "SHA256:" + "A" * 43
ASKED = {"host": "web1", "login": "deploy", "fingerprint": FP, "connection": "10:20"}


def echo(**over: object) -> dict:
    return {"host": "web1", "login": "deploy", "fingerprint": FP, "connection": "10:20"} | over


@pytest.mark.parametrize(
    "answer, wrong",
    [
        (echo(), None),
        (echo(login="root"), ("login", "root")),
        (echo(host="web2"), ("host", "web2")),
        (echo(fingerprint=None), ("fingerprint", "null")),
        (echo(connection="10:21"), ("connection", "10:21")),
        (echo(connection=1020), ("connection", "invalid")),  # right digits, wrong type
        (echo(login="deploy\n"), ("login", "invalid")),
        ({k: v for k, v in echo().items() if k != "connection"}, ("connection", "missing")),
        ({"decision": "allow"}, ("echo", "missing")),
        ("allow", ("echo", "missing")),
    ],
)
def test_mismatch(answer, wrong):
    assert answers.mismatch(answer, ASKED) == wrong


def test_unnamed_host_takes_any_valid_name_but_not_none():
    asked = ASKED | {"host": None}
    assert answers.mismatch(echo(host="web9.example.com"), asked) is None
    assert answers.mismatch(echo(host=None), asked) == ("host", "null")
    assert answers.mismatch(echo(host="-bad"), asked) == ("host", "invalid")


def test_fields_not_asked_are_not_compared():
    # The account hook's question has no key fields beyond these; a sessions
    # list is asked nothing but the host.
    assert answers.mismatch({"host": "web1", "login": "x"}, {"host": "web1"}) is None


def sessions_answer(**over: object) -> dict:
    item = {"connection": "10:20", "login": "deploy", "request_id": 3, "reason": "revoked"}
    return {"end": [item], "active": [], "time": int(time.time())} | over


def test_sessions_list_of_another_host_is_refused_whole(config, fault):
    """enforce must not end (or keep) sessions from a list meant for another host."""
    fault.answer = sessions_answer(host="web2")
    with pytest.raises(BadResponse) as e:
        HookClient(config).open_sessions()
    assert e.value.reason == "mismatch"
    fault.answer = sessions_answer()  # the fault server names host web1, like the service
    assert [s["connection"] for s in HookClient(config).open_sessions()["end"]] == ["10:20"]


def test_sessions_list_without_host_is_refused(config, fault):
    fault.echo = False  # a service older than the echo
    fault.answer = sessions_answer()
    with pytest.raises(BadResponse) as e:
        HookClient(config).open_sessions()
    assert e.value.reason == "mismatch"


def test_sessions_check_without_host_name():
    assert answers.sessions(sessions_answer(host="web7"))["end"][0]["connection"] == "10:20"
    with pytest.raises(BadResponse):
        answers.sessions(sessions_answer(host="web7"), "web1")


def test_break_glass_report_answered_for_another_login_is_not_taken_as_recorded(config, fault):
    """The report stays unreported (and spooled by its caller) unless the answer echoes it."""
    query = {"login": "breakglass", "rhost": None, "connection": "10:20", "stage": "account"}
    query |= {"report_id": "0" * 32, "at": int(time.time())}
    fault.answer = {"recorded": True, "login": "root"}
    with pytest.raises(BadResponse) as e:
        HookClient(config).break_glass(query)
    assert e.value.reason == "mismatch"
    fault.answer = {"recorded": True}  # echoed like the service does
    assert HookClient(config).break_glass(query) is True
    assert fault.requests[-1].json()["login"] == "breakglass"


@pytest.mark.parametrize(
    ("field", "other"), [("report_id", "1" * 32), ("stage", "session"), ("report_id", None)]
)
def test_break_glass_answer_for_another_report_is_not_taken_as_recorded(
    config, fault, field, other
):
    """A recorded answer must echo this report's id and stage (another report's
    confirmation must not delete this one from the spool)."""
    query = {"login": "breakglass", "rhost": None, "connection": "10:20", "stage": "account"}
    query |= {"report_id": "0" * 32, "at": int(time.time())}
    fault.answer = {"recorded": True, field: other}
    with pytest.raises(BadResponse) as e:
        HookClient(config).break_glass(query)
    assert e.value.reason == "mismatch" and field in str(e.value)
