"""Seed a real service with people, hosts, a policy, keys and approvals (security suites).

Everything goes through the real admin CLI (`jit-server ...`) and the real HTTP
API, so the tokens and rows are exactly what production would hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jit_hooks.testing.keys import SshKey, make_key  # noqa: F401 (re-exported)
from jit_hooks.testing.service import Service

POLICY = """\
[[policy]]
name = "prod"
hosts = ["web1", "web2"]
logins = ["deploy"]
requesters = { roles = ["requester"] }
approvers = { roles = ["approver"] }
approvals_required = 1
max_duration = 14400
reason_required = true
options = ["no-agent-forwarding", "no-port-forwarding"]
"""


@dataclass
class World:
    svc: Service
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> token
    host_tokens: dict[str, str] = field(default_factory=dict)  # host name -> live token
    keys: dict[str, SshKey] = field(default_factory=dict)
    key_ids: dict[str, int] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # every token ever issued
    extra: dict = field(default_factory=dict)

    def call(self, token: str | None, method: str, path: str, body=None):  # noqa: ANN001
        return self.svc.call(method, path, token=token, body=body)

    def user(self, name: str, *roles: str) -> str:
        args = [a for r in roles for a in ("--role", r)]
        self.svc.admin("user", "add", name, *args)
        tok = self.svc.admin("token", "create", name).strip()
        self.tokens[name] = tok
        self.secrets.append(tok)
        return tok

    def host(self, name: str, *labels: str) -> str:
        args = [a for lab in labels for a in ("--label", lab)]
        tok = self.svc.admin("host", "add", name, *args).strip()
        self.host_tokens[name] = tok
        self.secrets.append(tok)
        return tok

    def rotate(self, host: str) -> str:
        """Rotate the host's token; return the OLD (now revoked) one."""
        old = self.host_tokens[host]
        new = self.svc.admin("host", "rotate-token", host, "--grace", "0").strip()
        self.host_tokens[host] = new
        self.secrets.append(new)
        return old

    def policy(self, text: str = POLICY) -> None:
        f = self.svc.data_dir / "policy.toml"
        f.write_text(text)
        self.svc.admin("policy", "add", str(f))

    def add_key(self, user: str, directory: Path) -> SshKey:
        key = make_key(directory, user)
        status, body = self.call(
            self.tokens[user], "POST", "/api/v1/keys", {"public_key": key.line}
        )
        assert status == 201, body
        self.keys[user] = key
        self.key_ids[user] = body["id"]
        return key

    def request(self, user: str, host: str = "web1", login: str = "deploy", **kw) -> dict:  # noqa: ANN003
        body = {"host": host, "login": login, "reason": "INC-1 disk full", "duration_seconds": 3600}
        body.update(kw)
        status, out = self.call(self.tokens[user], "POST", "/api/v1/requests", body)
        assert status == 201, out
        return out

    def approve(self, approver: str, request_id: int) -> dict:
        status, out = self.call(
            self.tokens[approver], "POST", f"/api/v1/requests/{request_id}/approve", {}
        )
        assert status == 200, out
        return out

    def leaked_secrets(self) -> list[str]:
        """Tokens (prefix only, for the report) found in the service's log file."""
        log = self.svc.log_path.read_text(errors="replace") if self.svc.log_path else ""
        return [t[:9] + "..." for t in self.secrets if t.split("_", 1)[-1] in log]

    def akc_query(self, user: str, login: str = "deploy") -> dict:
        k = self.keys[user]
        return {"login": login, "fingerprint": k.fingerprint, "key_type": k.key_type, "key": k.blob}


def basic_world(svc: Service, keydir: Path) -> World:
    """alice (requester) holds an approved request for deploy@web1 with her key."""
    w = World(svc)
    w.user("alice", "requester")
    w.user("bob", "approver")
    w.host("web1", "env=prod")
    w.host("web2", "env=prod")
    w.policy()
    w.add_key("alice", keydir)
    w.approve("bob", w.request("alice")["id"])
    return w
