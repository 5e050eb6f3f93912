"""A real jit-hooksd process (jit_hooks/host/login/daemon.py) for tests, the sshd sandbox and bench.

Started with ``/usr/bin/python3 -IS`` like the packaged ``/usr/sbin/jit-hooksd``,
optionally as another user (``setpriv``, e.g. the AKC user ``jit-hooks``).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

PYTHON = "/usr/bin/python3"


def wrapper_text(lib: str, mode: str, socket_path: str) -> str:
    """A hook wrapper like packaging/host/usr/bin/jit-*, with ``lib`` first on sys.path."""
    return (
        "#!/usr/bin/python3 -IS\n"
        f"import sys\nsys.path.insert(0, {lib!r})\n"
        "from jit_hooks.host.login.thin import main\n\n"
        f"raise SystemExit(main({mode!r}, {socket_path!r}))\n"
    )


class HooksDaemon:
    """``python3 -IS -m``-style run of jit_hooks.host.login.daemon; ``stop()`` ends it (SIGTERM)."""

    def __init__(
        self,
        lib: str | Path,
        socket_path: str | Path,
        *,
        user: str | None = None,
        syslog_socket: str | Path | None = None,
        log_path: str | Path | None = None,
        args: tuple[str, ...] = (),
    ):
        self.lib = str(lib)
        self.args = tuple(args)  # more command-line options, e.g. ("--max-bodies", "2")
        self.socket_path = str(socket_path)
        self.user = user
        self.syslog_socket = str(syslog_socket) if syslog_socket else None
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        code = (
            f"import sys; sys.path.insert(0, {self.lib!r}); "
            # As /usr/sbin/jit-hooksd: Debian's python3-* modules (cachetools) after ours.
            "sys.path.append('/usr/lib/python3/dist-packages'); "
            "from jit_hooks.host.login.daemon import main; sys.exit(main())"
        )
        cmd = [PYTHON, "-IS", "-c", code, "--socket", self.socket_path]
        if self.syslog_socket:
            cmd += ["--syslog-socket", self.syslog_socket]
        cmd += self.args
        if self.user:
            pw = pwd.getpwnam(self.user)
            cmd = [
                "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                "--", *cmd,
            ]  # fmt: skip
        return cmd

    def start(self, timeout: float = 15) -> HooksDaemon:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin"},
            )
        finally:
            if not isinstance(out, int):  # our log file, not subprocess.DEVNULL
                out.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"jit-hooksd exited {self.proc.returncode}: {self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jit-hooksd did not start: {self.log_text()}")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then the exit status (SIGKILL if it does not exit within 10 s)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> HooksDaemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
