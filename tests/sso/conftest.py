"""A real OpenID provider and a real jit-server configured to sign people in through it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jit_hooks.testing.service import Service, free_port, start_service
from tests.oidc_provider import CLIENT_ID, Provider, available, start_provider
from tests.utils.backends import services_on

# The test provider's people and their groups claim. alice and dave are jit
# users; erin is not (unknown user); dave's only group maps to no role;
# alice-impostor is another IdP account (another sub) whose user name is alice.
ACCOUNTS = {
    "alice": {"groups": ["sre", "staff"]},
    "dave": {"groups": ["interns"]},
    "erin": {"groups": ["sre"]},
    # Another account at the IdP that calls itself alice (a renamed or re-used name).
    "alice-impostor": {"groups": ["sre"], "preferred_username": "alice"},
    # With username_claim = "email": erin's local part at another domain, and at
    # ours but not verified (the string "false", as some IdPs send it).
    "mallory": {"groups": ["sre"], "email": "erin@attacker.example"},
    "ursula": {"groups": ["sre"], "email": "erin@example.org", "email_verified": "false"},
}
GROUP_ROLES = {"sre": "requester approver", "admins": "admin"}

# Each test module sets pytestmark = needs_provider (a conftest pytestmark applies to
# nothing). Without node or the npm package the tests are skipped with the reason,
# except under CI=true, where they run and fail: CI must not pass them silently.
needs_provider = pytest.mark.skipif(
    available() is not None and os.environ.get("CI") != "true", reason=str(available())
)


@dataclass
class SsoWorld:
    provider: Provider
    service: Service

    @staticmethod
    def env_for(home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
        env["HOME"] = str(home)
        return env

    def jit(self, home: Path, *args: str) -> subprocess.Popen:
        """Start the real `jit` CLI with its own HOME (so its own config file)."""
        return subprocess.Popen(
            [sys.executable, "-m", "jit_hooks.cli.jit", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env_for(home),
        )

    def run(self, home: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jit_hooks.cli.jit", *args],
            capture_output=True,
            text=True,
            env=self.env_for(home),
            timeout=60,
        )


def oidc_toml(provider: Provider, secret_file: Path, port: int, **extra: str) -> str:
    lines = [
        f'issuer = "{provider.issuer}"',
        f'client_id = "{CLIENT_ID}"',
        f'client_secret_file = "{secret_file}"',
        f'ca_file = "{provider.ca_file}"',
        f'redirect_uri = "http://127.0.0.1:{port}/ui/sso/callback"',
        *(f"{k} = {v}" for k, v in extra.items()),
        "[group_roles]",
        *(f'{g} = "{r}"' for g, r in GROUP_ROLES.items()),
    ]
    return "\n".join(lines) + "\n"


# The polling interval the test IdP announces: `jit login --sso` waits one interval
# before each poll, so the RFC's default 5 s made every device sign-in take 5-10 s.
# None: the IdP announces none, and the service falls back to 5 s.
IDP_INTERVAL = 1


def start_sso_world(
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    device_code_ttl: int = 600,
    interval: int | None = IDP_INTERVAL,
    **extra: str,
) -> SsoWorld:
    port = free_port()
    provider = start_provider(
        tmp / "idp",
        accounts=ACCOUNTS,
        redirect_uris=[f"http://127.0.0.1:{port}/ui/sso/callback"],
        device_code_ttl=device_code_ttl,
        interval=interval,
    )
    try:
        data = tmp / "server"
        data.mkdir(parents=True)
        secret = data / "oidc-client-secret"
        secret.write_text(provider.client_secret + "\n")
        secret.chmod(0o600)
        (data / "oidc.toml").write_text(oidc_toml(provider, secret, port, **extra))
        svc = start_service(data, port, env=env)
    except BaseException:
        provider.stop()
        raise
    svc.admin("user", "add", "alice", "--role", "requester")
    svc.admin("user", "add", "dave", "--role", "requester")
    # alice existed before SSO: an admin links her to her IdP account (its sub is
    # the account id here), or her first SSO sign-in is refused (not_linked).
    svc.admin("sso", "link", "alice", "--subject", "alice")
    return SsoWorld(provider, svc)


@pytest.fixture(scope="module")
def backend(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Modules that use it run on SQLite and on PostgreSQL (tests/utils/backends.py)."""
    with services_on(db_backend, request):
        yield db_backend


@pytest.fixture
def sso(tmp_path: Path) -> Iterator[SsoWorld]:
    w = start_sso_world(tmp_path)
    try:
        yield w
    finally:
        w.service.stop()
        w.provider.stop()
