"""Ask sshd itself: `sshd -t` (accepts the config?), `sshd -T` (what it really uses), reload."""

from __future__ import annotations

import os
import signal
import subprocess

from jit_hooks.host import paths, procfs
from jit_hooks.host.admin import sshd_match
from jit_hooks.host.admin.layout import Layout, WiringError

# `sshd -t` / `sshd -T` read a few files and exit: 30 s only guards against a hang.
SSHD_TIMEOUT = 30


def sshd_test(layout: Layout) -> str | None:
    """Run ``sshd -t`` on the config; None if it accepts it, else sshd's first message."""
    try:
        r = subprocess.run(
            [layout.sshd, "-t", "-f", layout.sshd_config_path],
            capture_output=True,
            text=True,
            timeout=SSHD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {layout.sshd}: {e}"
    if r.returncode == 0:
        return None
    lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
    return lines[0] if lines else f"sshd -t exited with status {r.returncode}"


def sshd_effective(layout: Layout, user: str) -> dict[str, str]:
    """``sshd -T`` for a connection as ``user`` from 127.0.0.1: keyword -> value."""
    r = subprocess.run(
        [
            layout.sshd,
            "-T",
            "-f",
            layout.sshd_config_path,
            "-C",
            f"user={user},host=localhost,addr=127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=SSHD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or ["no output"])[0]
        raise WiringError(f"sshd -T failed: {first}")
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, value)
    return out


# A user name that can't be a real account: `sshd -T` as an ordinary user.
PROBE_USER = "jit-hooks-probe"


def verify_effective(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> list[str]:
    """Problems with what sshd would really use (another file winning, no Include, ...)."""
    problems = []
    want = {
        "authorizedkeyscommand": f"{layout.command('jit-authorized-keys')} %u %f %t %k",
        "authorizedkeyscommanduser": paths.HOOK_USER,
        "authorizedkeysfile": "none",
        "exposeauthinfo": "yes",
        "usepam": "yes",
    }
    if not allow_passwords:
        want["passwordauthentication"] = "no"
        want["kbdinteractiveauthentication"] = "no"
    # sshd -T answers for one made-up client: Match blocks are read from the files.
    problems += sshd_match.scan(layout.sshd_config_path, layout.dropin_path)
    got = sshd_effective(layout, PROBE_USER)
    for key, value in want.items():
        if got.get(key) != value:
            problems.append(f"sshd uses {key} {got.get(key, '(unset)')!r}, not {value!r}")
    for user in sorted(break_glass):
        bg = sshd_effective(layout, user)
        if bg.get("authorizedkeysfile", "none") == "none":
            problems.append(f"break-glass account {user} would have no AuthorizedKeysFile")
        elif bg.get("authorizedkeyscommand", "none") != "none":
            problems.append(f"break-glass account {user} would depend on the AuthorizedKeysCommand")
    return problems


def reload_sshd(layout: Layout) -> str:
    """Ask the running sshd (from its PidFile) to re-read its config; a one-line outcome.

    SIGHUP is what Debian's ssh.service does on reload. Without --root we go by
    sshd's own PidFile; under a root dir the pid file is looked up under it too, so
    a test root can never signal the machine's own sshd.
    """
    if not os.path.exists(layout.sshd):
        return f"{layout.sshd} is not installed: nothing to reload"
    pidfile = sshd_effective(layout, PROBE_USER).get("pidfile", "/run/sshd.pid")
    if layout.root not in ("/", "") and not pidfile.startswith(layout.root.rstrip("/") + "/"):
        pidfile = layout.under_root(pidfile)
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = 0
    # A pidfd pins the process: the checks below and the signal are about one process
    # even if the pid is reused in between.
    try:
        pidfd = os.pidfd_open(pid) if pid > 0 else -1
    except OSError:
        pidfd = -1
    if pidfd < 0:
        return f"sshd is not running (no live pid in {pidfile}): new settings apply when it starts"
    try:
        # By the exe link, not /proc/PID/comm: any user can name a process "sshd", and
        # a stale pid file may name a user's process by now.
        exe = procfs.exe_name(pid)
        if exe != "sshd":
            return f"{pidfile} names pid {pid} ({exe or 'unknown program'}), not sshd: not reloaded"
        signal.pidfd_send_signal(pidfd, signal.SIGHUP)
    except ProcessLookupError:
        return f"sshd is not running (no live pid in {pidfile}): new settings apply when it starts"
    finally:
        os.close(pidfd)
    return f"reloaded sshd (pid {pid})"
