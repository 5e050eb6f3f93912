"""Decision lines: key=value, printable, quoted when needed, sent to syslog authpriv."""

from __future__ import annotations

from jit_hooks.host.login.log import HookLog, format_fields


def test_format_fields_quotes_and_strips():
    line = format_fields(
        {
            "decision": "deny",
            "login": "deploy",
            "reason": 'two words "x"',
            "skip": None,
            "evil": "a\nb\x00c",
            "empty": "",
        }
    )
    assert line == 'decision=deny login=deploy reason="two words \\"x\\"" evil=abc empty=""'


def test_line_reaches_syslog_with_authpriv_priority(sink):
    HookLog("jit-test", str(sink.path)).warning(decision="deny", reason="timeout")
    sink.wait_for("decision=deny reason=timeout", ident="jit-test")
    ((pri, ident, _msg),) = sink.lines
    assert pri == (10 << 3) | 4 and ident == "jit-test"


def test_missing_socket_falls_back_to_stderr(tmp_path, capsys):
    HookLog("jit-test", str(tmp_path / "nope")).info(decision="allow")
    assert "jit-test: decision=allow" in capsys.readouterr().err
