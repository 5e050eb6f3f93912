"""Where tests put the hooks' trust inputs (config, token, CA): a root-owned 0755 directory.

The hooks refuse a config, CA file or token that anyone but root could change,
including through a directory above it (jit_hooks/host/login/trust.py), so these
files can't live under /tmp or pytest's tmp_path (/tmp is 1777). Like the sshd
sandbox, tests use a fresh directory under /var/lib/jit-hooks-test (root 0755, as
is every directory above it), removed afterwards. Nothing here relaxes the rule.
"""

from __future__ import annotations

import grp
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE = Path("/var/lib/jit-hooks-test")
HOOK_USER = "jit-hooks"


def make_dir(prefix: str = "t") -> Path:
    """A fresh root-owned 0755 directory under BASE (the caller removes it)."""
    if os.geteuid() != 0:
        raise RuntimeError("trusted test directories need root (the hooks' trust rule)")
    BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(BASE, 0o755)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=BASE))
    os.chmod(path, 0o755)
    return path


@contextmanager
def trusted_dir(prefix: str = "t") -> Iterator[Path]:
    """``make_dir`` as a context manager that always removes the directory."""
    path = make_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hook_gid() -> int:
    """The AKC user's group (the token's group), or root's if it does not exist here."""
    try:
        return grp.getgrnam(HOOK_USER).gr_gid
    except KeyError:
        return 0


def write_token(path: Path, token: str, *, mode: int = 0o640) -> Path:
    """The host token as the package installs it: root:jit-hooks, 0640."""
    path.write_text(token + "\n")
    os.chown(path, 0, hook_gid())
    os.chmod(path, mode)
    return path


def write_file(path: Path, text: str, *, mode: int = 0o644) -> Path:
    """A root-owned trust input (config, CA file) with an explicit mode, whatever the umask."""
    path.write_text(text)
    os.chmod(path, mode)
    return path
