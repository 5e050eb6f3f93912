"""Host config loading: every mistake names the file and the key."""

from __future__ import annotations

import pytest

from jit_hooks.errors import ConfigError
from jit_hooks.host import paths
from jit_hooks.host.login.config import config_path, load_config, parse_config


def test_full_config_loads(write_config, trusted):
    cfg = load_config(write_config(["https://a.example:8443", "http://127.0.0.1:1/p"]))
    assert cfg.urls == ("https://a.example:8443", "http://127.0.0.1:1/p")
    assert cfg.connect_timeout == 1.0 and cfg.total_timeout == 2.0
    assert cfg.host_name == "web1"
    assert cfg.state_dir == str(trusted / "state")
    assert cfg.read_token().startswith("jith_")


def test_defaults():
    cfg = parse_config({"service": {"urls": ["https://jit.example.com"]}})
    assert cfg.token_file == paths.TOKEN_PATH
    assert cfg.ca_file is None
    assert (cfg.connect_timeout, cfg.total_timeout) == (2.0, 5.0)
    assert cfg.break_glass == frozenset()
    assert cfg.state_dir == "/run/jit-hooks"


def test_config_is_frozen():
    cfg = parse_config({"service": {"urls": ["https://jit.example.com"]}})
    with pytest.raises(AttributeError):
        cfg.urls = ()


@pytest.mark.parametrize(
    "data, key",
    [
        ({}, "service.urls"),
        ({"service": {"urls": []}}, "service.urls"),
        ({"service": {"urls": ["ftp://x"]}}, "service.urls"),
        ({"service": {"urls": ["https://u:p@x"]}}, "service.urls"),
        ({"service": {"urls": ["https://x:99999"]}}, "service.urls"),
        ({"service": {"urls": ["https://x/\nHost: y"]}}, "service.urls"),
        ({"service": {"urls": ["https://x"], "total_timeout": 0}}, "service.total_timeout"),
        ({"service": {"urls": ["https://x"], "total_timeout": 99}}, "service.total_timeout"),
        ({"service": {"urls": ["https://x"], "connect_timeout": "2"}}, "service.connect_timeout"),
        (
            {"service": {"urls": ["https://x"], "connect_timeout": 4.0, "total_timeout": 3.0}},
            "service.connect_timeout",
        ),
        ({"service": {"urls": ["https://x"], "token_file": "rel/path"}}, "service.token_file"),
        ({"service": {"urls": ["https://x"], "url": "typo"}}, "service.url"),
        ({"service": {"urls": ["https://x"]}, "extra": {}}, "extra"),
        ({"service": {"urls": ["https://x"]}, "break_glass": {"accounts": ["Bad Name"]}}, None),
        ({"service": {"urls": ["https://x"]}, "host": {"name": "a b"}}, "host.name"),
    ],
)
def test_invalid_settings_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse_config(data, path="/etc/jit-hooks/jit-hooks.toml")
    assert "/etc/jit-hooks/jit-hooks.toml" in str(e.value)
    assert e.value.key == (key or "break_glass.accounts")


def test_missing_file(trusted):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(trusted / "nope.toml"))


def test_bad_toml(trusted):
    p = trusted / "c.toml"
    p.write_text("[service\nurls = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(p))


def test_env_overrides_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("JIT_HOOKS_CONFIG", str(tmp_path / "x.toml"))
    assert config_path() == str(tmp_path / "x.toml")
    assert config_path("/explicit") == "/explicit"
    monkeypatch.delenv("JIT_HOOKS_CONFIG")
    assert config_path() == paths.CONFIG_PATH


@pytest.mark.parametrize("content", ["", "short", "jith_abc\r\nX-Evil: 1" + "a" * 20, "ü" * 20])
def test_malformed_token_refused(tmp_path, content):
    (tmp_path / "t").write_text(content)
    cfg = parse_config({"service": {"urls": ["https://x"], "token_file": str(tmp_path / "t")}})
    with pytest.raises(ConfigError):
        cfg.read_token()


def test_missing_token_refused(tmp_path):
    cfg = parse_config({"service": {"urls": ["https://x"], "token_file": str(tmp_path / "t")}})
    with pytest.raises(ConfigError, match="cannot read host token"):
        cfg.read_token()
