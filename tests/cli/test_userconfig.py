"""The config file `jit login` writes: private modes, atomic merge, strict reading."""

from __future__ import annotations

import os
import stat

import pytest

from jit_hooks.cli import userconfig
from jit_hooks.errors import ConfigError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_save_creates_private_dir_and_file(tmp_path):
    path = tmp_path / "cfg" / "jit" / "config.toml"
    old = os.umask(0o022)
    try:
        userconfig.save(path, {"url": "http://127.0.0.1:1", "token": 'jitu_a"b\\c'})
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert userconfig.load(path) == {"url": "http://127.0.0.1:1", "token": 'jitu_a"b\\c'}
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left


def test_save_merges_and_removes(tmp_path):
    path = tmp_path / "config.toml"
    userconfig.save(path, {"url": "https://a", "token": "t1", "ca_file": "/ca.pem"})
    userconfig.save(path, {"token": "t2"})
    assert userconfig.load(path) == {"url": "https://a", "token": "t2", "ca_file": "/ca.pem"}
    userconfig.save(path, {"token": None})
    assert userconfig.load(path) == {"url": "https://a", "ca_file": "/ca.pem"}


def test_load_rejects_unknown_and_malformed(tmp_path):
    path = tmp_path / "config.toml"
    assert userconfig.load(path) == {}
    path.write_text('url = "x"\nurll = "y"\n')
    with pytest.raises(ConfigError, match="urll"):
        userconfig.load(path)
    path.write_text("url = 3\n")
    with pytest.raises(ConfigError, match="url: expected a non-empty string"):
        userconfig.load(path)
    path.write_text("url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        userconfig.load(path)


def test_too_open(tmp_path):
    path = tmp_path / "config.toml"
    userconfig.save(path, {"token": "t"})
    assert not userconfig.too_open(path)
    path.chmod(0o644)
    assert userconfig.too_open(path)
