"""The hooks trust only files that root alone can change (issue 15 items 1 and 8), and
jit-hooksd's config cache sees every change.

Real files with real owners and modes (root-owned directories from the ``trusted``
fixture, an unprivileged uid where one is needed), the real hook entry points, a
real fault server and a real service: no mocks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jit_hooks.errors import ConfigError
from jit_hooks.host import paths
from jit_hooks.host.login import authorized_keys, config_cache, pam_account
from jit_hooks.host.login.config import load_config, parse_config
from jit_hooks.host.login.config_cache import ConfigCache
from jit_hooks.testing.hooksd import HooksDaemon
from jit_hooks.testing.seed import basic_world
from jit_hooks.testing.trusted import hook_gid, write_file
from tests.host.conftest import TOKEN
from tests.utils.fault_server import FaultServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (file owners)")

ROOT = str(Path(__file__).resolve().parents[2])
NOBODY = 65534
AKC = "jit-authorized-keys"
ACCOUNT = "jit-pam-account"
HOUR = 3600
TEN_YEARS = 10 * 365 * 86400


def akc_args(config_path, pub, login="deploy"):
    return ["--config", str(config_path), login, pub.fingerprint, pub.key_type, pub.blob]


def key_answer(pub, expires_at):
    return {
        "keys": [
            {
                "key_type": pub.key_type,
                "key": pub.blob,
                "fingerprint": pub.fingerprint,
                "expires_at": expires_at,
                "options": [],
                "request_id": 7,
            }
        ]
    }


def allow(expires_at):
    return {"decision": "allow", "reason": "approved", "request_id": 7, "expires_at": expires_at}


@pytest.fixture
def pam_env(monkeypatch):
    monkeypatch.setenv("PAM_TYPE", "account")
    monkeypatch.setenv("PAM_USER", "deploy")
    monkeypatch.setenv("PAM_RHOST", "127.0.0.1")
    monkeypatch.setenv("PAM_SERVICE", "sshd")
    monkeypatch.delenv("SSH_AUTH_INFO_0", raising=False)


@pytest.fixture
def default_log(monkeypatch, sink):
    """Where a hook logs when it can't trust its config (so not the config's socket):
    paths.SYSLOG_SOCKET, /dev/log on a host. Pointed at the test's sink here."""
    monkeypatch.setattr(paths, "SYSLOG_SOCKET", str(sink.path))


# -- the rule, as load_config applies it ---------------------------------------------------


def test_root_owned_files_load(write_config):
    cfg = load_config(write_config(["https://jit.example.com"]))
    assert cfg.urls == ("https://jit.example.com",)
    assert cfg.read_token() == TOKEN


@pytest.mark.parametrize(
    "mode, says",
    [
        (0o666, "config is world-writable (mode 0666): chmod 644 {path}"),
        (0o664, "config is group-writable (mode 0664): chmod 644 {path}"),
        (0o646, "config is world-writable (mode 0646): chmod 644 {path}"),
    ],
)
def test_writable_config_is_refused_naming_the_fix(write_config, mode, says):
    path = write_config(["https://jit.example.com"])
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: " + says.format(path=path)


def test_config_owned_by_another_user_is_refused(write_config):
    path = write_config(["https://jit.example.com"])
    os.chown(path, NOBODY, -1)
    with pytest.raises(ConfigError, match=f"owned by uid {NOBODY}, not root: chown root {path}"):
        load_config(path)


def test_group_writable_directory_above_the_config_is_refused(write_config, trusted):
    path = write_config(["https://jit.example.com"])
    os.chmod(trusted, 0o775)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.path == str(trusted)
    assert "group-writable (mode 0775)" in str(e.value)
    assert f"chmod 755 {trusted}" in str(e.value)


def test_directory_two_levels_up_owned_by_a_user_is_refused(write_config, trusted):
    sub = trusted / "etc"
    sub.mkdir(mode=0o755)
    path = write_file(sub / "jit-hooks.toml", Path(write_config(["https://x.example"])).read_text())
    os.chown(trusted, NOBODY, -1)  # nobody could rename etc/ away and put their own in
    with pytest.raises(ConfigError, match=f"owned by uid {NOBODY}, not root: chown root {trusted}"):
        load_config(str(path))


def test_config_under_tmp_is_refused(tmp_path, write_config):
    """/tmp is 1777: anyone can replace a directory of theirs there (the sticky bit
    only protects entries of others, so the rule is sshd's: refused, whatever the bit)."""
    text = Path(write_config(["https://jit.example.com"])).read_text()
    path = write_file(tmp_path / "jit-hooks.toml", text)
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.path == "/tmp"
    assert "world-writable (mode 1777): keep the file under /etc/jit-hooks" in str(e.value)


