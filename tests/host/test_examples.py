"""examples/sshd_config: sshd accepts it, and it wires what the hooks expect."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "sshd_config"


def directives() -> list[str]:
    lines = EXAMPLE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_example_has_the_essential_lines():
    lines = directives()
    assert "AuthorizedKeysCommand /usr/bin/jit-authorized-keys %u %f %t %k" in lines
    assert "AuthorizedKeysCommandUser jit-hooks" in lines
    assert "AuthorizedKeysFile none" in lines
    assert "ExposeAuthInfo yes" in lines and "UsePAM yes" in lines
    assert "PasswordAuthentication no" in lines and "KbdInteractiveAuthentication no" in lines
    # %C is refused by OpenSSH 9.2 in AuthorizedKeysCommand.
    assert not any("%C" in ln for ln in lines)


@pytest.mark.skipif(
    not shutil.which("sshd", path="/usr/sbin") or os.geteuid() != 0, reason="needs sshd + root"
)
def test_sshd_accepts_the_example(tmp_path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")], check=True
    )
    # sshd -t insists on its privilege separation directory (made at boot on a host).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {tmp_path / 'hk'}\n" + EXAMPLE.read_text())
    r = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
