"""jit-authorized-keys: golden renderer cases and main() against a real local server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jit_hooks.errors import BadResponse, KeyParseError
from jit_hooks.host.login import authorized_keys, connection
from jit_hooks.host.login.authorized_keys import expiry_time, main, offered_key, respond

GOLDEN = Path(__file__).parent.parent / "data" / "akc"
EXPIRES = 1764003600


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir()))
def test_golden(case):
    inp = json.loads((GOLDEN / case / "input").read_text())
    offered = offered_key(inp["login"], inp["fingerprint"], inp["key_type"], inp["key"])
    asked = {k: inp[k] for k in ("host", "login", "fingerprint", "key_type", "key", "connection")}
    text, fields = respond(inp["answer"], offered, inp["now"], asked)
    assert text == (GOLDEN / case / "expected").read_text()
    # Cases with a `reason` file: "REASON FIELD=ANSWERED", e.g. "mismatch login=root".
    if (GOLDEN / case / "reason").exists():
        reason, _, wrong = (GOLDEN / case / "reason").read_text().strip().partition(" ")
        assert (fields["decision"], fields["reason"]) == ("deny", reason)
        assert f"{fields['mismatch']}={fields['answered']}" == wrong
    # Whatever the service sent, at most one line, and only our own parts in it.
    assert text.count("\n") <= 1
    if text:
        assert text.split(" ")[1:3] == [inp["key_type"], inp["key"]]


@pytest.mark.parametrize("answer", [None, [], {"keys": "x"}, {"key": []}, {"keys": [{}] * 101}])
def test_answer_schema_errors(answer, keypair):
    _, pub = keypair
    with pytest.raises(BadResponse):
        respond(answer, pub, 0, {"host": None, "login": "deploy"})


def test_expiry_time_is_utc_with_seconds():
    assert expiry_time(1764003601) == "20251124170001Z"


@pytest.mark.parametrize(
    "args",
    [
        ("Deploy", "fp", "ssh-ed25519", "AAAA"),
        ("deploy", "SHA256:" + "A" * 43, "ssh-ed25519", "AAAA"),
        ("deploy", "SHA256:" + "A" * 43, "ssh-dss", "AAAAB3NzaC1kc3MAAACBAP"),
    ],
)
def test_offered_key_validation(args):
    with pytest.raises(KeyParseError):
        offered_key(*args)


# An hour ahead: within the host's default max_grant (24 h).
EXPIRES = int(time.time()) + 3600


def key_answer(pub, **over):
    entry = {
        "key_type": pub.key_type,
        "key": pub.blob,
        "fingerprint": pub.fingerprint,
        "expires_at": EXPIRES,
        "options": ["no-pty"],
        "request_id": 7,
    }
    entry.update(over)
    return {"keys": [entry]}


def akc_args(config_path, pub, login="deploy"):
    return ["--config", config_path, login, pub.fingerprint, pub.key_type, pub.blob]


def test_main_prints_key_records_it_and_logs(config, fault, keypair, sink, capsys):
    _, pub = keypair
    fault.answer = key_answer(pub)
    assert main(akc_args(config.path, pub)) == 0
    out = capsys.readouterr().out
    line = f"no-pty {pub.key_type} {pub.blob} jit-request-7\n"
    assert out == f'expiry-time="{expiry_time(EXPIRES)}",{line}'
    assert fault.requests[0].json() == {
        "host": "web1",
        "login": "deploy",
        "fingerprint": pub.fingerprint,
        "key_type": pub.key_type,
        "key": pub.blob,
        "connection": connection.connection_id(),
    }
    rec = connection.accepted_key(config.state_dir, connection.connection_id())
    assert rec["fingerprint"] == pub.fingerprint and rec["login"] == "deploy"
    sink.wait_for(r"decision=allow .*request=7", ident="jit-authorized-keys")


def test_main_no_approval_prints_nothing(config, fault, keypair, sink, capsys):
    _, pub = keypair
    fault.answer = {"keys": []}
    assert main(akc_args(config.path, pub)) == 0
    assert capsys.readouterr().out == ""
    sink.wait_for("decision=deny .*reason=no_approval")
    assert connection.accepted_key(config.state_dir, connection.connection_id()) is None


def test_main_drops_injected_option(config, fault, keypair, sink, capsys):
    _, pub = keypair
    fault.answer = key_answer(pub, options=['command="/bin/sh"'])
    assert main(akc_args(config.path, pub)) == 0
    assert capsys.readouterr().out == ""
    sink.wait_for("decision=deny .*reason=dropped dropped=option_not_allowed")


@pytest.mark.parametrize("fault_name, reason", [("status", "http_500"), ("garbage", "malformed")])
def test_main_service_failure_exits_1(config, fault, keypair, sink, capsys, fault_name, reason):
    _, pub = keypair
    fault.fault, fault.status = fault_name, 500
    assert main(akc_args(config.path, pub)) == 1
    assert capsys.readouterr().out == ""
    sink.wait_for(f"decision=deny .*reason={reason}")


def test_main_missing_state_dir_denies(config, fault, keypair, sink, capsys):
    _, pub = keypair
    fault.answer = key_answer(pub)
    os.rmdir(config.state_dir)
    assert main(akc_args(config.path, pub)) == 1
    assert capsys.readouterr().out == ""
    assert fault.requests == []  # refused before asking: no key line could be recorded
    sink.wait_for("decision=deny .*reason=config .*state dir")


def test_main_break_glass_skips_service(write_config, fault, keypair, sink, capsys):
    _, pub = keypair
    path = write_config([fault.url], break_glass=["breakglass"])
    assert main(akc_args(path, pub, login="breakglass")) == 0
    assert capsys.readouterr().out == ""
    assert fault.requests == []
    sink.wait_for("decision=skip .*reason=break_glass")


def test_main_bad_config_denies(tmp_path, keypair, capsys):
    _, pub = keypair
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = [")
    assert main(akc_args(str(bad), pub)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "reason=config" in captured.err  # no syslog socket configured: stderr fallback


def test_main_usage_error(config, capsys):
    assert main(["--config", config.path, "deploy"]) == 2
    assert capsys.readouterr().out == ""


def test_main_mismatched_fingerprint_argument(config, fault, keypair, other_key, sink, capsys):
    _, pub = keypair
    args = ["--config", config.path, "deploy", other_key.fingerprint, pub.key_type, pub.blob]
    assert main(args) == 1
    assert fault.requests == []
    sink.wait_for("reason=bad_input")


def test_module_has_main():
    assert callable(authorized_keys.main)


def test_second_run_on_the_same_connection_reuses_the_answer(config, fault, keypair, sink, capsys):
    """sshd's second AKC run (signature check) reprints without asking the service."""
    _, pub = keypair
    fault.answer = key_answer(pub)
    assert main(akc_args(config.path, pub)) == 0
    first = capsys.readouterr().out
    assert main(akc_args(config.path, pub)) == 0
    assert capsys.readouterr().out == first != ""
    assert len(fault.requests) == 1
    sink.wait_for(r"decision=allow .*reused=yes")


