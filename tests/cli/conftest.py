"""Fixtures for the `jit` CLI tests: one real service for the session, a `jit` per user."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jit_hooks.testing.service import Service, start_service

REPO = Path(__file__).resolve().parents[2]

POLICY = """
[[policy]]
name = "web-prod"
hosts = ["web1"]
logins = ["deploy"]
requesters = { users = [], roles = ["requester"] }
approvers = { users = [], roles = ["approver"] }
approvals_required = 1
max_duration = 14400
reason_required = true
auto_approve = false
options = ["no-agent-forwarding"]

[[policy]]
name = "db-labels"
labels = { env = "prod", team = "db" }
logins = ["postgres"]
requesters = { users = [], roles = ["requester"] }
approvers = { users = [], roles = ["approver"] }
approvals_required = 1
max_duration = 7200
reason_required = false
auto_approve = false
"""

# name -> roles. dave may both request and approve: he still must not approve himself.
USERS = {
    "alice": ["requester"],
    "bob": ["approver"],
    "carol": ["admin"],
    "dave": ["requester", "approver"],
}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Jit:
    """Runs the real `jit` in a subprocess with its own HOME (and so its own config)."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable

    def __call__(self, *args: str, input: str | None = None) -> Result:
        r = subprocess.run(
            [self.python, "-m", "jit_hooks.cli.jit", *args],
            capture_output=True,
            text=True,
            input=input,
            env=self.env,
            timeout=60,
        )
        return Result(r.returncode, r.stdout, r.stderr)

    def ok(self, *args: str, input: str | None = None) -> str:
        r = self(*args, input=input)
        assert r.returncode == 0, f"jit {' '.join(args)} -> {r.returncode}: {r.stderr}{r.stdout}"
        return r.stdout

    @property
    def config(self) -> Path:
        return self.home / ".config" / "jit" / "config.toml"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JIT_") and k not in ("XDG_CONFIG_HOME", "HOME")
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


@dataclass
class World:
    service: Service
    tokens: dict[str, str]

    def jit(self, home: Path, **extra: str) -> Jit:
        home.mkdir(parents=True, exist_ok=True)
        return Jit(home=home, env=clean_env(home, **extra))

    def logged_in(self, tmp_path: Path, user: str) -> Jit:
        """A `jit` for `user`, logged in through `jit login --token-stdin`."""
        j = self.jit(tmp_path / f"home-{user}")
        j.ok("login", "--url", self.service.url, "--token-stdin", input=self.tokens[user] + "\n")
        return j


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    svc = start_service(tmp_path_factory.mktemp("jit-service"))
    try:
        tokens = {}
        for name, roles in USERS.items():
            args = ["user", "add", name]
            for role in roles:
                args += ["--role", role]
            svc.admin(*args)
            tokens[name] = svc.admin("token", "create", name).strip()
        svc.admin("host", "add", "web1", "--label", "env=prod")
        svc.admin("host", "add", "db1", "--label", "env=prod", "--label", "team=db")
        policy = svc.data_dir / "policy.toml"
        policy.write_text(POLICY)
        svc.admin("policy", "add", str(policy))
        yield World(service=svc, tokens=tokens)
    finally:
        svc.stop()
