"""A syslog listener on a unix datagram socket: what the host hooks logged, for assertions."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

_LINE = re.compile(r"\A<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d (\S+?)\[(\d+)\]: (.*)\Z", re.S)


class SyslogSink:
    """Binds ``path`` (mode 0666 so the unprivileged AKC user may write) and collects lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines: list[tuple[int, str, str]] = []  # (priority, ident, message)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o666)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except OSError:
                continue
            m = _LINE.match(data.decode("ascii", "replace"))
            if m:
                self.lines.append((int(m.group(1)), m.group(2), m.group(4)))

    def messages(self, ident: str | None = None) -> list[str]:
        return [msg for _pri, who, msg in list(self.lines) if ident is None or who == ident]

    def wait_for(self, pattern: str, ident: str | None = None, timeout: float = 30.0) -> str:
        """The first message matching ``pattern`` (regex), waiting for it to arrive."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages(ident):
                if rx.search(msg):
                    return msg
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}: {self.messages(ident)}")
            time.sleep(0.05)

    def clear(self) -> None:
        self.lines.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass
