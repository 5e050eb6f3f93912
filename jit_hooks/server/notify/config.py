"""Notification channels from the server's config file (TOML), secrets kept out of reprs and logs.

The file is ``$JIT_NOTIFY_CONFIG``, else ``<data dir>/notify.toml`` if it exists;
with neither, no channel is configured and state changes write no outbox rows.
Every process (each ``--workers`` worker, the admin CLI) reads the same file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jit_hooks.errors import JitError

FILENAME = "notify.toml"
KINDS = ("slack", "webhook", "smtp")
EVENTS = (
    "request.created",
    "request.reviewed",
    "request.approved",
    "request.denied",
    "request.expiring",
    "request.expired",
    "request.revoked",
    "request.pending_expired",
    "request.extension_requested",
    "request.extended",
    "request.extension_denied",
    "request.dropped",
    "break_glass.used",
)
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class NotifyConfigError(JitError):
    """Raised when the notification config file is unreadable or holds a bad value."""


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr/str never shows it (configs get logged by accident)."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str  # slack | webhook | smtp
    events: frozenset[str]
    url: str = ""  # slack, webhook
    secret: Secret | None = None  # webhook HMAC key; smtp password
    timeout: float = 10.0  # seconds for one delivery attempt (connect + answer)
    ca_file: str | None = None  # CA bundle for https:// and STARTTLS (default: the system's)
    # smtp
    host: str = ""
    port: int = 25
    starttls: bool = False
    username: str = ""
    sender: str = ""
    to: tuple[str, ...] = ()
    user_domain: str = ""  # mail people as <name>@<user_domain>


@dataclass(frozen=True)
class NotifyConfig:
    channels: dict[str, Channel] = field(default_factory=dict)
    default: tuple[str, ...] = ()  # channel names for policies without their own list
    per_policy: dict[str, tuple[str, ...]] = field(default_factory=dict)
    public_url: str = ""  # where the service's /ui is reached, for links
    expiring_seconds: int = 600  # "expiring soon" this long before the end
    backoff_base: float = 5.0
    backoff_cap: float = 3600.0
    max_attempts: int = 15
    interval: float = 1.0  # seconds between two worker rounds

    def channels_for(self, policy: str | None, event: str) -> list[Channel]:
        names = self.per_policy.get(policy, self.default) if policy else self.default
        return [self.channels[n] for n in names if event in self.channels[n].events]

    def request_url(self, request_id: int) -> str | None:
        """The request's page on the approver web page (served under /ui)."""
        if not self.public_url:
            return None
        return f"{self.public_url.rstrip('/')}/ui/requests/{int(request_id)}"


def _fail(path: Path, key: str, msg: str) -> NotifyConfigError:
    return NotifyConfigError(f"{path}: {key}: {msg}")


def _secret(path: Path, key: str, t: dict[str, Any]) -> Secret | None:
    if "secret" in t and "secret_file" in t:
        raise _fail(path, key, "give secret or secret_file, not both")
    if "secret_file" in t:
        try:
            return Secret(Path(t["secret_file"]).read_text().strip())
        except OSError as e:
            raise _fail(path, f"{key}.secret_file", f"cannot read ({e.strerror})") from None
    if "secret" in t:
        if not isinstance(t["secret"], str) or not t["secret"]:
            raise _fail(path, f"{key}.secret", "must be a non-empty string")
        return Secret(t["secret"])
    return None


