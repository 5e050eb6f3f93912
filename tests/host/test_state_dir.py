"""The state dir is under the trust rule (review finding 3).

Whoever can write the state dir plants the connection's accepted-key record: the AKC
then reprints a key line without asking the service, and the account hook asks about
whatever key the record names. So both hooks deny (reason=config) unless the dir is a
real directory owned by root or jit-hooks, mode 0700, below root-owned directories that
are not group/world-writable. Real files, real fault server standing in for the service.
"""

from __future__ import annotations

import json
import os
import pwd
import time

import pytest

from jit_hooks.host.login import authorized_keys, connection, pam_account
from tests.host.conftest import *  # noqa: F403
from tests.host.test_authorized_keys import akc_args, key_answer
from tests.host.test_pam import pam_env  # noqa: F401

NOBODY = pwd.getpwnam("nobody")


def plant(state: str, key, login: str = "deploy") -> None:
    """What a user owning the state dir could write: a fresh record for ``key``."""
    path = os.path.join(state, "conn-" + connection.connection_id().replace(":", "-"))
    rec = {
        "login": login,
        "key_type": key.key_type,
        "fingerprint": key.fingerprint,
        "request_id": 1,
        "expires_at": int(time.time()) + 600,
        "options": [],
        "written_at": time.time(),
    }
    with open(path, "w") as f:
        json.dump(rec, f)
    os.chmod(path, 0o600)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)


def test_user_owned_state_dir_denies_both_hooks(
    write_config,
    fault,
    sink,
    keypair,
    other_key,
    pam_env,  # noqa: F811
    capsys,
):
    _, attacker = keypair
    path = write_config([fault.url])
    state = load_config(path).state_dir  # noqa: F405
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    plant(state, attacker)
    assert authorized_keys.main(akc_args(path, attacker)) == 1
    assert attacker.blob not in capsys.readouterr().out
    sink.wait_for(f"decision=deny .*reason=config .*{state}: state dir is owned by uid")
    plant(state, other_key)
    fault.answer = {"decision": "allow", "reason": "ok", "request_id": 1,
                    "expires_at": int(time.time()) + 600}  # fmt: skip
    pam_env()
    assert pam_account.main(["--config", path]) == 1
    assert fault.requests == []  # neither hook asked the service about a planted key
    sink.wait_for("decision=deny .*rhost=127.0.0.1 .*reason=config .*state dir is owned")


@pytest.mark.parametrize("mode", [0o750, 0o701, 0o777])
def test_state_dir_with_group_or_other_bits_denies(write_config, fault, sink, keypair, mode):
    _, pub = keypair
    fault.answer = key_answer(pub)
    path = write_config([fault.url])
    os.chmod(load_config(path).state_dir, mode)  # noqa: F405
    assert authorized_keys.main(akc_args(path, pub)) == 1
    assert fault.requests == []
    sink.wait_for(f"reason=config .*mode {mode:04o}, must be 0700")


def test_state_dir_below_tmp_or_a_symlink_denies(write_config, fault, sink, keypair, tmp_path):
    _, pub = keypair
    fault.answer = key_answer(pub)
    path = write_config([fault.url])
    good = load_config(path).state_dir  # noqa: F405
    below_tmp = tmp_path / "state"
    below_tmp.mkdir(mode=0o700)
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace(good, str(below_tmp)))
    assert authorized_keys.main(akc_args(path, pub)) == 1
    sink.wait_for("reason=config .*directory above state dir")
    link = os.path.join(os.path.dirname(good), "state-link")
    os.symlink(good, link)
    with open(path, "w") as f:
        f.write(text.replace(good, link))
    assert authorized_keys.main(akc_args(path, pub)) == 1
    sink.wait_for("reason=config .*state-link: state dir is not a directory")
    assert fault.requests == []


def test_state_dir_owned_by_the_hook_user_works(write_config, fault, keypair, capsys):
    _, pub = keypair
    fault.answer = key_answer(pub)
    path = write_config([fault.url])
    hook = pwd.getpwnam("jit-hooks")
    os.chown(load_config(path).state_dir, hook.pw_uid, hook.pw_gid)  # noqa: F405
    assert authorized_keys.main(akc_args(path, pub)) == 0
    assert pub.blob in capsys.readouterr().out
