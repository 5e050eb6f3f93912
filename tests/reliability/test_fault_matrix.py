"""Fault matrix: both hooks, run as real processes, against real faults on 127.0.0.1.

Every fault is produced for real (a closed port, a `.invalid` name, certificates
made with the openssl CLI, sockets that hang, drip, or answer nonsense) and the
hooks are the installed entry points run as subprocesses with the environment
sshd / pam_exec give them. Each case asserts:

* the outcome: deny (AKC prints no key line; PAM hook exits non-zero with one
  line), or allow where a healthy service is reachable;
* the time: never past the configured total budget + MARGIN (fail closed must
  also mean fail *fast*: a hung hook holds an sshd slot);
* the syslog line (facility authpriv) naming the reason.

``JIT_WRITE_FAULT_MATRIX=1`` writes the table of results to docs/fault-matrix.md.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from jit_hooks.host.login.connection import connection_id
from jit_hooks.testing.seed import World, basic_world, make_key
from jit_hooks.testing.service import Service, free_port, start_service
from jit_hooks.testing.syslog_sink import SyslogSink
from jit_hooks.testing.tls_certs import make_pki
from jit_hooks.testing.trusted import make_dir, trusted_dir
from tests.utils.fault_server import FaultServer
from tests.utils.raw_server import RawServer
from tests.utils.report import record

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 2.0  # service.total_timeout of every case
CONNECT = 1.0  # service.connect_timeout
MARGIN = 1.5  # process start-up (~0.2 s) and a loaded 2-core CI box
SCRIPTS = Path(sysconfig.get_path("scripts"))
HOOKS = {"akc": "jit-authorized-keys", "pam": "jit-pam-account"}
LOGIN = "deploy"


def hook_argv(hook: str) -> list[str]:
    script = SCRIPTS / HOOKS[hook]
    if script.exists():
        return [str(script)]
    module = {"akc": "authorized_keys", "pam": "pam_account"}[hook]
    return [sys.executable, "-m", f"jit_hooks.host.{module}"]


# -- the environment of one case --------------------------------------------------


@dataclass
class Case:
    id: str
    label: str  # what the table shows
    expect: str  # "allow" | "deny"
    reason: str  # regex the syslog line must match
    hooks: tuple[str, ...] = ("akc", "pam")
    note: str = ""


@dataclass
class Env:
    """What a case sets up: URLs, config tweaks, and how to run the hook."""

    stack: ExitStack
    world: World
    svc: Service
    pki: dict
    dir: Path
    hook: str
    good: dict  # a valid allow answer for this hook
    urls: list[str] | None = None
    ca_file: str | None = None
    token: str | None = None
    token_mode: int = 0o640
    config_text: str | None = None  # replaces the generated config entirely
    run_as_nobody: bool = False
    no_token_file: bool = False

    def server(self, **kw) -> FaultServer:  # noqa: ANN003
        kw.setdefault("answer", self.good)
        return self.stack.enter_context(FaultServer(**kw))

    def raw(self, make: Callable[[bytes], bytes]) -> str:
        """A server sending ``make(valid JSON answer)`` byte for byte; its URL."""
        body = json.dumps(self.good).encode()
        return self.stack.enter_context(RawServer(make(body))).url

    def tls_server(self, name: str) -> FaultServer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.pki[name]
        ctx.load_cert_chain(cert, key)
        return self.server(tls=ctx)


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound and released: nobody listens


def _akc_answer(world: World, *, key=None, fingerprint=None, options=None, blob=None) -> dict:  # noqa: ANN001
    k = key or world.keys["alice"]
    return {
        "keys": [
            {
                "key_type": k.key_type,
                "key": blob if blob is not None else k.blob,
                "fingerprint": fingerprint or k.fingerprint,
                "expires_at": int(time.time()) + 3600,
                "options": ["no-pty"] if options is None else options,
                "request_id": 1,
            }
        ]
    }


def _allow_decision() -> dict:
    return {
        "decision": "allow",
        "reason": "ok",
        "request_id": 1,
        "expires_at": int(time.time()) + 3600,
    }


def _setup_other_key(env: Env) -> None:
    other = env.world.keys["other"]
    env.urls = [env.server(answer=_akc_answer(env.world, key=other)).url]


def _setup_fingerprint_lie(env: Env) -> None:
    # The offered fingerprint, but someone else's key material.
    other = env.world.keys["other"]
    env.urls = [env.server(answer=_akc_answer(env.world, blob=other.blob)).url]


def _setup_injected_option(env: Env) -> None:
    opts = ['command="/bin/sh -c id"', "no-pty"]
    env.urls = [env.server(answer=_akc_answer(env.world, options=opts)).url]


def _setup_newline(env: Env) -> None:
    k = env.world.keys["alice"]
    blob = k.blob + "\nssh-ed25519 " + env.world.keys["other"].blob + " evil"
    env.urls = [env.server(answer=_akc_answer(env.world, blob=blob)).url]


def _setup_option_newline(env: Env) -> None:
    opts = ["no-pty\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil evil"]
    env.urls = [env.server(answer=_akc_answer(env.world, options=opts)).url]


def _echo_of(world: World, hook: str) -> dict:
    """The echo of the question ``hook`` asks in every case (see protocol.Echo)."""
    return {
        "host": "web1",
        "login": LOGIN,
        "fingerprint": world.keys["alice"].fingerprint if hook == "akc" else None,
        # The hook runs as a child of this process: its "sshd monitor" is us.
        "connection": connection_id(os.getpid()),
    }


def _answer_other(**echo: object) -> Callable[[Env], None]:
    """A valid allow answer whose echo names another question (another login, host, ...)."""

    def setup(env: Env) -> None:
        env.urls = [env.server(answer=env.good | echo).url]

    return setup


def _no_echo(env: Env) -> None:
    # What a service older than the echo answers: a valid allow, no echo.
    bare = {k: v for k, v in env.good.items() if k not in _echo_of(env.world, env.hook)}
    env.urls = [env.server(answer=bare, echo=False).url]


def _setup_pam_reason_injection(env: Env) -> None:
    answer = {
        "decision": "deny",
        "reason": "nope\nYou are now root\x1b[2J\r\nLast login: yesterday",
        "request_id": None,
        "expires_at": None,
    }
    env.urls = [env.server(answer=answer).url]


def _wrong_schema(env: Env) -> None:
    answer = {"keys": {"alice": "ssh-ed25519 AAAA"}} if env.hook == "akc" else {"decision": "yes"}
    env.urls = [env.server(answer=answer).url]


def _status(status: int) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.urls = [env.server(fault="status", status=status).url]

    return setup


def _revoked_token(env: Env) -> None:
    env.urls = [env.svc.url]
    env.token = env.world.extra["revoked_token"]


@functools.cache
def nobody_can_run_hooks() -> bool:
    """Whether an unprivileged user can start the hooks from this checkout/venv."""
    if os.geteuid() != 0:
        return False
    probe = [*hook_argv("akc"), "--config", "/nonexistent"]
    try:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=30, user=65534)
    except OSError:
        return False
    # It ran far enough to fail closed on the missing config (not on an import).
    return r.returncode == 1 and "Traceback" not in r.stderr and "Errno 13" not in r.stderr


def _unreadable_token(env: Env) -> None:
    env.urls = [env.svc.url]
    if os.geteuid() != 0:
        env.token_mode = 0o000  # not root: a mode is enough
    elif nobody_can_run_hooks():
        env.token_mode = 0o600
        env.run_as_nobody = True  # root reads any file: drop to the AKC user's level
    else:  # checkout not reachable by nobody (e.g. under /root): a directory can't be read
        env.no_token_file = True
        (env.dir / "host-token").mkdir()


def _missing_token(env: Env) -> None:
    env.urls = [env.svc.url]
    env.no_token_file = True


JSON_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def _proto(make: Callable[[bytes], bytes]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.urls = [env.raw(make)]

    return setup


def _length(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n" % len(body)


PROTOCOL_CASES: list[tuple[Case, Callable[[Env], None]]] = [
    (
        Case("p_http10", "HTTP/1.0, body until close (valid: control)", "allow", "decision=allow"),
        _proto(lambda b: b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + b),
    ),
    (
        Case("p_status", "broken status line", "deny", r"reason=bad_http"),
        _proto(lambda b: b"HTXP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b),
    ),
    (
        Case("p_header_flood", "500 distinct response headers", "deny", r"reason=bad_http"),
        _proto(
            lambda b: (
                JSON_200
                + b"".join(b"X-%d: b\r\n" % i for i in range(500))
                + _length(b)
                + b"\r\n"
                + b
            )
        ),
    ),
    (
        Case("p_header_bytes", "24 KB of repeated headers", "deny", r"reason=bad_http"),
        _proto(lambda b: JSON_200 + b"X-A: b\r\n" * 3000 + _length(b) + b"\r\n" + b),
    ),
    (
        Case("p_long_header", "one 100 KB header line", "deny", r"reason=bad_http"),
        _proto(lambda b: JSON_200 + b"X-A: " + b"a" * 100_000 + b"\r\n\r\n" + b),
    ),
    (
        Case("p_short_body", "Content-Length longer than the body", "deny", r"reason=bad_http"),
        _proto(lambda b: JSON_200 + b"Content-Length: %d\r\n\r\n" % (len(b) + 50) + b),
    ),
    (
        Case("p_cut_length", "Content-Length cuts the JSON", "deny", r"reason=malformed"),
        _proto(lambda b: JSON_200 + b"Content-Length: 5\r\n\r\n" + b),
    ),
    (
        Case("p_two_lengths", "two different Content-Lengths", "deny", r"reason=bad_http"),
        _proto(lambda b: JSON_200 + b"Content-Length: 5\r\n" + _length(b) + b"\r\n" + b),
    ),
    (
        Case("p_no_ctype", "valid JSON without Content-Type", "deny", r"reason=malformed"),
        _proto(lambda b: b"HTTP/1.1 200 OK\r\n" + _length(b) + b"\r\n" + b),
    ),
    (
        Case("p_interim", "ten 100 Continue, then the answer", "deny", r"reason=bad_http"),
        _proto(
            lambda b: b"HTTP/1.1 100 Continue\r\n\r\n" * 10 + JSON_200 + _length(b) + b"\r\n" + b
        ),
    ),
    (
        Case("p_bad_chunk", "chunked, size not hex", "deny", r"reason=bad_http"),
        _proto(lambda b: JSON_200 + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + b),
    ),
    (
        Case("p_huge_chunk", "chunked, one 2 GiB chunk announced", "deny", r"reason=oversize"),
        _proto(lambda b: JSON_200 + b"Transfer-Encoding: chunked\r\n\r\n7fffffff\r\n" + b),
    ),
    (
        Case("p_gzip", "Transfer-Encoding: gzip", "deny", r"reason=bad_http"),
        _proto(lambda b: JSON_200 + b"Transfer-Encoding: gzip\r\n\r\n" + b),
    ),
    (
        Case("p_deep_json", "200, JSON nested 30,000 deep", "deny", r"reason=malformed"),
        _proto(lambda b: JSON_200 + b"\r\n" + b"[" * 30000 + b"]" * 30000),
    ),
    (
        Case("p_bad_utf8", "200, JSON with invalid UTF-8", "deny", r"reason=malformed"),
        _proto(lambda b: JSON_200 + b"\r\n" + b.replace(b'"', b'"\xff', 1)),
    ),
    (
        Case("p_204", "204 No Content", "deny", r"reason=http_204"),
        _proto(lambda b: b"HTTP/1.1 204 No Content\r\n\r\n"),
    ),
]


def _malformed_config(env: Env) -> None:
    env.config_text = '[service\nurls = "http://127.0.0.1:1"\n'


def _invalid_config(env: Env) -> None:
    env.config_text = '[service]\nurls = []\ntotal_timeout = "soon"\n'


CASES: list[tuple[Case, Callable[[Env], None]]] = [
    (
        Case("healthy", "healthy service (real jit-server), control", "allow", r"decision=allow"),
        lambda e: setattr(e, "urls", [e.svc.url]),
    ),
    (
        Case("tls_ok", "TLS, trusted CA, right name (control)", "allow", r"decision=allow"),
        lambda e: (
            setattr(e, "urls", [e.tls_server("ok").url]),
            setattr(e, "ca_file", str(e.pki["ca"])),
        ),
    ),
    (
        Case("port_closed", "port closed", "deny", r"decision=deny .*reason=refused"),
        lambda e: setattr(e, "urls", [closed_url()]),
    ),
    (
        Case("dns", "name does not resolve (.invalid)", "deny", r"decision=deny .*reason=dns"),
        lambda e: setattr(e, "urls", ["https://jit-service.invalid:8443"]),
    ),
    (
        Case("tls_untrusted", "TLS, untrusted CA", "deny", r"reason=tls_verify"),
        lambda e: (
            setattr(e, "urls", [e.tls_server("untrusted").url]),
            setattr(e, "ca_file", str(e.pki["ca"])),
        ),
    ),
    (
        Case("tls_hostname", "TLS, hostname mismatch", "deny", r"reason=tls_verify"),
        lambda e: (
            setattr(e, "urls", [e.tls_server("wrongname").url]),
            setattr(e, "ca_file", str(e.pki["ca"])),
        ),
    ),
    (
        Case("tls_expired", "TLS, expired certificate", "deny", r"reason=tls_verify"),
        lambda e: (
            setattr(e, "urls", [e.tls_server("expired").url]),
            setattr(e, "ca_file", str(e.pki["ca"])),
        ),
    ),
    (
        Case("plain_to_tls", "plain HTTP to a TLS port", "deny", r"decision=deny .*reason=\S+"),
        lambda e: setattr(e, "urls", [e.tls_server("ok").url.replace("https:", "http:")]),
    ),
    (
        Case("hang", "accepts, never answers", "deny", r"reason=timeout"),
        lambda e: setattr(e, "urls", [e.server(fault="hang", drip_total=30).url]),
    ),
    (
        Case("drip", "drips 1 byte/s (valid answer)", "deny", r"reason=timeout"),
        lambda e: setattr(
            e, "urls", [e.server(fault="drip", drip_interval=1.0, drip_total=30).url]
        ),
    ),
    (
        Case("close", "accepts, closes without a word", "deny", r"decision=deny .*reason=\S+"),
        lambda e: setattr(e, "urls", [e.server(fault="close").url]),
    ),
    *[
        (Case(f"http_{s}", f"HTTP {s}", "deny", rf"reason=http_{s}"), _status(s))
        for s in (500, 502, 503)
    ],
    (
        Case("revoked_token", "HTTP 401 (rotated host token, real service)", "deny", "http_401"),
        _revoked_token,
    ),
    (
        Case("garbage", "200, garbage body", "deny", r"reason=malformed"),
        lambda e: setattr(e, "urls", [e.server(fault="garbage").url]),
    ),
    (
        Case("html", "200, text/html", "deny", r"reason=malformed"),
        lambda e: setattr(e, "urls", [e.server(fault="html").url]),
    ),
    (
        Case("wrong_schema", "200, valid JSON, wrong schema", "deny", r"reason=schema"),
        _wrong_schema,
    ),
    (
        Case("oversize", "200, oversize body (100 KiB)", "deny", r"reason=oversize"),
        lambda e: setattr(e, "urls", [e.server(fault="oversize").url]),
    ),
    (
        Case("oversize_chunked", "200, oversize chunked body", "deny", r"reason=oversize"),
        lambda e: setattr(e, "urls", [e.server(fault="oversize_chunked").url]),
    ),
    (
        Case("redirect", "302 redirect", "deny", r"reason=redirect"),
        lambda e: setattr(e, "urls", [e.server(fault="redirect").url]),
    ),
    (
        Case(
            "other_key",
            "answer lists another user's key",
            "deny",
            r"reason=dropped dropped=other_key",
            ("akc",),
        ),
        _setup_other_key,
    ),
    (
        Case(
            "fingerprint_lie",
            "answer: offered fingerprint, different key",
            "deny",
            r"reason=dropped dropped=fingerprint_mismatch",
            ("akc",),
        ),
        _setup_fingerprint_lie,
    ),
    (
        Case(
            "injected_option",
            'answer injects command="..."',
            "deny",
            r"reason=dropped dropped=option_not_allowed",
            ("akc",),
        ),
        _setup_injected_option,
    ),
    (
        Case(
            "newline_key",
            "answer key with newline + 2nd key",
            "deny",
            r"reason=dropped dropped=bad_key",
            ("akc",),
        ),
        _setup_newline,
    ),
    (
        Case(
            "newline_option",
            "answer option with newline + 2nd key",
            "deny",
            r"reason=dropped dropped=option_not_allowed",
            ("akc",),
        ),
        _setup_option_newline,
    ),
    (
        Case(
            "reason_injection",
            "deny reason with newlines/escapes",
            "deny",
            r"reason=service_denied",
            ("pam",),
        ),
        _setup_pam_reason_injection,
    ),
    (
        Case(
            "echo_login",
            "answer echoes another login",
            "deny",
            r"(?=.*reason=mismatch)(?=.*mismatch=login)",
        ),
        _answer_other(login="root"),
    ),
    (
        Case(
            "echo_host",
            "answer echoes another host",
            "deny",
            r"(?=.*reason=mismatch)(?=.*mismatch=host)",
        ),
        _answer_other(host="web2"),
    ),
    (
        Case(
            "echo_fingerprint",
            "answer echoes another key's fingerprint",
            "deny",
            r"(?=.*reason=mismatch)(?=.*mismatch=fingerprint)",
        ),
        _answer_other(fingerprint="SHA256:" + "B" * 43),
    ),
    (
        Case(
            "echo_connection",
            "answer echoes another connection",
            "deny",
            r"(?=.*reason=mismatch)(?=.*mismatch=connection)",
        ),
        _answer_other(connection="1:2"),
    ),
    (
        Case(
            "echo_missing",
            "answer without echo (service older than the echo)",
            "deny",
            r"(?=.*reason=mismatch)(?=.*mismatch=echo)",
        ),
        _no_echo,
    ),
    (
        Case("first_refused", "1st URL refused, 2nd healthy", "allow", r"decision=allow"),
        lambda e: setattr(e, "urls", [closed_url(), e.svc.url]),
    ),
    (
        Case("first_dns", "1st URL unresolvable, 2nd healthy", "allow", r"decision=allow"),
        lambda e: setattr(e, "urls", ["https://jit-service.invalid:8443", e.svc.url]),
    ),
    (
        Case("first_500", "1st URL answers 503, 2nd healthy", "allow", r"decision=allow"),
        lambda e: setattr(e, "urls", [e.server(fault="status", status=503).url, e.svc.url]),
    ),
    (
        Case(
            "first_hang",
            "1st URL hangs, 2nd healthy",
            "allow",
            r"decision=allow",
            note="each URL gets a share of the budget; the 2nd answers in time",
        ),
        lambda e: setattr(e, "urls", [e.server(fault="hang", drip_total=30).url, e.svc.url]),
    ),
    (
        Case("all_dead", "all URLs dead (refused, DNS, 503)", "deny", r"decision=deny"),
        lambda e: setattr(
            e,
            "urls",
            [
                closed_url(),
                "https://jit-service.invalid:1",
                e.server(fault="status", status=503).url,
            ],
        ),
    ),
    (
        Case("token_unreadable", "token file unreadable (0600, hook not root)", "deny", "config"),
        _unreadable_token,
    ),
    (Case("token_missing", "token file missing", "deny", r"reason=config"), _missing_token),
    *PROTOCOL_CASES,
    (Case("config_malformed", "config is not TOML", "deny", r"reason=config"), _malformed_config),
    (
        Case("config_invalid", "config has invalid values", "deny", r"reason=config"),
        _invalid_config,
    ),
]


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, backend: str) -> World:
    # ``backend``: one service per backend (see tests/server/conftest.py shared_world).
    tmp = tmp_path_factory.mktemp("faultworld")
    svc = start_service(tmp / "server")
    try:
        w = basic_world(svc, tmp)
        w.keys["other"] = make_key(tmp, "other")
        w.extra = {"revoked_token": w.rotate("web1")}
        yield w
    finally:
        svc.stop()
    assert w.leaked_secrets() == [], "token in the service log"


@pytest.fixture(scope="module")
def pki() -> dict:
    with trusted_dir("pki") as d:  # CA files must pass the hooks' trust rule (not in /tmp)
        yield make_pki(d)


@pytest.fixture(scope="module")
def matrix_rows():
    rows: list[dict] = []
    yield rows
    record(fault_cases=len(rows), faults_survived=sum(r["ok"] for r in rows))
    if os.environ.get("JIT_WRITE_FAULT_MATRIX") == "1" and rows:
        write_matrix(rows, ROOT / "docs" / "fault-matrix.md")


def write_matrix(rows: list[dict], path: Path) -> None:
    order = {c.id: i for i, (c, _) in enumerate(CASES)}
    rows = sorted(rows, key=lambda r: (order[r["case"]], r["hook"]))
    survived = sum(r["ok"] for r in rows)
    lines = [
        "# Fault matrix (generated)",
        "",
        "Generated by `JIT_WRITE_FAULT_MATRIX=1 pytest tests/reliability/test_fault_matrix.py`",
        "from a real run: each hook is the installed entry point run as a process, every",
        "fault is real (sockets, DNS, certificates made with openssl) on 127.0.0.1.",
        f"Budget: `total_timeout = {BUDGET:g}` s, `connect_timeout = {CONNECT:g}` s; a case",
        f"passes only if it ends within budget + {MARGIN:g} s. Time includes process start-up.",
        "",
        f"**{len(rows)} cases, {survived} behaved as required** "
        "(deny = no key printed / PAM exit non-zero; allow only with a healthy service).",
        "",
        "| fault | hook | expected | outcome | exit | time (s) | syslog reason | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {HOOKS[r['hook']]} | {r['expect']} | {r['outcome']} | "
            f"{r['rc']} | {r['elapsed']:.2f} | `{r['reason']}` | {r['note']} |"
        )
    path.write_text("\n".join(lines) + "\n")


# -- running a hook ---------------------------------------------------------------


@dataclass
class Run:
    rc: int
    out: str
    err: str
    elapsed: float


def write_config(env: Env, sink: SyslogSink, state: Path) -> Path:
    path = env.dir / "jit-hooks.toml"
    token_file = env.dir / "host-token"
    if not env.no_token_file:
        token_file.write_text((env.token or env.world.host_tokens["web1"]) + "\n")
        os.chmod(token_file, env.token_mode)
    if env.config_text is not None:
        path.write_text(env.config_text)
        return path
    urls = ", ".join(f'"{u}"' for u in env.urls or [])
    ca = f'ca_file = "{env.ca_file}"\n' if env.ca_file else ""
    path.write_text(
        f'[service]\nurls = [{urls}]\ntoken_file = "{token_file}"\n{ca}'
        f"connect_timeout = {CONNECT}\ntotal_timeout = {BUDGET}\n"
        f'[host]\nname = "web1"\n[state]\ndir = "{state}"\n'
        f'[log]\nsyslog_socket = "{sink.path}"\n'
    )
    return path


def run_hook(env: Env, config: Path) -> Run:
    key = env.world.keys["alice"]
    if env.hook == "akc":
        argv = [*hook_argv("akc"), "--config", str(config), LOGIN]
        argv += [key.fingerprint, key.key_type, key.blob]
        environ = {"PATH": "/usr/bin:/bin"}  # sshd gives the AKC next to nothing
    else:
        argv = [*hook_argv("pam"), "--config", str(config)]
        environ = {
            "PATH": "/usr/bin:/bin",
            "PAM_TYPE": "account",
            "PAM_USER": LOGIN,
            "PAM_RHOST": "127.0.0.1",
            "PAM_SERVICE": "sshd",
            "SSH_CONNECTION": "127.0.0.1 50000 127.0.0.1 22",
            "SSH_AUTH_INFO_0": "",
        }
    kw = {"user": 65534, "group": 65534} if env.run_as_nobody and os.geteuid() == 0 else {}
    start = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=BUDGET + 20, **kw)
    return Run(r.returncode, r.stdout, r.stderr, time.monotonic() - start)


def outcome(hook: str, run: Run, key) -> str:  # noqa: ANN001
    """'allow' / 'deny' as sshd would see it; AssertionError on anything unclean."""
    if hook == "akc":
        if not run.out:
            return "deny"
        lines = run.out.splitlines()
        assert len(lines) == 1 and run.out.endswith("\n"), run.out
        m = re.fullmatch(
            r'expiry-time="\d{14}Z"(,[a-zA-Z0-9-]+)* (\S+) (\S+) jit-request-\d+', lines[0]
        )
        assert m and m.group(2) == key.key_type and m.group(3) == key.blob, lines[0]
        assert run.rc == 0
        return "allow"
    if run.rc == 0:
        assert run.out == "", run.out
        return "allow"
    lines = run.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jit: access denied"), run.out
    assert all(" " <= c <= "~" for c in lines[0]), repr(lines[0])
    return "deny"


PARAMS = [
    pytest.param(case, setup, hook, id=f"{case.id}-{hook}")
    for case, setup in CASES
    for hook in case.hooks
]


@pytest.mark.parametrize(("case", "setup", "hook"), PARAMS)
def test_fault(case: Case, setup, hook, world, pki, matrix_rows):  # noqa: ANN001
    good = _akc_answer(world) if hook == "akc" else _allow_decision()
    good = _echo_of(world, hook) | good
    # A short, world-traversable directory: the unix socket path limit is 108
    # bytes, and the "not root" case runs the hook as nobody.
    # Root-owned 0755 and not under /tmp: the hooks trust no config below a
    # writable directory (trust.py).
    d = make_dir("jfm")
    state = d / "state"
    state.mkdir(mode=0o700)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, d, ignore_errors=True)
        sink = SyslogSink(d / "log.sock")
        stack.callback(sink.close)
        env = Env(stack, world, world.svc, pki, d, hook, good)
        setup(env)
        config = write_config(env, sink, state)
        run = run_hook(env, config)
        got = outcome(hook, run, world.keys["alice"])
        ident = HOOKS[hook]
        if case.id.startswith("config_"):
            # No config, so no configured log socket: the line goes to /dev/log,
            # or to stderr where there is none (containers, CI).
            log_line = run.err if not os.path.exists("/dev/log") else "reason=config"
        else:
            log_line = sink.wait_for(case.reason, ident=ident, timeout=5)
        matrix_rows.append(
            {
                "case": case.id,
                "label": case.label,
                "hook": hook,
                "expect": case.expect,
                "outcome": got,
                "rc": run.rc,
                "elapsed": run.elapsed,
                "reason": _reason(log_line),
                "note": case.note,
                "ok": got == case.expect and run.elapsed <= BUDGET + MARGIN,
            }
        )
        assert got == case.expect, (run, sink.messages())
        assert run.elapsed <= BUDGET + MARGIN, run
        assert re.search(case.reason, log_line), (log_line, sink.messages())
        if case.expect == "deny" and hook == "akc":
            assert run.out == ""
        # No secret in what the hook said, wherever it said it.
        for secret in world.secrets:
            assert secret not in run.out + run.err + "\n".join(sink.messages())


def _reason(line: str) -> str:
    if "decision=allow" in line:
        request = re.search(r"request=(\d+)", line)
        return f"allow (request {request.group(1)})" if request else "allow"
    m = re.search(r"reason=(\S+)", line)
    dropped = re.search(r"dropped=(\S+)", line) or re.search(r"mismatch=(\S+)", line)
    text = m.group(1) if m else line.strip()[:40]
    return f"{text} ({dropped.group(1)})" if dropped else text
