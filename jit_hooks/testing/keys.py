"""SSH key pairs made by the real ssh-keygen, for tests and benchmarks."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SshKey:
    line: str  # "TYPE BLOB COMMENT" as in the .pub file
    key_type: str
    blob: str
    fingerprint: str  # as `ssh-keygen -l -E sha256` prints it
    private: Path


def make_key(directory: Path, name: str, kind: str = "ed25519") -> SshKey:
    """A fresh key pair (no passphrase) at ``directory/name`` and ``name.pub``."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@test", "-f", str(path)],
        check=True,
        timeout=30,
    )
    line = (directory / f"{name}.pub").read_text().strip()
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()[1]
    key_type, blob = line.split()[:2]
    return SshKey(line=line, key_type=key_type, blob=blob, fingerprint=fp, private=path)
