"""Builders for service tests: people, hosts, policies and keys on a real service."""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.utils.service import Service

POLICY = """
[[policy]]
name = "web-prod"
hosts = ["web1"]
logins = ["deploy"]
requesters = {{ roles = ["requester"] }}
approvers = {{ roles = ["approver"] }}
approvals_required = {n}
max_duration = 14400
reason_required = true
options = ["no-agent-forwarding", "no-port-forwarding"]
"""


@dataclass
class SshKey:
    line: str
    key_type: str
    blob: str
    fingerprint: str


def make_key(directory: Path, name: str) -> SshKey:
    """A fresh ed25519 key made by the real ssh-keygen."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(path)],
        check=True,
    )
    line = (directory / f"{name}.pub").read_text().strip()
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    key_type, blob = line.split()[:2]
    return SshKey(line=line, key_type=key_type, blob=blob, fingerprint=fp)


@dataclass
class World:
    svc: Service
    tokens: dict[str, str] = field(default_factory=dict)
    host_tokens: dict[str, str] = field(default_factory=dict)
    keys: dict[str, SshKey] = field(default_factory=dict)

    def call(self, who: str | None, method: str, path: str, body=None):  # noqa: ANN001
        token = self.tokens.get(who) or self.host_tokens.get(who) if who else None
        return self.svc.call(method, path, token=token, body=body)

    def policy(self, text: str) -> None:
        f = self.svc.data_dir / "policy.toml"
        f.write_text(textwrap.dedent(text))
        self.svc.admin("policy", "add", str(f))

    def request(self, who: str = "alice", **kw):  # noqa: ANN003
        body = {
            "host": "web1",
            "login": "deploy",
            "reason": "INC-1 disk full",
            "duration_seconds": 600,
        }
        body.update(kw)
        return self.call(who, "POST", "/api/v1/requests", body)

    def akc(self, host: str, who: str, login: str = "deploy"):
        k = self.keys[who]
        return self.call(
            host,
            "POST",
            "/api/v1/hook/authorized-keys",
            {"login": login, "fingerprint": k.fingerprint, "key_type": k.key_type, "key": k.blob},
        )


def build_world(svc: Service, tmp_path: Path, *, approvals: int = 1) -> World:
    w = World(svc)
    people = {"alice": "requester", "bob": "approver", "carol": "approver", "root-admin": "admin"}
    for name, role in people.items():
        svc.admin("user", "add", name, "--role", role)
        w.tokens[name] = svc.admin("token", "create", name).strip()
    svc.admin("user", "add", "mallory", "--role", "requester", "--role", "approver")
    w.tokens["mallory"] = svc.admin("token", "create", "mallory").strip()
    w.host_tokens["web1"] = svc.admin("host", "add", "web1", "--label", "env=prod").strip()
    w.host_tokens["web2"] = svc.admin("host", "add", "web2", "--label", "env=prod").strip()
    w.policy(POLICY.format(n=approvals))
    for name in ("alice", "mallory"):
        w.keys[name] = make_key(tmp_path, name)
        status, body = w.call(name, "POST", "/api/v1/keys", {"public_key": w.keys[name].line})
        assert status == 201, body
    return w


@pytest.fixture
def world(service: Service, tmp_path: Path) -> World:
    return build_world(service, tmp_path)
