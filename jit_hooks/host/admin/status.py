"""Whether the optional resident hook helper (jit-hooksd) is there: socket and systemd units."""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import subprocess
from dataclasses import dataclass

from jit_hooks.host import paths, procfs
from jit_hooks.host.admin.layout import Layout

# The resident hook helper (jit-hooksd) the hook wrappers try first; without it
# they do the same work in-process, only slower.
HELPER_SOCKET = paths.HOOKSD_SOCKET
HELPER_UNITS = ("jit-hooksd.socket", "jit-hooksd.service")


@dataclass
class HelperStatus:
    path: str
    listening: bool  # a socket is listening at path (systemd's, or the helper's own)
    state: str  # one line: "listening", "missing", "no listener (stale socket file)", ...
    units: str | None = None  # "jit-hooksd.socket enabled active, ..." (None: no systemd here)


def _systemd_units() -> str | None:
    """The helper units' enablement and activity, if systemd runs this machine."""
    systemctl = shutil.which("systemctl")
    if not systemctl or not os.path.isdir("/run/systemd/system"):
        return None
    parts = []
    for unit in HELPER_UNITS:
        states = []
        for verb in ("is-enabled", "is-active"):
            try:
                r = subprocess.run(
                    [systemctl, verb, unit],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    stdin=subprocess.DEVNULL,
                )
                states.append(r.stdout.strip() or "unknown")
            except (OSError, subprocess.TimeoutExpired):
                states.append("unknown")
        parts.append(f"{unit} {' '.join(states)}")
    return ", ".join(parts)


def helper_status(layout: Layout) -> HelperStatus:
    """Whether the helper's socket exists and something listens on it.

    Under a --root the socket is looked for under it; systemd's view of the units
    is only asked about for the real root.
    """
    path = layout.under_root(HELPER_SOCKET)
    units = _systemd_units() if layout.root in ("/", "") else None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return HelperStatus(path, False, "missing", units)
    except OSError as e:
        return HelperStatus(path, False, f"cannot look at it: {e.strerror}", units)
    if not stat_mod.S_ISSOCK(st.st_mode):
        return HelperStatus(path, False, "not a socket", units)
    # From the kernel's socket table rather than by connecting: a connection would
    # start the helper through systemd and make it log a refused (empty) request.
    listening = procfs.unix_listening(path)
    if listening is None:
        return HelperStatus(path, False, "cannot tell: /proc/net/unix unreadable", units)
    if not listening:
        return HelperStatus(path, False, "no listener: a stale socket file", units)
    return HelperStatus(path, True, "listening", units)


def helper_line(layout: Layout) -> tuple[bool, str]:
    """(listening, one line) on the resident hook helper jit-hooksd, which is optional."""
    helper = helper_status(layout)
    units = f"; {helper.units}" if helper.units else ""
    if helper.listening:
        return True, f"jit-hooksd socket {helper.path} is listening{units}"
    return False, (
        f"no jit-hooksd at {helper.path} ({helper.state}{units}): the hooks still work, "
        "in-process (slower); `systemctl enable --now jit-hooksd.socket` turns it on"
    )
