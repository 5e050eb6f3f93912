"""Host configuration (/etc/jit-hooks/jit-hooks.toml): load and validate once.

Example (every key but ``service.urls`` is optional)::

    [service]
    urls = ["https://jit.example.com:8443"]   # tried in order within one total budget
    ca_file = "/etc/jit-hooks/ca.pem"          # optional; system CAs otherwise
    token_file = "/etc/jit-hooks/host-token"   # 0640 root:jit-hooks
    connect_timeout = 2.0
    total_timeout = 5.0
    max_grant = "24h"     # refuse an approval ending later than this from now
    [host]
    name = "web1"            # informational; the token decides which host we are
    [break_glass]
    accounts = ["breakglass"]
    [state]
    dir = "/run/jit-hooks"   # connection -> accepted key records
    spool_dir = "/var/spool/jit-hooks"  # break-glass reports not delivered yet
    [log]
    syslog_socket = "/dev/log"

The config, the CA file and the token must pass trust.py's rule (root-owned, not
group/world-writable, up to /) every time they are loaded.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

from jit_hooks.errors import ConfigError
from jit_hooks.host import paths
from jit_hooks.host.login import trust
from jit_hooks.protocol import LOGIN_RE

# Host tokens are `secrets.token_urlsafe` output with a prefix: nothing that
# could break an HTTP header line.
_TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]{16,512}\Z")
_HOST_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")


def _is_loopback(host: str) -> bool:
    """Plain http only where nobody on the path can read or rewrite the answer.

    An exact IP literal (ipaddress refuses 127.0.0.09 and the like, which the
    resolver would look up in /etc/hosts or DNS) or "localhost".
    """
    if host == "localhost":
        return True
    import ipaddress  # only for an http:// URL

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DURATION_RE = re.compile(r"\A([0-9]{1,9})([smhd]?)\Z")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TOKEN_BYTES = 1024

_SCHEMA: dict[str, set[str]] = {
    "service": {
        "urls",
        "ca_file",
        "token_file",
        "connect_timeout",
        "total_timeout",
        "max_grant",
    },
    "host": {"name"},
    "break_glass": {"accounts"},
    "state": {"dir", "spool_dir"},
    "log": {"syslog_socket"},
    "sessions": {"warn_before"},
}


# Immutable record; a NamedTuple, not a dataclass, for hook start-up time (see sshkeys).
class HostConfig(NamedTuple):
    """Validated host settings. Build it with ``load_config`` or ``parse_config``."""

    urls: tuple[str, ...]
    token_file: str = paths.TOKEN_PATH
    ca_file: str | None = None
    connect_timeout: float = paths.CONNECT_TIMEOUT
    total_timeout: float = paths.TOTAL_TIMEOUT
    host_name: str | None = None
    break_glass: frozenset[str] = frozenset()
    state_dir: str = paths.STATE_DIR
    spool_dir: str = paths.SPOOL_DIR
    syslog_socket: str = paths.SYSLOG_SOCKET
    max_grant: int = paths.MAX_GRANT
    path: str | None = None  # the file it was loaded from
    token: str | None = None  # set by the helper's config cache (config_cache.py) only
    # Seconds before an approval's end at which its sessions' terminals are warned.
    warn_before: tuple[int, ...] = (600, 60)

    def __repr__(self) -> str:
        # The token must never reach a log line or a traceback through repr().
        shown = self._replace(token="<hidden>" if self.token else None)
        return "HostConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown._asdict().items()) + ")"

    def read_token(self) -> str:
        """Return the host token; raise ConfigError if the file is untrusted or malformed."""
        return self.token or read_token(self.token_file)


def read_token(path: str) -> str:
    """The host token in ``path`` after trust.py's checks; ConfigError if unusable."""
    raw = trust.read_trusted(path, "host token", MAX_TOKEN_BYTES, token=True)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError("host token is malformed", path=path) from None
    if not _TOKEN_RE.match(token):
        raise ConfigError("host token is malformed", path=path)
    return token


def config_path(path: str | None = None) -> str:
    """The config file to use: explicit path, else $JIT_HOOKS_CONFIG, else the default."""
    return path or os.environ.get(paths.CONFIG_ENV) or paths.CONFIG_PATH


# jit-hooksd installs its cache here (config_cache.install); a hook process, and
# the admin commands, load afresh every time.
_loader: Callable[[str], HostConfig] | None = None


def load_config(path: str | None = None) -> HostConfig:
    """Read and validate the host config, its CA file and token (trust.py's rule included).

    Raises ConfigError naming the file, the key or what is wrong with the file's
    mode; if the config file itself passed, the error's ``config`` is the parsed
    config (where to log the denial).
    """
    path = config_path(path)
    return _loader(path) if _loader is not None else load_fresh(path)


