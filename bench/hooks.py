"""Hook entry points as a host runs them: `#!/usr/bin/python3 -IS` wrappers (packaging/host).

The wrappers here are the packaged ones (same interpreter flags) plus one line
that puts this checkout on sys.path (the .deb installs the package into
dist-packages instead).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.world import REPO

SYSTEM_PYTHON = "/usr/bin/python3"
HOOKS = {
    "jit-authorized-keys": "jit_hooks.host.authorized_keys",
    "jit-pam-account": "jit_hooks.host.pam_account",
    "jit-pam-session": "jit_hooks.host.pam_session",
}


def install_wrappers(bin_dir: Path) -> dict[str, Path]:
    """Write the three hook wrappers into ``bin_dir`` (which must be root-owned for sshd)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, module in HOOKS.items():
        packaged = REPO / "packaging" / "host" / "usr" / "bin" / name
        body = packaged.read_text() if packaged.exists() else f"from {module} import main\n"
        lines = body.splitlines(keepends=True)
        flags = " -I"
        if lines and lines[0].startswith("#!"):
            flags = " " + " ".join(lines[0].split()[1:]) if len(lines[0].split()) > 1 else ""
            lines = lines[1:]
        shebang = f"#!{SYSTEM_PYTHON}{flags}\n"
        path = bin_dir / name
        path.write_text(
            shebang + f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + "".join(lines)
        )
        os.chmod(path, 0o755)
        out[name] = path
    return out


def interpreter(wrapper: Path) -> list[str]:
    """The argv prefix the wrapper's ``#!`` line means (one flags word, as Linux passes it)."""
    words = wrapper.read_text().splitlines()[0][2:].split(None, 1)
    return words[:1] + [w for w in words[1:2] if w]
