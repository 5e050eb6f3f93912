"""Hook entry points as a host runs them: `#!/usr/bin/python3 -IS` thin-client wrappers.

The wrappers are the packaged ones (packaging/host/usr/bin/jit-*: same
interpreter flags, same `jit_hooks.host.login.thin.main(MODE, SOCKET)` call) with
this checkout first on sys.path and a socket of the benchmark's choosing: the
socket of a real jit-hooksd (the default on an installed host), or one nobody
listens on, so the wrapper falls back to running the hook in its own process.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.world import REPO
from jit_hooks.testing.hooksd import HooksDaemon, wrapper_text

SYSTEM_PYTHON = "/usr/bin/python3"
MODES = {
    "jit-authorized-keys": "authorized-keys",
    "jit-pam-account": "pam-account",
    "jit-pam-session": "pam-session",
}


def install_wrappers(bin_dir: Path, socket_path: Path) -> dict[str, Path]:
    """Write the three thin-client wrappers into ``bin_dir``, asking ``socket_path``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, mode in MODES.items():
        path = bin_dir / name
        path.write_text(wrapper_text(str(REPO), mode, str(socket_path)))
        os.chmod(path, 0o755)
        out[name] = path
    return out


def start_hooksd(socket_path: Path, *, syslog_socket: Path | None, log_path: Path) -> HooksDaemon:
    """A real jit-hooksd on ``socket_path`` running this checkout (as root: every hook allowed)."""
    return HooksDaemon(REPO, socket_path, syslog_socket=syslog_socket, log_path=log_path).start()


def interpreter(wrapper: Path) -> list[str]:
    """The argv prefix the wrapper's ``#!`` line means (one flags word, as Linux passes it)."""
    words = wrapper.read_text().splitlines()[0][2:].split(None, 1)
    return words[:1] + [w for w in words[1:2] if w]
