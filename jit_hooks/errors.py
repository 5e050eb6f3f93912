"""Exception hierarchy shared by every part of jit-hooks (stdlib only)."""

from __future__ import annotations


class JitError(Exception):
    """Root of every error jit-hooks raises on purpose."""


class ConfigError(JitError):
    """Raised when a config file is missing, unreadable or invalid.

    ``path`` names the file and ``key`` the offending setting (or None).
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        where = path or "config"
        if key:
            where = f"{where}: {key}"
        super().__init__(f"{where}: {message}")


class KeyParseError(JitError, ValueError):
    """Raised when an SSH public key line or blob is malformed or not acceptable."""


class ServiceError(JitError):
    """Raised when the approval service can't give a usable answer (host hooks deny).

    ``reason`` is a short code for logs (``refused``, ``timeout``, ``tls``,
    ``http_500``, ``malformed``, ...); ``url`` the service URL tried last.
    """

    def __init__(self, reason: str, message: str = "", *, url: str | None = None):
        self.reason = reason
        self.url = url
        super().__init__(f"{reason}: {message}" if message else reason)


class ServiceUnreachable(ServiceError):
    """Raised when no answer came: refused, DNS, TLS, timeout or a dropped connection."""


class BadResponse(ServiceError):
    """Raised when an answer came but is unusable: status, redirect, size, JSON or schema."""
