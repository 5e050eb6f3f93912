"""jit_hooks.host.login.pamenv: pam_exec's PAM_* values win over ones the user duplicated.

A real child process is started with a raw envp holding duplicated names, the way
pam_exec builds it (PAM environment first, its own PAM_* values appended). Neither
subprocess nor `env` can produce duplicates (they take a mapping / use setenv), so
the launcher calls libc execve through ctypes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jit_hooks.errors import JitError
from jit_hooks.host.login import pamenv

LAUNCHER = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
argv = [a.encode() for a in sys.argv[2:]]
envp = [e.encode() for e in json.loads(sys.argv[1])]
Argv = ctypes.c_char_p * (len(argv) + 1)
Envp = ctypes.c_char_p * (len(envp) + 1)
libc.execve(argv[0], Argv(*argv, None), Envp(*envp, None))
sys.exit("execve: errno %d" % ctypes.get_errno())
"""

CHILD = r"""
import json, os
from jit_hooks.host.login import pamenv, pam_account
print(json.dumps({
    "os_environ": os.environ.get("PAM_TYPE"),
    "items": pamenv.pam_items("PAM_TYPE", "PAM_USER", "PAM_RHOST", "LANG", "PAM_TTY"),
    "pam_env": pam_account.pam_env(),
}))
"""


def run_with_envp(envp: list[str]) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", LAUNCHER, json.dumps(envp), sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_last_of_a_duplicated_name_wins_as_pam_exec_appended_it():
    # What pam_exec passes after pam_env loaded the user's ~/.pam_environment.
    out = run_with_envp(
        [
            "PAM_TYPE=close_session",  # planted by the user
            "PAM_USER=breakglass",  # planted by the user
            "LANG=C.UTF-8",
            "PAM_SERVICE=sshd",
            "PAM_USER=deploy",  # pam_exec's own values, appended
            "PAM_RHOST=127.0.0.1",
            "PAM_TYPE=open_session",
        ]
    )
    # CPython's os.environ alone would have been fooled (first one wins) ...
    assert out["os_environ"] == "close_session"
    # ... pamenv is not.
    assert out["items"] == {
        "PAM_TYPE": "open_session",
        "PAM_USER": "deploy",
        "PAM_RHOST": "127.0.0.1",
        "LANG": "C.UTF-8",
        "PAM_TTY": None,
    }
    assert out["pam_env"] == ["deploy", "127.0.0.1", "sshd", "open_session"]


def test_names_that_appear_once_come_from_os_environ(monkeypatch):
    monkeypatch.setenv("PAM_USER", "deploy")
    monkeypatch.delenv("PAM_TTY", raising=False)
    assert pamenv.pam_items("PAM_USER", "PAM_TTY") == {"PAM_USER": "deploy", "PAM_TTY": None}


def test_unreadable_environ_fails_closed(tmp_path):
    with pytest.raises(JitError, match="cannot read"):
        pamenv.initial_environ(str(tmp_path / "missing"))


def test_environ_parsing_keeps_order_and_values_with_equals(tmp_path):
    f = tmp_path / "environ"
    f.write_bytes(b"A=1\0B=x=y\0junk\0=z\0A=2\0")
    assert pamenv.initial_environ(str(f)) == [("A", "1"), ("B", "x=y"), ("A", "2")]
