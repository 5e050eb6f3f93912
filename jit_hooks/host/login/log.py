"""One key=value line per hook decision to syslog (facility authpriv); never a secret.

A tiny RFC 3164 sender on a unix datagram socket instead of the `syslog`
module: the socket is configurable (tests run their own listener) and it costs
no import time. If the socket is missing the line goes to stderr instead.
"""

from __future__ import annotations

import _thread
import os
import socket
import sys
import time
from collections.abc import Callable

LOG_AUTHPRIV = 10 << 3
ALERT, WARNING, INFO = 1, 4, 6
_MAX_VALUE = 200


def format_fields(fields: dict[str, object]) -> str:
    """``k=v k2="v with space"``: values reduced to printable ASCII, quoted when needed."""
    out = []
    for key, value in fields.items():
        if value is None:
            continue
        text = "".join(c for c in str(value) if " " <= c <= "~")[:_MAX_VALUE]
        if not text or any(c in text for c in ' "=\\'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


class HookLog:
    """Sends decision lines for one hook program (the syslog ident)."""

    def __init__(self, ident: str, socket_path: str = "/dev/log"):
        self.ident = ident
        self.socket_path = socket_path

    def line(self, severity: int, **fields: object) -> str:
        message = format_fields(fields)
        stamp = time.strftime("%b %d %H:%M:%S")
        record = f"<{LOG_AUTHPRIV | severity}>{stamp} {self.ident}[{os.getpid()}]: {message}"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.settimeout(1.0)  # a wedged syslog daemon must not hold a login
                s.connect(self.socket_path)
                s.send(record.encode("ascii", "replace"))
        except OSError:
            print(f"{self.ident}: {message}", file=sys.stderr)
        return message

    def info(self, **fields: object) -> str:
        return self.line(INFO, **fields)

    def warning(self, **fields: object) -> str:
        return self.line(WARNING, **fields)

    def alert(self, **fields: object) -> str:
        return self.line(ALERT, **fields)


class RateLimitedLog(HookLog):
    """A HookLog whose lines are limited per reason: a token bucket of ``burst`` lines
    refilled at ``per_second``. What it drops is counted, never lost silently: the next
    line let through for that reason carries ``suppressed=N``, and ``flush()`` (called
    periodically) logs ``event=suppressed`` with the count of a reason gone quiet.

    For the helper's own lines (refused peers, busy, garbled requests), which anyone
    who can reach its socket could otherwise make it write without bound. Hook
    decision lines are never limited: each is one login's record.
    """

    def __init__(
        self,
        ident: str,
        socket_path: str = "/dev/log",
        *,
        burst: int = 20,
        per_second: float = 1.0,
        flush_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(ident, socket_path)
        self.burst, self.per_second, self.flush_every = burst, per_second, flush_every
        self._clock = clock
        self._lock = _thread.allocate_lock()
        self._tokens: dict[str, tuple[float, float]] = {}  # reason -> (tokens, at)
        self._suppressed: dict[str, int] = {}
        self._reported: dict[str, float] = {}  # reason -> when its count was last logged

    def _take(self, key: str) -> tuple[bool, int]:
        """(let this line through, lines suppressed since the last one let through)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._tokens.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            if tokens < 1:
                self._tokens[key] = (tokens, now)
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False, 0
            self._tokens[key] = (tokens - 1, now)
            self._reported[key] = now
            return True, self._suppressed.pop(key, 0)

    def line(self, severity: int, **fields: object) -> str:
        key = str(fields.get("reason") or fields.get("event") or "")
        allowed, suppressed = self._take(key)
        if not allowed:
            return ""
        if suppressed:
            fields["suppressed"] = suppressed
        return super().line(severity, **fields)

    def flush(self, force: bool = False) -> None:
        """Log the count of each reason whose lines were dropped and that has not been
        reported for ``flush_every`` seconds (every reason if ``force``)."""
        now = self._clock()
        with self._lock:
            due = [
                (key, count)
                for key, count in self._suppressed.items()
                if force or now - self._reported.get(key, 0.0) >= self.flush_every
            ]
            for key, _count in due:
                del self._suppressed[key]
                self._reported[key] = now
        for key, count in due:
            super().line(WARNING, event="suppressed", reason=key, count=count)
