"""The reviewer's attacks through a real sshd + PAM + hooks (issue 15 items 1 and 8).

1. An operator left the host config world-writable; an unprivileged local user
   (uid nobody, a real process) rewrites ``urls`` to a service of their own that
   approves their key. The login must be refused and that service never asked.
2. The service's database moves an approval's end ten years on; the host's
   max_grant refuses it (no key line, reason=grant_too_long).

Both tests log in for real first or check their precondition, so a pass can't
come from a login that would have failed anyway.
"""

from __future__ import annotations

import os
import subprocess
import time

from jit_hooks.protocol import HOOK_ACCOUNT, HOOK_AUTHORIZED_KEYS, HOOK_SESSION
from tests.e2e.test_login import assert_denied, assert_in
from tests.utils.fault_server import FaultServer

AKC = "jit-authorized-keys"
NOBODY = 65534
TEN_YEARS = 10 * 365 * 86400


def attacker_service(key) -> FaultServer:  # noqa: ANN001
    """A hook API that lets ``key`` in as anyone (it echoes every question)."""
    until = int(time.time()) + 3600
    allow = {"decision": "allow", "reason": "ok", "request_id": 1, "expires_at": until}
    entry = {
        "key_type": key.key_type,
        "key": key.blob,
        "fingerprint": key.fingerprint,
        "expires_at": until,
        "options": [],
        "request_id": 1,
    }
    return FaultServer(
        routes={
            HOOK_AUTHORIZED_KEYS: {"answer": {"keys": [entry]}},
            HOOK_ACCOUNT: {"answer": allow},
            HOOK_SESSION: {"answer": allow},
        }
    )


def test_world_writable_config_rewritten_by_a_local_user_lets_nobody_in(world):
    box = world.box
    mallory = world.person("mallory")  # registered, never approved
    evil = attacker_service(mallory.public)
    try:
        os.chmod(box.config_path, 0o666)  # the operator's mistake
        text = box.config_path.read_text()
        rewritten = text.replace(f'urls = ["{world.svc.url}"]', f'urls = ["{evil.url}"]')
        assert rewritten != text
        # The attack itself, by an unprivileged process.
        subprocess.run(
            ["sh", "-c", 'cat > "$1"', "sh", str(box.config_path)],
            input=rewritten, text=True, check=True, user=NOBODY, group=NOBODY,
        )  # fmt: skip
        assert evil.url in box.config_path.read_text()
        assert_denied(world.ssh("mallory", "echo ran-ok $(id -un)"))
        assert evil.requests == []  # the hooks never asked the attacker's service
        # Control: the same rewritten config with the mode fixed (as if root had
        # written it) does let mallory in: the refusal above came from the mode alone.
        os.chmod(box.config_path, 0o644)
        assert_in(world.ssh("mallory", "echo ran-ok $(id -un)"), world.login)
        assert evil.requests != []
    finally:
        evil.stop()
        os.chmod(box.config_path, 0o644)


def test_approval_moved_ten_years_on_is_refused(world):
    rid = world.request("alice")
    world.approve(rid)
    far = int(time.time()) + TEN_YEARS
    world.svc.sqlite("UPDATE requests SET ends_at = ? WHERE id = ?", (far, rid))
    assert_denied(world.ssh("alice", "echo ran-ok $(id -un)"))
    line = world.box.sink.wait_for(
        rf"decision=deny .*reason=grant_too_long request={rid}", ident=AKC
    )
    assert f"expires={far}" in line
    # Control: the same approval with its real end lets alice in.
    world.svc.sqlite("UPDATE requests SET ends_at = ? WHERE id = ?", (int(time.time()) + 600, rid))
    assert_in(world.ssh("alice", "echo ran-ok $(id -un)"), world.login)
