"""One key=value line per hook decision to syslog (facility authpriv); never a secret.

A tiny RFC 3164 sender on a unix datagram socket instead of the `syslog`
module: the socket is configurable (tests run their own listener) and it costs
no import time. If the socket is missing the line goes to stderr instead.
"""

from __future__ import annotations

import os
import socket
import sys
import time

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
