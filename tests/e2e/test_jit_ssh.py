"""The requester's side at ssh time, with the real ssh client, sshd, hooks and service:
the ssh_config snippet's hint (`jit hint` through `Match exec`) and `jit ssh`.

The `jit` run here is the installed console script of this checkout (.venv/bin/jit,
entry point jit_hooks.cli.entry), found on PATH as the snippet expects.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jit_hooks.testing.sshd import free_port

REPO = Path(__file__).resolve().parents[2]
SNIPPET = REPO / "packaging/host/usr/share/jit-hooks/ssh_config.d/jit-hint.conf"
JIT = Path(sys.executable).parent / "jit"
HINT = "jit: no active approval for"


@pytest.fixture
def jit_env(world, tmp_path):
    if not JIT.exists():
        pytest.skip(f"{JIT} is not installed (pip install -e .)")
    return {
        "PATH": f"{JIT.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "JIT_CONFIG": str(tmp_path / "no-config.toml"),  # never the machine's own
        "JIT_URL": world.svc.url,
        "JIT_TOKEN": world.tokens["alice"],
    }


def ssh_web1(world, config: Path, env: dict, *command: str, log_level="ERROR"):
    """`ssh -F CONFIG LOGIN@web1` with web1 reaching the sandbox's sshd (HostName)."""
    args = [
        "ssh", "-F", str(config), "-p", str(world.box.port), "-o", "HostName=127.0.0.1",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", f"LogLevel={log_level}", "-o", "ConnectTimeout=10",
        "-i", str(world.person("alice").key_path), "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", f"{world.login}@web1", *command,
    ]  # fmt: skip
    return subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "ssh_config"
    path.write_text(f"Include {SNIPPET}\n")
    return path


def test_snippet_hints_when_no_approval_and_stays_quiet_with_one(world, jit_env, config):
    r = ssh_web1(world, config, jit_env, "echo ran-ok")
    assert r.returncode == 255 and "ran-ok" not in r.stdout, r
    expected = f"{HINT} {world.login}@web1 - run: jit request web1 --login {world.login}"
    assert expected in r.stderr, r.stderr
    assert "Permission denied" in r.stderr

    world.approve(world.request("alice"))
    r = ssh_web1(world, config, jit_env, "echo ran-ok $(id -un)")
    assert r.returncode == 0 and r.stdout.split() == ["ran-ok", world.login], r
    assert HINT not in r.stderr


def test_snippet_never_blocks_ssh_when_the_service_is_unreachable_or_hangs(world, jit_env, config):
    """The hooks' service is fine (approved); only the requester's view of it is broken:
    refused, then a server that accepts and never answers. ssh goes on, with no hint,
    and the Match did run `jit hint` (ssh's debug3 lines say so) and did not apply."""
    world.approve(world.request("alice"))
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # never accept()ed: the connect succeeds, no answer ever comes
    try:
        for url in (f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{hang.getsockname()[1]}"):
            env = {**jit_env, "JIT_URL": url}
            r = ssh_web1(world, config, env, "echo ran-ok", log_level="DEBUG3")
            assert r.returncode == 0 and r.stdout.split() == ["ran-ok"], r.stderr[-2000:]
            assert HINT not in r.stderr
            assert "Executing command: 'jit hint 'web1'" in r.stderr, r.stderr[-3000:]
            assert "command returned status 1" in r.stderr
    finally:
        hang.close()


def test_hint_import_time_stays_small():
    """`jit hint` loads neither click nor requests (they cost ~60 ms an ssh)."""
    code = (
        "import sys; from jit_hooks.cli.entry import main; main(['hint', '-h']); "
        "print(sorted(sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin"}
    )
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.splitlines()[-1]
    for heavy in ("'click'", "'requests'", "'urllib3'", "'jit_hooks.cli.jit'"):
        assert heavy not in loaded


def jit_ssh(world, env, *args: str, wait: bool = False):
    ssh_args = [
        "-F", "/dev/null", "-p", str(world.box.port), "-o", "HostName=127.0.0.1",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-i", str(world.person("alice").key_path),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "echo ran-ok $(id -un)",
    ]  # fmt: skip
    cmd = [str(JIT), "ssh", "web1", "--as", world.login, *args, "--", *ssh_args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def pending(world) -> list[dict]:
    return world.api("GET", "/api/v1/requests?scope=mine&state=pending", "alice")["requests"]


def test_jit_ssh_requests_waits_for_the_approval_then_connects(world, jit_env):
    proc = jit_ssh(world, jit_env, "--reason", "INC-42 disk full", "--for", "15m", "--wait")
    try:
        deadline = time.monotonic() + 60
        while not pending(world):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no request was made"
            time.sleep(0.2)
        [req] = pending(world)
        assert (req["host"], req["login"], req["reason"], req["duration_seconds"]) == (
            "web1", world.login, "INC-42 disk full", 900,
        )  # fmt: skip
        assert proc.poll() is None  # still waiting: nothing connects before the approval
        world.approve(req["id"])
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.split() == ["ran-ok", world.login]
    assert f"Request {req['id']}" in err

    # With the approval active, `jit ssh` connects straight away and asks for nothing.
    proc = jit_ssh(world, jit_env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.split() == ["ran-ok", world.login], err
    mine = world.api("GET", "/api/v1/requests?scope=mine", "alice")["requests"]
    assert max(r["id"] for r in mine) == req["id"]  # no new request


def test_jit_ssh_without_wait_leaves_the_request_pending_and_does_not_connect(world, jit_env):
    proc = jit_ssh(world, jit_env)  # no --reason, stdin not a terminal
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "a reason is required" in err, err
    assert pending(world) == []

    proc = jit_ssh(world, jit_env, "--reason", "look at logs")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "ran-ok" not in out, (out, err)
    assert "run again with --wait" in err
    [req] = pending(world)
    # Run again: the pending request is reused, not doubled.
    proc = jit_ssh(world, jit_env, "--reason", "look at logs")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and f"Request {req['id']}" in err, err
    assert [r["id"] for r in pending(world)] == [req["id"]]
    assert "ran-ok" not in out


def test_jit_ssh_service_unreachable_fails_with_one_line(world, jit_env):
    env = {**jit_env, "JIT_URL": f"http://127.0.0.1:{free_port()}"}
    proc = jit_ssh(world, env, "--reason", "x")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and out == "", (out, err)
    assert err.startswith("jit: error: cannot reach service") and err.count("\n") == 1


def test_jit_hint_cli_exit_status_is_always_nonzero(world, jit_env):
    world.approve(world.request("alice"))
    for args in (["web1", world.login], ["web9", world.login], [], ["-h"]):
        r = subprocess.run(
            [str(JIT), "hint", *args], capture_output=True, text=True, env=jit_env, timeout=60
        )
        assert r.returncode == 1, (args, r)
    r = subprocess.run(
        [str(JIT), "hint", "web9", world.login], capture_output=True, text=True, env=jit_env
    )
    assert f"{HINT} {world.login}@web9" in r.stderr and r.stdout == ""
    env = {k: v for k, v in jit_env.items() if not k.startswith("JIT_")}
    env["JIT_CONFIG"] = jit_env["JIT_CONFIG"]
    r = subprocess.run([str(JIT), "hint", "web9", "root"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and r.stderr == ""  # not logged in: silent