def test_ca_file_writable_by_others_is_refused(write_config, trusted):
    ca = write_file(trusted / "ca.pem", "-----BEGIN CERTIFICATE-----\n", mode=0o646)
    path = write_config(["https://jit.example.com"], extra=f'ca_file = "{ca}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{ca}: CA file is world-writable (mode 0646): chmod 644 {ca}"


@pytest.mark.parametrize(
    "mode, owner, group, says",
    [
        (0o644, 0, "hook", "host token has mode 0644, must be 0640 or stricter: chmod 640"),
        (0o604, 0, "hook", "host token has mode 0604, must be 0640 or stricter: chmod 600"),
        (0o660, 0, "hook", "host token is group-writable (mode 0660): chmod 640"),
        (0o640, NOBODY, "hook", f"host token is owned by uid {NOBODY}, not root: chown root"),
        (0o640, 0, NOBODY, f"host token is readable by group {NOBODY}, which is not jit-hooks"),
    ],
)
def test_token_with_the_wrong_owner_or_mode_is_refused(
    write_config, trusted, mode, owner, group, says
):
    path = write_config(["https://jit.example.com"])
    token = trusted / "host-token"
    os.chown(token, owner, hook_gid() if group == "hook" else group)
    os.chmod(token, mode)
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(path)


@pytest.mark.parametrize("mode, group", [(0o640, 0), (0o600, NOBODY), (0o400, 0), (0o640, "hook")])
def test_token_modes_that_pass(write_config, trusted, mode, group):
    path = write_config(["https://jit.example.com"])
    token = trusted / "host-token"
    os.chown(token, 0, hook_gid() if group == "hook" else group)
    os.chmod(token, mode)
    assert load_config(path).read_token() == TOKEN


def test_symlinked_token_is_refused(write_config, trusted):
    path = write_config(["https://jit.example.com"])
    token = trusted / "host-token"
    os.rename(token, trusted / "elsewhere")
    os.symlink(trusted / "elsewhere", token)
    with pytest.raises(ConfigError, match="host token is a symlink: replace it with the file"):
        load_config(path)


def test_token_checked_again_when_read(write_config, trusted):
    """read_token (every service call) applies the rule too, not only load_config."""
    cfg = load_config(write_config(["https://jit.example.com"]))
    os.chmod(trusted / "host-token", 0o644)
    with pytest.raises(ConfigError, match="must be 0640 or stricter"):
        cfg.read_token()


@pytest.mark.parametrize(
    "url",
    [
        "http://jit.example.com",
        "http://10.0.0.5:8080",
        "http://127.0.0.1.evil.example",
        "http://[::2]",
    ],
)
def test_http_to_a_remote_host_is_refused(url):
    with pytest.raises(ConfigError) as e:
        parse_config({"service": {"urls": [url]}}, path="/etc/jit-hooks/jit-hooks.toml")
    assert e.value.key == "service.urls"
    assert repr(url) in str(e.value) and "use https://" in str(e.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://127.3.2.1/jit", "http://localhost:1", "http://[::1]:80"],
)
def test_http_to_loopback_is_allowed(url):
    assert parse_config({"service": {"urls": [url]}}).urls == (url,)


@pytest.mark.parametrize(
    "value, seconds", [(None, 86400), ("24h", 86400), ("90m", 5400), ("7d", 604800), (3600, 3600)]
)
def test_max_grant_values(value, seconds):
    service = {"urls": ["https://x.example"]}
    if value is not None:
        service["max_grant"] = value
    assert parse_config({"service": service}).max_grant == seconds


@pytest.mark.parametrize("value", ["1y", "", "24 h", 0, 59, True, 2.5, "401d", -5])
def test_bad_max_grant_names_the_key(value):
    with pytest.raises(ConfigError) as e:
        parse_config({"service": {"urls": ["https://x.example"], "max_grant": value}})
    assert e.value.key == "service.max_grant"


def test_token_never_shows_in_repr(write_config):
    cfg = ConfigCache().load(write_config(["https://jit.example.com"]))
    assert cfg.token == TOKEN
    assert TOKEN not in repr(cfg) and "token='<hidden>'" in repr(cfg)


# -- the hooks deny with reason=config ---------------------------------------------------


def test_akc_denies_with_a_world_writable_config(
    write_config, fault, keypair, sink, default_log, capsys
):
    _, pub = keypair
    fault.answer = key_answer(pub, int(time.time()) + HOUR)
    path = write_config([fault.url])
    os.chmod(path, 0o666)
    assert authorized_keys.main(akc_args(path, pub)) == 1
    assert capsys.readouterr().out == ""
    sink.wait_for(r"decision=deny .*reason=config .*world-writable", ident=AKC)
    assert fault.requests == []


def test_pam_account_denies_a_token_others_can_read(
    write_config, fault, trusted, sink, pam_env, capsys
):
    fault.answer = allow(int(time.time()) + HOUR)
    path = write_config([fault.url])
    os.chmod(trusted / "host-token", 0o644)
    assert pam_account.main(["--config", path]) == 1
    assert capsys.readouterr().out.startswith("jit: access denied")
    # The config itself passed: the line goes to the socket it names.
    sink.wait_for(r"decision=deny .*reason=config .*host token has mode 0644", ident=ACCOUNT)
    assert fault.requests == []


def test_akc_denies_with_a_writable_ca_file(write_config, fault, trusted, keypair, sink, capsys):
    _, pub = keypair
    ca = write_file(trusted / "ca.pem", "-----BEGIN CERTIFICATE-----\n", mode=0o666)
    path = write_config([fault.url], extra=f'ca_file = "{ca}"\n')
    assert authorized_keys.main(akc_args(path, pub)) == 1
    assert capsys.readouterr().out == ""
    sink.wait_for(r"decision=deny .*reason=config .*CA file is world-writable", ident=AKC)


def test_akc_denies_with_a_symlinked_token(write_config, fault, trusted, keypair, sink, capsys):
    _, pub = keypair
    fault.answer = key_answer(pub, int(time.time()) + HOUR)
    path = write_config([fault.url])
    os.rename(trusted / "host-token", trusted / "real-token")
    os.symlink(trusted / "real-token", trusted / "host-token")
    assert authorized_keys.main(akc_args(path, pub)) == 1
    assert capsys.readouterr().out == ""
    sink.wait_for(r"decision=deny .*reason=config .*symlink", ident=AKC)
    assert fault.requests == []


# -- max_grant -------------------------------------------------------------------------------


def test_akc_refuses_an_approval_past_max_grant(write_config, fault, keypair, sink, capsys):
    _, pub = keypair
    far = int(time.time()) + TEN_YEARS
    fault.answer = key_answer(pub, far)
    cfg = load_config(write_config([fault.url]))
    assert authorized_keys.main(akc_args(cfg.path, pub)) == 1
    assert capsys.readouterr().out == ""  # no key line, no expiry-time in 2036
    line = sink.wait_for(r"decision=deny .*reason=grant_too_long", ident=AKC)
    assert f"expires={far}" in line and "max_grant=86400" in line
    # Nothing recorded: the account hook and sshd's second AKC run can't reuse it.
    assert os.listdir(cfg.state_dir) == []


def test_max_grant_setting_is_the_bound(write_config, fault, keypair, sink, capsys):
    _, pub = keypair
    path = write_config([fault.url], extra='max_grant = "2h"\n')
    fault.answer = key_answer(pub, int(time.time()) + 3 * HOUR)
    assert authorized_keys.main(akc_args(path, pub)) == 1
    sink.wait_for(r"reason=grant_too_long .*max_grant=7200", ident=AKC)
    fault.answer = key_answer(pub, int(time.time()) + HOUR)
    assert authorized_keys.main(akc_args(path, pub, login="deploy2")) == 0
    assert pub.blob in capsys.readouterr().out


def test_pam_account_refuses_an_approval_past_max_grant(write_config, fault, sink, pam_env, capsys):
    fault.answer = allow(int(time.time()) + TEN_YEARS)
    assert pam_account.main(["--config", write_config([fault.url])]) == 1
    assert "approval ends later than this host allows" in capsys.readouterr().out
    sink.wait_for(r"decision=deny .*reason=grant_too_long", ident=ACCOUNT)


def test_real_service_approval_moved_ten_years_on_is_refused(
    service, write_config, tmp_path, sink, pam_env, capsys
):
    (tmp_path / "keys").mkdir()
    world = basic_world(service, tmp_path / "keys")
    path = write_config([service.url], token=world.host_tokens["web1"])
    key = world.keys["alice"]
    args = ["--config", path, "deploy", key.fingerprint, key.key_type, key.blob]
    assert authorized_keys.main(args) == 0  # control: the approval as granted gets in
    assert key.blob in capsys.readouterr().out
    for name in os.listdir(load_config(path).state_dir):
        os.unlink(os.path.join(load_config(path).state_dir, name))  # no reuse of that answer
    (rid,) = service.sqlite("SELECT id FROM requests WHERE state = 'approved'")[0]
    service.sqlite(
        "UPDATE requests SET ends_at = ? WHERE id = ?", (int(time.time()) + TEN_YEARS, rid)
    )
    assert authorized_keys.main(args) == 1
    assert capsys.readouterr().out == ""
    sink.wait_for(rf"decision=deny .*reason=grant_too_long request={rid}", ident=AKC)
    assert pam_account.main(["--config", path]) == 1  # asked by login: same approval
    sink.wait_for(r"decision=deny .*reason=grant_too_long", ident=ACCOUNT)


# -- jit-hooksd's config cache ---------------------------------------------------------------


def test_cache_serves_unchanged_files_and_reloads_on_any_change(write_config, trusted):
    cache = ConfigCache()
    path = write_config(["https://a.example"])
    assert cache.load(path).urls == ("https://a.example",)
    assert cache.load(path).urls == ("https://a.example",)
    assert cache.loads == 2  # just written: too new to cache (see RACY_NS)
    time.sleep(config_cache.RACY_NS / 1e9)
    for _ in range(4):
        assert cache.load(path).urls == ("https://a.example",)
    assert cache.loads == 3  # one load once the files are old enough, then hits only
    write_config(["https://a.exampl2"])  # same files, same size, new text: at once
    assert cache.load(path).urls == ("https://a.exampl2",)
    write_config(["https://b.example"])
    assert cache.load(path).urls == ("https://b.example",)
    os.chmod(path, 0o666)
    with pytest.raises(ConfigError, match="world-writable"):
        cache.load(path)
    with pytest.raises(ConfigError, match="world-writable"):
        cache.load(path)  # failures are never cached
    os.chmod(path, 0o644)
    assert cache.load(path).urls == ("https://b.example",)
    os.chmod(trusted, 0o777)
    with pytest.raises(ConfigError, match="world-writable"):
        cache.load(path)
    os.chmod(trusted, 0o755)
    (trusted / "host-token").write_text("jith_" + "n" * 43 + "\n")
    assert cache.load(path).read_token() == "jith_" + "n" * 43


def test_helper_sees_each_change_on_the_next_request(write_config, fault, sink):
    """jit-hooksd (a real process) answers from the cache; a changed config, or one made
    world-writable, takes effect on the very next request."""
    fault.answer = allow(int(time.time()) + HOUR)
    other = FaultServer(answer={"decision": "deny", "reason": "from the other service"})
    path = write_config([fault.url])
    d = Path(tempfile.mkdtemp(prefix="jtr"))  # short: unix socket path limit
    sock = d / "h.sock"
    env = {"PAM_TYPE": "account", "PAM_USER": "deploy", "PAM_RHOST": "127.0.0.1"}
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r}); from jit_hooks.host.login import thin; "
        f"raise SystemExit(thin.main('pam-account', {str(sock)!r}))"
    )

    def ask() -> int:
        cmd = ["/usr/bin/python3", "-IS", "-c", code, "--config", path]
        return subprocess.run(cmd, capture_output=True, env=env, timeout=30).returncode

    try:
        with HooksDaemon(ROOT, sock, syslog_socket=sink.path, log_path=d / "d.log") as daemon:
            assert ask() == 0 and ask() == 0
            assert len(fault.requests) == 2
            write_config([other.url])
            assert ask() == 1
            sink.wait_for(r"decision=deny .*reason=service_denied .*via=hooksd", ident=ACCOUNT)
            assert len(other.requests) == 1 and len(fault.requests) == 2
            os.chmod(path, 0o666)
            assert ask() == 1
            # Untrusted config: the line goes to the helper's default log (stderr here).
            deadline = time.monotonic() + 10
            while "reason=config" not in daemon.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "world-writable" in daemon.log_text()
            assert len(other.requests) == 1
            os.chmod(path, 0o644)
            write_config([fault.url])
            assert ask() == 0
    finally:
        other.stop()
        subprocess.run(["rm", "-rf", str(d)], check=False)


def test_unprivileged_user_cannot_write_what_the_rule_passes(write_config, trusted):
    """The premise, for real: with the modes the rule accepts, nobody can't rewrite
    the config or replace the directory entry (a check that a uid other than root
    really is locked out, not just a mode comparison)."""
    path = write_config(["https://jit.example.com"])
    load_config(path)
    probe = (
        "import os, sys\n"
        "p = sys.argv[1]\n"
        "for op in (lambda: open(p, 'w'), lambda: os.rename(p, p + '.x')):\n"
        "    try:\n        op()\n    except PermissionError:\n        continue\n"
        "    raise SystemExit('wrote')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, path],
        user=NOBODY,
        group=NOBODY,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
