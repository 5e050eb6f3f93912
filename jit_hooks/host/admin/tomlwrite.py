"""The host config file `jit-hooks enroll` writes: a few known keys, quoted as TOML strings.

Written by hand rather than by a TOML library (none in Debian 12's stdlib); the
result is parsed back with tomllib and validated before anything is written.
"""

from __future__ import annotations

from jit_hooks.host import paths
from jit_hooks.host.login.config import HostConfig


def render_config(
    *,
    urls: list[str],
    ca_file: str | None,
    token_file: str,
    host_name: str | None,
    break_glass: list[str],
    old: HostConfig | None,
) -> str:
    """The host config `jit-hooks enroll` writes; keeps ``old``'s timeouts and paths."""

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "# jit-hooks host configuration, see jit-hooks(8). Written by `jit-hooks enroll`.",
        "[service]",
        f"urls = [{', '.join(q(u) for u in urls)}]",
    ]
    if ca_file:
        lines.append(f"ca_file = {q(ca_file)}")
    lines.append(f"token_file = {q(token_file)}  # 0640 root:{paths.HOOK_USER}")
    if old:
        lines += [
            f"connect_timeout = {old.connect_timeout!r}",
            f"total_timeout = {old.total_timeout!r}",
        ]
    lines.append("")
    if host_name:
        lines += ["[host]", f"name = {q(host_name)}", ""]
    lines += [
        "[break_glass]",
        "# Local accounts that log in with their own keys even when the service is down.",
        f"accounts = [{', '.join(q(a) for a in break_glass)}]",
    ]
    state = []
    if old and old.state_dir != paths.STATE_DIR:
        state.append(f"dir = {q(old.state_dir)}")
    if old and old.spool_dir != paths.SPOOL_DIR:
        state.append(f"spool_dir = {q(old.spool_dir)}")
    if state:
        lines += ["", "[state]", *state]
    if old and old.syslog_socket != paths.SYSLOG_SOCKET:
        lines += ["", "[log]", f"syslog_socket = {q(old.syslog_socket)}"]
    return "\n".join(lines) + "\n"
