"""Secrets: tokens stored only as hashes, compared in constant time, never logged; tight modes.

One real service, real CLIs and real hook processes do everything that touches
a token (create, rotate, use, misuse, log in, fail); then every byte the run
left behind is searched for every token: the SQLite file and its WAL, the
service log, the hook syslog lines and stderr, CLI output, the audit export,
the files `jit` and `jit-hooks enroll` write (except the one place a token is
meant to be: its own 06x0 token file).
"""

from __future__ import annotations

import ast
import grp
import hashlib
import os
import secrets as pysecrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from jit_hooks.testing.seed import World
from jit_hooks.testing.service import start_service
from jit_hooks.testing.syslog_sink import SyslogSink
from jit_hooks.testing.trusted import trusted_dir
from tests.utils.report import record

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sysconfig.get_path("scripts"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class Run:
    """Everything the module's processes said, to be searched for tokens."""

    def __init__(self) -> None:
        self.outputs: list[str] = []

    def __call__(self, argv: list[str], **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
        self.outputs += [r.stdout or "", r.stderr or ""]
        return r


@pytest.fixture(scope="module")
def sec(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secrets")
    sockdir = Path(tempfile.mkdtemp(prefix="jss"))
    sink = SyslogSink(sockdir / "log.sock")
    svc = start_service(tmp / "server")
    run = Run()
    try:
        w = World(svc)
        w.user("alice", "requester")
        w.user("bob", "approver")
        w.user("admin", "admin")
        w.host("web1", "env=prod")
        w.host("web2", "env=prod")
        w.policy()
        keydir = tmp / "keys"
        keydir.mkdir()
        w.add_key("alice", keydir)
        w.approve("bob", w.request("alice")["id"])
        revoked = w.rotate("web1")
        w.rotate("web2")
        # Tokens nobody issued: they too must never be written anywhere.
        forged = ["jitu_" + pysecrets.token_urlsafe(32), "jith_" + pysecrets.token_urlsafe(32)]
        w.secrets += forged
        yield w, tmp, sink, run, revoked, forged
    finally:
        svc.stop()
        sink.close()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def trusted_etc():
    """Config and token files for the hooks: a root-owned directory (they refuse /tmp)."""
    with trusted_dir("sec") as d:
        _ETC[:] = [d]
        yield d


_ETC: list[Path] = []


def hook_env_files(w: World, tmp: Path, sink: SyslogSink, token: str) -> Path:
    etc = _ETC[0]
    tok = etc / f"token-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
    tok.write_text(token + "\n")
    tok.chmod(0o640)
    state = etc / "state"  # root's, 0700: the hooks refuse a state dir under /tmp
    state.mkdir(mode=0o700, exist_ok=True)
    cfg = etc / f"{tok.name}.toml"
    cfg.write_text(
        f'[service]\nurls = ["{w.svc.url}"]\ntoken_file = "{tok}"\ntotal_timeout = 5\n'
        f'[state]\ndir = "{state}"\n[log]\nsyslog_socket = "{sink.path}"\n'
    )
    return cfg


def exercise(w: World, tmp: Path, sink: SyslogSink, run: Run, revoked: str, forged: list[str]):
    """Every path a token travels, good and bad."""
    alice = w.keys["alice"]
    akc = [str(SCRIPTS / "jit-authorized-keys")]
    pam = [str(SCRIPTS / "jit-pam-account")]
    pam_env = {"PATH": "/usr/bin:/bin", "PAM_TYPE": "account", "PAM_USER": "deploy"}
    args = ["deploy", alice.fingerprint, alice.key_type, alice.blob]
    for token in (w.host_tokens["web1"], revoked, forged[1], w.host_tokens["web2"]):
        cfg = hook_env_files(w, tmp, sink, token)
        run(akc + ["--config", str(cfg), *args], env={"PATH": "/usr/bin:/bin"})
        run(pam + ["--config", str(cfg)], env=pam_env)
    # API misuse with every kind of token, including in odd places.
    for token in w.secrets:
        w.call(token, "GET", "/api/v1/audit")
        w.call(token, "POST", "/api/v1/hook/account", {"login": token[:30]})
        w.call(None, "POST", "/api/v1/login", {"username": "alice", "password": token + "\x00"})
    # The people's CLI: store a token, use it, use a revoked one.
    cli_cfg = tmp / "jit" / "config.toml"
    env = {**os.environ, "JIT_CONFIG": str(cli_cfg), "JIT_URL": w.svc.url}
    env.pop("JIT_TOKEN", None)
    jit = [str(SCRIPTS / "jit")]
    run(jit + ["login", "--token-stdin"], input=w.tokens["alice"] + "\n", env=env)
    run(jit + ["list"], env=env)
    run(jit + ["list", "-v"], env={**env, "JIT_TOKEN": forged[0]})
    # The admin CLI's export.
    export = tmp / "audit.jsonl"
    server = [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(w.svc.data_dir)]
    run(server + ["audit", "export", "-o", str(export)])
    return cli_cfg, export


def test_no_token_anywhere_but_its_own_file(sec):
    w, tmp, sink, run, revoked, forged = sec
    cli_cfg, export = exercise(w, tmp, sink, run, revoked, forged)
    assert sink.messages(), "the hooks logged nothing: the log check would prove nothing"
    assert export.exists() and cli_cfg.exists()
    w.svc.stop()  # no process holds the files: what is on disk is final
    try:
        check_files(w, tmp, sink, run, export, cli_cfg)
    finally:
        w.svc.start()  # leave it running for the other tests of the module


def check_files(w: World, tmp: Path, sink: SyslogSink, run: Run, export: Path, cli_cfg: Path):
    files = [p for p in w.svc.data_dir.rglob("*") if p.is_file()]
    files += [export] + [p for p in tmp.glob("*.toml")]
    names = {p.name for p in files}
    assert {"jit.db", "server.log"} <= names, names
    blobs = {str(p): p.read_bytes() for p in files}
    blobs["hook syslog"] = "\n".join(sink.messages()).encode()
    blobs["process output"] = "\n".join(run.outputs).encode()
    hits = []
    for token in w.secrets:
        body = token.split("_", 1)[1]  # the random part, in case a prefix got cut
        for where, data in blobs.items():
            if body.encode() in data:
                hits.append((token[:9] + "...", where))
    record(
        secret_tokens_checked=len(w.secrets),
        secret_places_checked=len(blobs),
        token_leaks=len(hits),
    )
    assert hits == [], f"tokens found in: {hits}"
    # Positive control: what IS stored is the SHA-256 of each issued token.
    db = b"".join(v for k, v in blobs.items() if "/jit.db" in k)  # main file + WAL
    for token in w.tokens.values():
        assert hashlib.sha256(token.encode()).hexdigest().encode() in db
    # The token the CLI stored lives in a file only its owner can read.
    assert w.tokens["alice"] in cli_cfg.read_text()
    assert mode(cli_cfg) & 0o077 == 0, oct(mode(cli_cfg))


def test_data_files_have_tight_modes(sec, tmp_path):
    w, tmp, *_ = sec
    # A data dir the service creates itself (the fixture's one was made by the test).
    fresh = tmp_path / "fresh" / "data"
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(fresh), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r
    assert mode(fresh) == 0o700, oct(mode(fresh))
    assert mode(fresh / "jit.db") == 0o600
    data = w.svc.data_dir
    for name in ("jit.db", "jit.db-wal", "jit.db-shm"):
        if (data / name).exists():
            assert mode(data / name) & 0o077 == 0, (name, oct(mode(data / name)))
    export = tmp / "audit.jsonl"
    if export.exists():
        assert mode(export) & 0o077 == 0, oct(mode(export))


def test_accepted_key_records_are_private(sec):
    """The AKC's connection -> key records (read back by the root PAM hook)."""
    w, tmp, sink, *_ = sec
    cfg = hook_env_files(w, tmp, sink, w.host_tokens["web1"])
    alice = w.keys["alice"]
    r = subprocess.run(
        [str(SCRIPTS / "jit-authorized-keys"), "--config", str(cfg), "deploy"]
        + [alice.fingerprint, alice.key_type, alice.blob],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.count("\n") == 1, r
    records = list((_ETC[0] / "state").glob("conn-*"))
    assert records
    for p in records:
        assert mode(p) == 0o600, (p, oct(mode(p)))


def test_enroll_writes_token_file_0640(sec, tmp_path):
    w, *_ = sec
    try:
        group = grp.getgrnam("jit-hooks")
    except KeyError:
        pytest.skip("no jit-hooks group on this machine (created by the .deb)")
    if os.geteuid() != 0:
        pytest.skip("enroll chowns to root:jit-hooks")
    token = w.host_tokens["web2"]
    r = subprocess.run(
        [str(SCRIPTS / "jit-hooks"), "enroll", "--root", str(tmp_path), "--url", w.svc.url],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r
    assert token not in r.stdout + r.stderr
    tok = tmp_path / "etc/jit-hooks/host-token"
    st = os.stat(tok)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, group.gr_gid)
    assert tok.read_text().strip() == token
    cfg = tmp_path / "etc/jit-hooks/jit-hooks.toml"
    assert token not in cfg.read_text()
    assert mode(cfg) & 0o022 == 0


# -- source checks (a supplement to the behaviour above) -----------------------------


def test_token_lookup_compares_in_constant_time():
    """auth.authenticate compares with hmac.compare_digest, and no service code
    compares a token or its hash with == (SQL column expressions aside)."""
    tree = ast.parse((ROOT / "jit_hooks/server/auth.py").read_text())
    calls = {
        ast.unparse(n.func)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert "hmac.compare_digest" in calls
    offenders = []
    for path in (ROOT / "jit_hooks" / "server").rglob("*.py"):  # where tokens are checked
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare) or not any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                continue
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Constant):  # a literal, e.g. OAuth's "expired_token"
                    continue
                text = ast.unparse(side)
                if ".c." in ast.unparse(node):  # SQLAlchemy: the lookup BY hash, in SQL
                    break
                if "token" in text.lower() and "token_file" not in text:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def test_tokens_are_long_random_and_hashed():
    from jit_hooks.server import auth

    made = {auth.new_token("user") for _ in range(50)} | {auth.new_token("host") for _ in range(50)}
    assert len(made) == 100
    for t in made:
        assert t.startswith(("jitu_", "jith_")) and len(t) >= 5 + 43
        assert auth.token_hash(t) == hashlib.sha256(t.encode()).hexdigest()
