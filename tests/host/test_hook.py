"""Shared hook plumbing: --config parsing (sshd passes no environment to the AKC)."""

from __future__ import annotations

import pytest

from jit_hooks.host.login.hook import split_config_arg


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--config", "/c.toml", "u", "f"], ("/c.toml", ["u", "f"])),
        (["--config=/c.toml", "u"], ("/c.toml", ["u"])),
        (["u", "f", "t", "k"], (None, ["u", "f", "t", "k"])),
        (["u", "--config", "/c.toml"], ("/c.toml", ["u"])),
        (["--config"], (None, [])),
    ],
)
def test_split_config_arg(argv, expected):
    assert split_config_arg(argv) == expected