def load_fresh(path: str) -> HostConfig:
    """``load_config`` without any cache."""
    raw = trust.read_trusted(path, "config", MAX_CONFIG_BYTES)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8", path=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=path) from None
    config = parse_config(data, path=path)
    try:
        if config.ca_file:
            trust.check(config.ca_file, "CA file")
        # Read (and checked again) per request by read_token; checked here so a bad
        # token file fails every loader (hooks, status, check, enable) the same way.
        trust.check(config.token_file, "host token", token=True)
    except ConfigError as e:
        e.config = config  # type: ignore[attr-defined]
        raise
    return config


def parse_config(data: dict, *, path: str | None = None) -> HostConfig:
    """Validate an already parsed TOML document (see the module docstring)."""

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(message, path=path, key=key)

    for section, value in data.items():
        if section not in _SCHEMA:
            raise fail(section, f"unknown section (expected one of {', '.join(sorted(_SCHEMA))})")
        if not isinstance(value, dict):
            raise fail(section, "must be a table")
        for key in value:
            if key not in _SCHEMA[section]:
                raise fail(f"{section}.{key}", "unknown setting")

    service = data.get("service", {})
    urls = service.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls:
        raise fail("service.urls", "expected a non-empty list of URLs")
    for url in urls:
        _check_url(url, fail)

    def opt_path(section: str, key: str) -> str | None:
        value = data.get(section, {}).get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            raise fail(f"{section}.{key}", "expected an absolute path")
        return value

    def str_path(section: str, key: str, default: str) -> str:
        return opt_path(section, key) or default

    def seconds(key: str, default: float) -> float:
        value = service.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(f"service.{key}", "expected a number of seconds")
        if not 0 < value <= paths.MAX_TIMEOUT:
            raise fail(f"service.{key}", f"expected 0 < seconds <= {paths.MAX_TIMEOUT:g}")
        return float(value)

    connect_timeout = seconds("connect_timeout", paths.CONNECT_TIMEOUT)
    total_timeout = seconds("total_timeout", paths.TOTAL_TIMEOUT)
    if connect_timeout > total_timeout:
        raise fail("service.connect_timeout", "must not exceed service.total_timeout")

    max_grant = _duration(service.get("max_grant", paths.MAX_GRANT), fail)

    name = data.get("host", {}).get("name")
    if name is not None and (not isinstance(name, str) or not _HOST_NAME_RE.match(name)):
        raise fail("host.name", "expected a host name")

    accounts = data.get("break_glass", {}).get("accounts", [])
    if not isinstance(accounts, list) or not all(
        isinstance(a, str) and LOGIN_RE.match(a) for a in accounts
    ):
        raise fail("break_glass.accounts", "expected a list of login names")

    warn_before = data.get("sessions", {}).get("warn_before", [600, 60])
    if not isinstance(warn_before, list) or not all(
        isinstance(w, int) and not isinstance(w, bool) and 0 < w <= max_grant for w in warn_before
    ):
        raise fail("sessions.warn_before", "expected a list of seconds, each within max_grant")

    return HostConfig(
        urls=tuple(urls),
        token_file=str_path("service", "token_file", paths.TOKEN_PATH),
        ca_file=opt_path("service", "ca_file"),
        connect_timeout=connect_timeout,
        total_timeout=total_timeout,
        host_name=name,
        break_glass=frozenset(accounts),
        state_dir=str_path("state", "dir", paths.STATE_DIR),
        spool_dir=str_path("state", "spool_dir", paths.SPOOL_DIR),
        syslog_socket=str_path("log", "syslog_socket", paths.SYSLOG_SOCKET),
        max_grant=max_grant,
        path=path,
        warn_before=tuple(sorted(set(warn_before), reverse=True)),
    )


def _duration(value: object, fail) -> int:
    """``service.max_grant``: seconds, or a string like "24h", "90m", "7d"."""
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match:
        seconds = int(match.group(1)) * _UNIT[match.group(2)]
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise fail("service.max_grant", 'expected a duration like "24h", "90m", "7d" or seconds')
    if not paths.MIN_MAX_GRANT <= seconds <= paths.MAX_MAX_GRANT:
        raise fail(
            "service.max_grant",
            f"expected {paths.MIN_MAX_GRANT} s to {paths.MAX_MAX_GRANT // 86400} days",
        )
    return seconds


def _check_url(url: object, fail) -> None:
    if not isinstance(url, str) or any(c in url for c in " \t\r\n\x00"):
        raise fail("service.urls", "each URL must be a string without whitespace")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise fail("service.urls", f"not a valid URL: {url!r}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise fail("service.urls", f"expected https://HOST[:PORT][/PATH], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise fail("service.urls", f"no credentials, query or fragment allowed: {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise fail(
            "service.urls",
            f"plain http is only allowed to a loopback address, got {url!r}: use https://",
        )
