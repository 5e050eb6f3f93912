"""`jit-hooks status`: one line per check of this host's wiring, config, service and helper."""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from jit_hooks.errors import ConfigError
from jit_hooks.host import paths, procfs
from jit_hooks.host.admin import preflight, sshd_probe, wiring
from jit_hooks.host.admin.layout import Layout
from jit_hooks.host.admin.preflight import PreflightError
from jit_hooks.host.login.config import HostConfig, load_config

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


Line = tuple[str, str, str]  # (check, "ok" | "FAIL" | "off", one line of text)


def report(layout: Layout) -> Iterator[Line]:
    """Every check, in order; "off" only for the optional helper (never a failure)."""

    def line(name: str, good: bool, text: str) -> Line:
        return name, "ok" if good else "FAIL", text

    config: HostConfig | None = None
    try:
        config = load_config(layout.host_config_path)
        yield line("config", True, config.path or "")
    except ConfigError as e:
        yield line("config", False, str(e))
    break_glass = config.break_glass if config else frozenset()
    state = wiring.wiring_status(layout, break_glass)
    detail = f"drop-in {state.dropin}, PAM block {state.pam}"
    yield line("wiring", state.state in ("enabled", "disabled"), f"{state.state} ({detail})")
    problem = sshd_probe.sshd_test(layout)
    yield line(
        "sshd config", problem is None, problem or f"sshd -t accepts {layout.sshd_config_path}"
    )
    if state.state == "enabled" and problem is None:
        problems = sshd_probe.verify_effective(
            layout, break_glass, allow_passwords=state.allow_passwords
        )
        yield line("sshd uses", not problems, problems[0] if problems else "the jit-hooks settings")
        yield line(
            "passwords",
            True,
            "allowed (enable --allow-passwords): an approval for an account lets in "
            "anyone with its password"
            if state.allow_passwords
            else "off (key logins only)",
        )
    if config is None:
        return
    yield line(
        "break-glass", bool(break_glass), ", ".join(sorted(break_glass)) or "none configured"
    )
    try:
        preflight.check_token_file(config)
        preflight.check_hook_user_can_read(config)
        yield line("token", True, f"{config.token_file} (0640 root:{paths.HOOK_USER})")
    except (PreflightError, ConfigError) as e:
        yield line("token", False, str(e))
    try:
        preflight.check_hook_user()
        state_dir = preflight.ensure_state_dir(config, create=False)
        yield line("state dir", True, f"{state_dir} (0700 {paths.HOOK_USER})")
    except PreflightError as e:
        yield line("state dir", False, str(e))
    try:
        waiting = preflight.spooled_reports(config)
        # Not a failure: the enforce timer delivers them once the service answers.
        yield line(
            "spool", True, f"{config.spool_dir}: {waiting} break-glass report(s) not delivered"
        )
    except (PreflightError, KeyError, OSError) as e:
        yield line("spool", False, str(e))
    try:
        host, skew = preflight.ping(config)
        yield line("service", True, f"answers for host {host}")
        skew_ok = abs(skew) <= preflight.MAX_CLOCK_SKEW
        yield line("clock skew", skew_ok, f"{skew:+d} s vs the service")
    except (PreflightError, ConfigError) as e:
        yield line("service", False, str(e))
    # Optional: without the helper the hooks work in-process, so it never fails status.
    listening, text = helper_line(layout)
    yield "helper", "ok" if listening else "off", text