def _channel(path: Path, name: str, t: Any) -> Channel:
    key = f"channels.{name}"
    if not NAME_RE.match(name):
        raise _fail(path, key, "channel names are letters, digits, . _ -")
    if not isinstance(t, dict):
        raise _fail(path, key, "must be a table")
    kind = t.get("type")
    if kind not in KINDS:
        raise _fail(path, f"{key}.type", f"must be one of {', '.join(KINDS)}")
    events = t.get("events", list(EVENTS))
    if not isinstance(events, list) or set(events) - set(EVENTS):
        raise _fail(path, f"{key}.events", f"a list of {', '.join(EVENTS)}")
    timeout = t.get("timeout", 10)
    if not isinstance(timeout, int | float) or not 0.1 <= timeout <= 120:
        raise _fail(path, f"{key}.timeout", "seconds between 0.1 and 120")
    secret = _secret(path, key, t)
    ca_file = t.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not Path(ca_file).is_file()):
        raise _fail(path, f"{key}.ca_file", "must name a readable CA file")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "events": frozenset(events),
        "timeout": float(timeout),
        "ca_file": ca_file,
    }
    if kind in ("slack", "webhook"):
        url = t.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(path, f"{key}.url", "must be an http:// or https:// URL")
        if kind == "webhook" and secret is None:
            raise _fail(path, key, "a webhook needs secret or secret_file (HMAC key)")
        return Channel(url=url, secret=secret, **common)
    host = t.get("host")
    if not isinstance(host, str) or not host:
        raise _fail(path, f"{key}.host", "the SMTP server's name")
    to = t.get("to", [])
    if not isinstance(to, list) or not all(isinstance(a, str) and "@" in a for a in to):
        raise _fail(path, f"{key}.to", "a list of mail addresses")
    sender = t.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        raise _fail(path, f"{key}.from", "the sender's mail address")
    domain = t.get("user_domain", "")
    if not to and not domain:
        raise _fail(path, key, "give to = [...] and/or user_domain")
    port = t.get("port", 25)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise _fail(path, f"{key}.port", "a TCP port")
    return Channel(
        host=host,
        port=port,
        starttls=bool(t.get("starttls", False)),
        username=str(t.get("username", "")),
        secret=secret,
        sender=sender,
        to=tuple(to),
        user_domain=str(domain),
        **common,
    )


def _names(path: Path, key: str, value: Any, channels: dict[str, Channel]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, key, "a list of channel names")
    for v in value:
        if v not in channels:
            raise _fail(path, key, f"unknown channel {v[:64]!r}")
    return tuple(value)


def _number(path: Path, t: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _fail(path, key, f"a number between {lo} and {hi}")
    return v


def parse(path: Path, data: dict[str, Any]) -> NotifyConfig:
    known = {"channels", "default", "policy", "public_url", "expiring_seconds", "retry"}
    unknown = set(data) - known
    if unknown:
        raise _fail(path, sorted(unknown)[0], "unknown key")
    raw = data.get("channels", {})
    if not isinstance(raw, dict):
        raise _fail(path, "channels", "must be a table of tables")
    channels = {n: _channel(path, n, t) for n, t in raw.items()}
    default = _names(path, "default", data.get("default", list(channels)), channels)
    per_policy = {}
    pol = data.get("policy", {})
    if not isinstance(pol, dict):
        raise _fail(path, "policy", "must be a table of tables")
    for name, t in pol.items():
        if not isinstance(t, dict) or set(t) != {"channels"}:
            raise _fail(path, f"policy.{name}", "must be a table with channels = [...]")
        per_policy[name] = _names(path, f"policy.{name}.channels", t["channels"], channels)
    public_url = data.get("public_url", "")
    if not isinstance(public_url, str) or (
        public_url and not public_url.startswith(("http://", "https://"))
    ):
        raise _fail(path, "public_url", "must be an http:// or https:// URL")
    retry = data.get("retry", {})
    if not isinstance(retry, dict):
        raise _fail(path, "retry", "must be a table")
    return NotifyConfig(
        channels=channels,
        default=default,
        per_policy=per_policy,
        public_url=public_url,
        expiring_seconds=int(_number(path, data, "expiring_seconds", 600, 0, 7 * 24 * 3600)),
        backoff_base=float(_number(path, retry, "base_seconds", 5.0, 0.01, 3600)),
        backoff_cap=float(_number(path, retry, "max_seconds", 3600.0, 0.01, 86400)),
        max_attempts=int(_number(path, retry, "max_attempts", 15, 1, 1000)),
        interval=float(_number(path, retry, "poll_seconds", 1.0, 0.05, 60)),
    )


def config_path(data_dir: Path | None) -> Path | None:
    raw = os.environ.get("JIT_NOTIFY_CONFIG")
    if raw:
        return Path(raw)
    if data_dir is not None and (data_dir / FILENAME).exists():
        return data_dir / FILENAME
    return None


def load(data_dir: Path | None) -> NotifyConfig:
    path = config_path(data_dir)
    if path is None:
        return NotifyConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise NotifyConfigError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise NotifyConfigError(f"{path}: not valid TOML ({e})") from None
    return parse(path, data)


_current: NotifyConfig | None = None


def current() -> NotifyConfig:
    """This process's config, read once (set by the service at start, see :func:`install`)."""
    global _current
    if _current is None:
        data_dir = os.environ.get("JIT_DATA_DIR")
        _current = load(Path(data_dir) if data_dir else None)
    return _current


def install(cfg: NotifyConfig | None) -> None:
    """Make ``cfg`` this process's config (None: read it again on next use)."""
    global _current
    _current = cfg
