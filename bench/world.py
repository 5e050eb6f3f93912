"""A real service seeded for benchmarks: people, a host, a policy, keys and approvals.

Uses the same building blocks as the tests (jit_hooks/testing/service.py starts the
real jit-server process over real HTTP); everything goes through the admin CLI
and the public API, as in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from jit_hooks.testing import trusted
from jit_hooks.testing.service import Service, free_port
from jit_hooks.testing.syslog_sink import SyslogSink

REPO = Path(__file__).resolve().parent.parent
LOGIN = "deploy"
POLICY = """\
[[policy]]
name = "bench"
hosts = ["{host}"]
logins = ["{login}"]
requesters = {{ roles = ["requester"] }}
approvers = {{ roles = ["approver"] }}
approvals_required = 1
max_duration = 14400
reason_required = true
options = ["no-agent-forwarding"]
"""


@dataclass
class Key:
    path: Path  # private key
    line: str
    key_type: str
    blob: str
    fingerprint: str


def make_key(directory: Path, name: str) -> Key:
    """A fresh ed25519 key from the real ssh-keygen."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    line = path.with_suffix(".pub").read_text().strip()
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    key_type, blob = line.split()[:2]
    return Key(path=path, line=line, key_type=key_type, blob=blob, fingerprint=fp)


@dataclass
class World:
    svc: Service
    work: Path
    host: str = "web1"
    login: str = LOGIN
    host_token: str = ""
    user_tokens: dict[str, str] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)
    sink: SyslogSink | None = None
    generated: dict = field(default_factory=dict)  # what bench/gen_data.py added (P3s)
    trusted_dirs: list[Path] = field(default_factory=list)  # hook_config's, removed by close()

    def call(self, who: str, method: str, path: str, body=None):  # noqa: ANN001
        status, answer = self.svc.call(method, path, token=self.user_tokens[who], body=body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} as {who}: {status} {answer}")
        return answer

    def add_requester(self, name: str, *, approve: bool) -> Key:
        """A requester with a registered key and (if ``approve``) an active approval."""
        self.svc.admin("user", "add", name, "--role", "requester")
        self.user_tokens[name] = self.svc.admin("token", "create", name).strip()
        key = make_key(self.work / "keys", name)
        self.keys[name] = key
        self.call(name, "POST", "/api/v1/keys", {"public_key": key.line})
        req = self.call(
            name,
            "POST",
            "/api/v1/requests",
            {
                "host": self.host,
                "login": self.login,
                "reason": "bench",
                "duration_seconds": 14400,
            },
        )
        if approve:
            self.call("approver", "POST", f"/api/v1/requests/{req['id']}/approve", {})
        return key

    @property
    def ca_file(self) -> Path | None:
        """The CA the hooks must trust when the service speaks HTTPS."""
        tls = getattr(self.svc, "tls", None)
        return tls[2] if tls else None

    def hook_config(self, *, total_timeout: float = 5.0) -> Path:
        """A host config (TOML) for the hooks: this service, its host token, a state dir.

        Config, token and CA go to a root-owned directory (removed by close()): the
        hooks refuse them under /tmp (jit_hooks/host/login/trust.py).
        """
        etc = trusted.make_dir("bench")
        self.trusted_dirs.append(etc)
        token_file = trusted.write_token(etc / "host-token", self.host_token)  # 0640 root:jit-hooks
        ca = trusted.write_file(etc / "ca.pem", self.ca_file.read_text()) if self.ca_file else None
        state = etc / "state"  # next to the config, where P2 looks for it
        # The hooks (and P2's jit-hooksd) run as root here; they refuse a state dir
        # others may write (jit_hooks/host/login/connection.py check_state_dir).
        state.mkdir(mode=0o700, exist_ok=True)
        state.chmod(0o700)
        return trusted.write_file(
            etc / "jit-hooks.toml",
            f'[service]\nurls = ["{self.svc.url}"]\ntoken_file = "{token_file}"\n'
            + (f'ca_file = "{ca}"\n' if ca else "")
            + f"connect_timeout = 2.0\ntotal_timeout = {total_timeout}\n"
            f'[host]\nname = "{self.host}"\n'
            f'[state]\ndir = "{state}"\n'
            f'[log]\nsyslog_socket = "{self.sink.path if self.sink else "/dev/log"}"\n',
        )

    def close(self) -> None:
        self.svc.stop()
        for d in self.trusted_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if self.sink:
            self.sink.close()
            shutil.rmtree(self.sink.path.parent, ignore_errors=True)


def service_env(database_url: str | None) -> dict:
    """The environment of a service process and its admin CLI: SQLite unless told.

    A JIT_DATABASE_URL left in the caller's shell must not move a SQLite case onto
    another database.
    """
    env = dict(os.environ)
    env.pop("JIT_DATABASE_URL", None)
    if database_url:
        env["JIT_DATABASE_URL"] = database_url
    return env


def build_world(
    work: Path,
    *,
    approved: int = 1,
    denied: int = 0,
    login: str = LOGIN,
    sink: bool = True,
    noop_route: bool = False,
    tls: bool = False,
    workers: int = 1,
    database_url: str | None = None,
) -> World:
    """Start a service in ``work`` and seed it; users are req0.. (approved first).

    The others (``denied``) have a key and a pending request, but no approval.
    ``database_url``: the service (and its admin CLI) on that database instead of
    SQLite in its data dir.
    """
    (work / "keys").mkdir(parents=True, exist_ok=True)
    svc: Service
    env = service_env(database_url)
    if noop_route or tls:  # the same service plus GET /bench/noop (P3's floor), HTTPS
        from bench.server import BenchService

        (work / "server").mkdir(parents=True, exist_ok=True)
        bsvc = BenchService(data_dir=work / "server", port=free_port(), env=env)
        if workers > 1:
            bsvc.extra_args = ("--workers", str(workers))
        if tls:
            from jit_hooks.testing.tls_certs import make_pki

            pki = make_pki(work / "pki")
            cert, key = cast("tuple[Path, Path]", pki["ok"])
            bsvc.tls = (Path(cert), Path(key), Path(str(pki["ca"])))
        bsvc.start()
        svc = bsvc
    else:
        (work / "server").mkdir(parents=True, exist_ok=True)
        svc = Service(data_dir=work / "server", port=free_port(), env=env)
        svc.start()
    w = World(svc=svc, work=work, login=login)
    if sink:
        # Short path: unix socket names are limited to 108 bytes.
        w.sink = SyslogSink(Path(tempfile.mkdtemp(prefix="jbl")) / "log.sock")
    try:
        svc.admin("user", "add", "approver", "--role", "approver")
        w.user_tokens["approver"] = svc.admin("token", "create", "approver").strip()
        w.host_token = svc.admin("host", "add", w.host, "--label", "env=prod").strip()
        policy = work / "policy.toml"
        policy.write_text(POLICY.format(host=w.host, login=w.login))
        svc.admin("policy", "add", str(policy))
        for i in range(approved + denied):
            w.add_requester(f"req{i}", approve=i < approved)
    except BaseException:
        w.close()
        raise
    return w
