"""Hostile input against the real service and the real AKC: clean 4xx, never echoed into sshd.

Logins and key lines with newlines, NULs, quotes, authorized_keys option
syntax and unicode look-alikes; huge bodies, deep nesting, long headers and
broken encodings. Each answer is a 4xx whose JSON body names what is wrong (or,
for key comments, the key is accepted with the comment reduced to printable
ASCII), the service stays healthy, and whatever was stored never reaches an
authorized_keys line: the real `jit-authorized-keys` prints only a line rebuilt
from the validated type and blob.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from jit_hooks.testing.seed import World, make_key
from jit_hooks.testing.service import start_service
from jit_hooks.testing.trusted import trusted_dir, write_token
from tests.utils.report import record

LOOKALIKE = "d\u0435ploy"  # Cyrillic "е"
BAD_LOGINS = [
    "deploy\n",
    "deploy\nroot",
    "deploy\x00",
    "de\x00ploy",
    'deploy"',
    "deploy'",
    'root,command="/bin/sh"',
    'command="id" deploy',
    "deploy root",
    LOOKALIKE,
    "ＤＥＰＬＯＹ",  # fullwidth
    "deploy\u200b",  # zero-width space
    "../../etc/passwd",
    "-oProxyCommand=id",
    "",
    "x" * 5000,
]


@pytest.fixture(scope="module")
def hw(tmp_path_factory, backend: str) -> World:
    # ``backend``: one service per backend (see tests/server/conftest.py shared_world).
    tmp = tmp_path_factory.mktemp("hostile")
    svc = start_service(tmp / "server")
    try:
        w = World(svc)
        w.user("alice", "requester")
        w.user("bob", "approver")
        w.host("web1", "env=prod")
        w.policy()
        w.extra["keydir"] = tmp / "keys"
        w.extra["keydir"].mkdir()
        yield w
    finally:
        svc.stop()
    assert w.leaked_secrets() == [], "token in the service log"


def raw(
    w: World, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", w.svc.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def assert_clean_4xx(status: int, body: bytes, *, field: str | None = None) -> dict:
    assert 400 <= status < 500, (status, body[:300])
    err = json.loads(body)
    assert set(err) >= {"error", "detail"} and isinstance(err["detail"], str), err
    assert err["detail"] and len(err["detail"]) < 1000
    assert "Traceback" not in err["detail"]
    if field is not None:
        assert field in (err.get("field") or "") + err["detail"], err
    record(hostile_inputs_rejected=1)
    return err


def healthy(w: World) -> None:
    assert w.call(None, "GET", "/healthz") == (200, {"status": "ok"})


@pytest.mark.parametrize("login", BAD_LOGINS, ids=repr)
def test_hostile_login_in_request(hw: World, login: str):
    body = {"host": "web1", "login": login, "reason": "INC-1", "duration_seconds": 600}
    status, err = hw.call(hw.tokens["alice"], "POST", "/api/v1/requests", body)
    assert_clean_4xx(status, json.dumps(err).encode(), field="login")
    assert hw.svc.sqlite("SELECT count(*) FROM requests WHERE login = ?", (login,)) == [(0,)]


@pytest.mark.parametrize("login", BAD_LOGINS, ids=repr)
@pytest.mark.parametrize("hook", ["authorized-keys", "account", "session"])
def test_hostile_login_in_hook(hw: World, login: str, hook: str):
    key = make_key(hw.extra["keydir"], f"h{abs(hash((login, hook)))}")
    body: dict = {"login": login}
    if hook == "authorized-keys":
        body |= {"fingerprint": key.fingerprint, "key_type": key.key_type, "key": key.blob}
    elif hook == "session":
        body |= {"event": "open", "connection": "1:2"}
    status, err = hw.call(hw.host_tokens["web1"], "POST", f"/api/v1/hook/{hook}", body)
    assert_clean_4xx(status, json.dumps(err).encode(), field="login")


HOSTILE_REASONS = ["a\nb", "a\x00b", "a\x1b[2Jb", "\u202eevil", "ok\u200bok", "x" * 600]


@pytest.mark.parametrize("reason", HOSTILE_REASONS, ids=repr)
def test_hostile_reason_and_comment(hw: World, reason: str):
    body = {"host": "web1", "login": "deploy", "reason": reason, "duration_seconds": 600}
    status, out = hw.call(hw.tokens["alice"], "POST", "/api/v1/requests", body)
    if status == 201:  # accepted text must come back printable, exactly as stored
        assert out["reason"] == reason and reason.isprintable(), out
        # One pending request per person, host and login: make room for the next case.
        cancel = f"/api/v1/requests/{out['id']}/cancel"
        assert hw.call(hw.tokens["alice"], "POST", cancel)[0] == 200
        return
    assert_clean_4xx(status, json.dumps(out).encode(), field="reason")


def key_lines(directory: Path) -> list[tuple[str, str]]:
    k = make_key(directory, "victim")
    other = make_key(directory, "other")
    base = f"{k.key_type} {k.blob}"
    return [
        ("newline_comment", f"{base} ok\n{other.key_type} {other.blob} evil"),
        ("cr_comment", f"{base} ok\r{other.key_type} {other.blob}"),
        ("nul_comment", f"{base} ok\x00evil"),
        ("options_prefix", f'command="/bin/sh",no-pty {base} x'),
        ("environment_prefix", f'environment="LD_PRELOAD=/tmp/x" {base}'),
        ("lookalike_type", f"ssh\u2010ed25519 {k.blob} x"),
        ("fullwidth_type", f"ｓｓｈ-ed25519 {k.blob} x"),
        ("blob_with_space", f"{k.key_type} {k.blob[:20]} {k.blob[20:]}"),
        ("type_mismatch", f"ssh-rsa {k.blob}"),
        ("two_keys", f"{base}\n{other.key_type} {other.blob}"),
        ("huge_comment", f"{base} " + "c" * 20000),
        ("only_type", k.key_type),
    ]


def test_hostile_key_lines_rejected(hw: World, tmp_path: Path):
    for name, line in key_lines(tmp_path):
        status, out = hw.call(hw.tokens["alice"], "POST", "/api/v1/keys", {"public_key": line})
        if name == "huge_comment" and status == 201:
            assert len(out["comment"]) <= 100 and out["comment"].isprintable()
            continue
        assert_clean_4xx(status, json.dumps(out).encode(), field="public_key")
    # Nothing half-stored: none of the refused lines left a key row behind.
    assert len(hw.svc.sqlite("SELECT id FROM keys")) <= 1
    healthy(hw)


def akc(w: World, tmp: Path, args: list[str]) -> subprocess.CompletedProcess:
    # Config, token and state dir in a root-owned directory: the hooks refuse them
    # under /tmp.
    with trusted_dir("jhi") as etc:
        state = etc / "state"
        state.mkdir(mode=0o700)
        token = write_token(etc / "token", w.host_tokens["web1"])
        config = etc / "jit-hooks.toml"
        config.write_text(
            f'[service]\nurls = ["{w.svc.url}"]\ntoken_file = "{token}"\ntotal_timeout = 5\n'
            f'[state]\ndir = "{state}"\n[log]\nsyslog_socket = "{tmp}/no-such.sock"\n'
        )
        script = Path(sysconfig.get_path("scripts")) / "jit-authorized-keys"
        return subprocess.run(
            [str(script), "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin"},
        )


def test_hostile_comment_never_reaches_authorized_keys(hw: World):
    """A key stored with quotes and option syntax in its comment, approved: the
    AKC line is rebuilt from type + blob + our own options, the comment is not in it."""
    tmp = Path(tempfile.mkdtemp(prefix="jhi"))
    key = make_key(tmp, "carrier")
    hostile = 'x" command="/bin/sh -c id",permitopen="*:*" ssh-rsa AAAA evil'
    line = f"{key.key_type} {key.blob} {hostile}"
    status, out = hw.call(hw.tokens["alice"], "POST", "/api/v1/keys", {"public_key": line})
    assert status == 201, out
    assert out["comment"].isprintable()
    rid = hw.request("alice")["id"]
    hw.approve("bob", rid)
    r = akc(hw, tmp, ["deploy", key.fingerprint, key.key_type, key.blob])
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    assert re.fullmatch(
        r'expiry-time="\d{14}Z",no-agent-forwarding,no-port-forwarding '
        + re.escape(f"{key.key_type} {key.blob}")
        + r" jit-request-\d+",
        lines[0],
    ), lines[0]
    for piece in ("command=", "permitopen", "evil", "/bin/sh"):
        assert piece not in r.stdout
    # And the service's own answer to the host carries no comment at all.
    q = {"login": "deploy", "fingerprint": key.fingerprint, "key_type": key.key_type}
    status, ans = hw.call(
        hw.host_tokens["web1"], "POST", "/api/v1/hook/authorized-keys", q | {"key": key.blob}
    )
    assert status == 200 and "evil" not in json.dumps(ans)


@pytest.mark.parametrize("login", [x for x in BAD_LOGINS if "\x00" not in x], ids=repr)
def test_hostile_akc_arguments_print_nothing(hw: World, login: str):
    """sshd's %u reaching the hook with hostile content: deny, nothing on stdout.
    (A NUL cannot be passed in argv at all, by sshd or anyone.)"""
    tmp = Path(tempfile.mkdtemp(prefix="jha"))
    key = make_key(tmp, "k")
    r = akc(hw, tmp, [login, key.fingerprint, key.key_type, key.blob])
    assert r.stdout == "" and r.returncode != 0


# -- size, nesting, encoding, headers -------------------------------------------------


def test_huge_json_is_413(hw: World):
    body = json.dumps({"public_key": "x" * (2 * 1024 * 1024)}).encode()
    status, out = raw(
        hw,
        "POST",
        "/api/v1/keys",
        body,
        {"Authorization": f"Bearer {hw.tokens['alice']}", "Content-Type": "application/json"},
    )
    assert status == 413
    assert_clean_4xx(status, out)
    healthy(hw)


def test_huge_chunked_body_is_413(hw: World):
    """No Content-Length: the size limit must hold while streaming too."""
    s = socket.create_connection(("127.0.0.1", hw.svc.port), timeout=20)
    try:
        head = (
            "POST /api/v1/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {hw.tokens['alice']}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        )
        s.sendall(head.encode())
        chunk = b"x" * 16384
        try:
            for _ in range(5):  # 80 KiB: over the 64 KiB limit, within socket buffers
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close early: that is fine
        data = b""
        while len(data) < 65536:
            try:
                part = s.recv(65536)
            except ConnectionResetError:  # unread bytes on close: the answer came first
                break
            if not part:
                break
            data += part
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1])
    assert status == 413, data[:200]
    assert_clean_4xx(status, data.split(b"\r\n\r\n", 1)[1])
    healthy(hw)


@pytest.mark.parametrize("depth", [100, 1000, 20000])
@pytest.mark.parametrize("path", ["/api/v1/requests", "/api/v1/hook/account"])
def test_deep_nesting(hw: World, depth: int, path: str):
    nested = "[" * depth + "]" * depth
    body = ('{"host": "web1", "login": "deploy", "selector": ' + nested + "}").encode()
    token = hw.tokens["alice"] if "requests" in path else hw.host_tokens["web1"]
    status, out = raw(
        hw,
        "POST",
        path,
        body,
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert_clean_4xx(status, out)
    healthy(hw)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",
        b'{"login": "\xc3\x28"}',
        b'{"login": "deploy", "login": "root"}',
        b"[]",
        b"null",
        b'{"login": NaN}',
        b'{"login": "deploy"' + b" " * 60000,
    ],
    ids=["bom", "bad-utf8", "dup-key", "array", "null", "nan", "unterminated"],
)
def test_malformed_bodies(hw: World, body: bytes):
    status, out = raw(
        hw,
        "POST",
        "/api/v1/hook/account",
        body,
        {"Authorization": f"Bearer {hw.host_tokens['web1']}", "Content-Type": "application/json"},
    )
    if body.startswith(b'{"login": "deploy", "login"'):
        # Duplicate keys: JSON parsers keep the last one; a clean answer either way.
        assert status in (200, 422), out
        return
    assert_clean_4xx(status, out)


@pytest.mark.parametrize("size", [300, 8000])
def test_long_bearer_token_is_401(hw: World, size: int):
    status, out = raw(hw, "GET", "/api/v1/me", b"", {"Authorization": "Bearer " + "A" * size})
    assert status == 401
    assert_clean_4xx(status, out)


def test_oversized_headers_rejected_not_crashing(hw: World):
    """Past the HTTP server's header limit the protocol layer (uvicorn/h11) answers
    before the app: a 4xx without our JSON body is the best there is; no 5xx, and
    the service keeps serving."""
    s = socket.create_connection(("127.0.0.1", hw.svc.port), timeout=20)
    try:
        req = "GET /api/v1/me HTTP/1.1\r\nHost: x\r\n" + "X-Pad: " + "p" * 200_000 + "\r\n\r\n"
        try:
            s.sendall(req.encode())
        except OSError:
            pass
        data = s.recv(4096)
    except OSError:
        data = b""
    finally:
        s.close()
    if data:
        status = int(data.split(b" ", 2)[1])
        assert 400 <= status < 500, data[:200]
    healthy(hw)


@pytest.mark.parametrize(
    "header",
    ["Bearer jitu_abc\r\nX-Injected: 1", "Bearer \x00", "Basic YWxpY2U6cHc=", "Bearer", "bearer  "],
    ids=["crlf", "nul", "basic", "empty", "blank"],
)
def test_odd_authorization_headers(hw: World, header: str):
    s = socket.create_connection(("127.0.0.1", hw.svc.port), timeout=20)
    try:
        s.sendall(
            f"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1])
    assert 400 <= status < 500, data[:300]
    if status == 401:
        assert_clean_4xx(status, data.split(b"\r\n\r\n", 1)[1])