def test_other_key_or_login_on_the_same_connection_asks_again(
    config, fault, keypair, other_key, capsys
):
    _, pub = keypair
    fault.answer = key_answer(pub)
    assert main(akc_args(config.path, pub)) == 0
    fault.answer = {"keys": []}
    assert main(akc_args(config.path, other_key)) == 0
    assert main(akc_args(config.path, pub, login="other")) == 0
    assert len(fault.requests) == 3
    assert capsys.readouterr().out.count("\n") == 1


def test_stale_record_is_not_reused(config, fault, keypair, capsys):
    _, pub = keypair
    connection.record_accepted(
        config.state_dir, connection.connection_id(), login="deploy", key_type=pub.key_type,
        fingerprint=pub.fingerprint, request_id=7, expires_at=4102444800,
        now=time.time() - authorized_keys.REUSE_SECONDS - 1,
    )  # fmt: skip
    fault.answer = {"keys": []}
    assert main(akc_args(config.path, pub)) == 0
    assert capsys.readouterr().out == "" and len(fault.requests) == 1


@pytest.mark.parametrize(
    "echo, mismatch",
    [
        ({"login": "root"}, "login=root"),
        ({"host": "web2"}, "host=web2"),
        ({"fingerprint": "SHA256:" + "B" * 43}, "fingerprint=SHA256:" + "B" * 43),
        ({"connection": "1:2"}, "connection=1:2"),
        ({"host": "web1\nevil"}, "host=invalid"),
        (None, "echo=missing"),  # a service older than the echo
    ],
)
def test_answer_to_another_question_denies(config, fault, keypair, sink, capsys, echo, mismatch):
    """A valid key answer for another login/host/key/connection is never printed."""
    _, pub = keypair
    fault.answer = key_answer(pub)
    if echo is None:
        fault.echo = False
    else:
        fault.answer |= echo
    assert main(akc_args(config.path, pub)) == 1
    assert capsys.readouterr().out == ""
    field, _, answered = mismatch.partition("=")
    line = sink.wait_for("decision=deny .*reason=mismatch", ident="jit-authorized-keys")
    assert f"mismatch={field} answered={answered}" in line
    assert "evil" not in "\n".join(sink.messages())
    assert connection.accepted_key(config.state_dir, connection.connection_id()) is None


def test_unnamed_host_accepts_the_services_name(write_config, fault, keypair, sink, capsys):
    """Without host.name the hook sends no name and takes the token's host name as echoed."""
    _, pub = keypair
    path = write_config([fault.url])
    text = Path(path).read_text().replace('[host]\nname = "web1"\n', "")
    Path(path).write_text(text)
    fault.answer = key_answer(pub) | {"host": "web7.example.com"}
    assert main(akc_args(path, pub)) == 0
    assert capsys.readouterr().out.endswith("jit-request-7\n")
    assert fault.requests[0].json()["host"] is None
    sink.wait_for("decision=allow .*host=web7.example.com")
