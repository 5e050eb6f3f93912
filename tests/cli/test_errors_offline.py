"""`jit` errors that need no service: one stderr line and the documented exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jit_hooks.testing.service import free_port
from tests.cli.conftest import Jit, clean_env


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("jit: error: "), stderr
    return lines[0]


@pytest.fixture
def jit(tmp_path) -> Jit:
    return Jit(home=tmp_path, env=clean_env(tmp_path))


@pytest.mark.parametrize("args", [["list"], ["status"], ["show", "7"], ["keys", "list"]])
def test_unreachable_service_exits_3(jit, args):
    # A port nobody listens on: connection refused, for real.
    url = f"http://127.0.0.1:{free_port()}"
    r = jit(*args, "--url", url, "--token", "jitu_whatever")
    assert r.returncode == 3
    line = one_error_line(r.stderr)
    assert url in line and "refused" in line.lower()
    assert "jitu_whatever" not in r.stderr + r.stdout
    assert r.stdout == ""


def test_unreachable_login_exits_3(jit):
    r = jit("login", "--url", f"http://127.0.0.1:{free_port()}", "--token-stdin", input="jitu_x\n")
    assert r.returncode == 3
    one_error_line(r.stderr)
    assert not jit.config.exists()


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["request", "web1", "--login", "deploy", "--duration", "2x"], "not a duration"),
        (["request", "web1", "--login", "deploy", "--duration", "0"], "more than 0"),
        (["request", "web1", "--login", "deploy", "--duration", "1h", "--start", "soon"], "soon"),
        (
            ["request", "web1", "--login", "deploy", "--duration", "1h", "--start", "2020-01-01"],
            "in the past",
        ),
        (["request", "--login", "deploy", "--duration", "1h"], "HOST or --selector"),
        (["request", "web1", "-s", "env=prod", "--login", "d", "--duration", "1h"], "not both"),
        (["request", "-s", "envprod", "--login", "d", "--duration", "1h"], "key=value"),
        (["list", "--state", "bogus"], "bogus"),
        (["show", "abc"], "abc"),
        (["approve"], "ID"),
    ],
)
def test_usage_errors_exit_2(jit, args, what):
    # Usage is checked before any network call: no URL is configured at all.
    r = jit(*args)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert what in line
    assert r.stdout == ""


def test_no_url_configured(jit):
    r = jit("list")
    assert r.returncode == 1
    assert "no service URL" in one_error_line(r.stderr)


def test_broken_config_is_one_line(jit, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('url = "http://127.0.0.1:1"\ntokn = "x"\n')
    r = jit("list", "--config", str(cfg))
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert str(cfg) in line and "tokn" in line


def test_not_logged_in(jit):
    r = jit("keys", "list", "--url", "http://127.0.0.1:1")
    assert r.returncode == 1
    assert "jit login" in one_error_line(r.stderr)


def test_console_script(tmp_path):
    """The installed `jit` entry point (pyproject's console script) runs."""
    script = Path(sys.executable).parent / "jit"
    if not script.exists():
        pytest.skip("jit-hooks is not installed in this interpreter's environment")
    env = clean_env(tmp_path)
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.startswith("jit, version ")
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    for command in ("login", "keys", "request", "list", "approve", "revoke", "status", "audit"):
        assert f"  {command} " in r.stdout
