"""A host rides through the death of one service replica (its config lists two URLs).

The real authorized-keys hook (the packaged wrapper's in-process path, run as
the AKC user would run it) asks replica A, then B, within one time budget.
A is killed with SIGKILL; the next hook run still lets alice's approved key in
through B, and a revoke written through B is obeyed at once. Killing B too
leaves the host with no service: the hook denies (prints no key) and logs why.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from jit_hooks.host import paths
from jit_hooks.testing.hooksd import wrapper_text
from jit_hooks.testing.sshd import ensure_hook_user
from jit_hooks.testing.syslog_sink import SyslogSink
from tests.ha.conftest import seed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (trusted config dir, hook user)"),
]
REPO = str(Path(__file__).resolve().parent.parent.parent)
# The hooks trust a config only if root alone can change it and every directory
# above it: a root-owned 0755 directory outside /tmp (as tests/host does).
TRUSTED_BASE = Path("/var/lib/jit-hooks-test")


@pytest.fixture
def host_dir():
    TRUSTED_BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(TRUSTED_BASE, 0o755)
    root = Path(tempfile.mkdtemp(prefix="jha", dir=TRUSTED_BASE))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_next_login_goes_through_the_second_replica(pg, replicas_on, host_dir, tmp_path):
    a, b = replicas_on(pg.create_database("jit"), 2)
    w = seed(a, tmp_path / "keys", approvers=1, approvals=1)
    rid = w.request("alice", "web1")["id"]
    w.approve("bob", rid)

    ensure_hook_user()
    hook_user = pwd.getpwnam(paths.HOOK_USER)
    sink = SyslogSink(host_dir / "log.sock")
    token = host_dir / "host-token"
    token.write_text(w.host_tokens["web1"] + "\n")
    os.chown(token, 0, hook_user.pw_gid)
    os.chmod(token, 0o640)
    state = host_dir / "state"
    state.mkdir(mode=0o700)
    os.chown(state, hook_user.pw_uid, hook_user.pw_gid)
    config = host_dir / "jit-hooks.toml"
    config.write_text(
        f'[service]\nurls = ["{a.url}", "{b.url}"]\ntoken_file = "{token}"\n'
        "connect_timeout = 2.0\ntotal_timeout = 5.0\n"
        '[host]\nname = "web1"\n[break_glass]\naccounts = ["breakglass"]\n'
        f'[state]\ndir = "{state}"\n[log]\nsyslog_socket = "{sink.path}"\n'
    )
    os.chmod(config, 0o644)
    hook = host_dir / "jit-authorized-keys"
    # No jit-hooksd socket: the wrapper runs the hook in its own process.
    hook.write_text(wrapper_text(REPO, "authorized-keys", str(host_dir / "no-hooksd.sock")))
    os.chmod(hook, 0o755)
    key = w.keys["alice"]

    def login() -> subprocess.CompletedProcess:
        sink.clear()
        for entry in state.iterdir():
            entry.unlink()
        return subprocess.run(
            [str(hook), "--config", str(config), "deploy", key.fingerprint, key.key_type,
             key.blob],
            env={}, capture_output=True, timeout=60,
        )  # fmt: skip

    try:
        r = login()
        assert r.returncode == 0 and key.blob.encode() in r.stdout, r
        a.stop(signal.SIGKILL)
        r = login()
        assert r.returncode == 0 and key.blob.encode() in r.stdout, (r, sink.messages())
        line = sink.wait_for("decision=allow", "jit-authorized-keys")
        assert "login=deploy" in line

        assert b.call("POST", f"/api/v1/requests/{rid}/revoke", w.tokens["bob"], {})[0] == 200
        r = login()
        assert key.blob.encode() not in r.stdout, r
        sink.wait_for("decision=deny", "jit-authorized-keys")

        b.stop(signal.SIGKILL)  # no replica left: fail closed, and say why
        r = login()
        assert r.stdout.strip() == b"", r
        line = sink.wait_for("decision=deny", "jit-authorized-keys")
        assert "reason=" in line, line
        print(f"\nride-through: deny line with no replica left: {line}")
    finally:
        sink.close()
