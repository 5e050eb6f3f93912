"""The `jit` user config file: ~/.config/jit/config.toml (url, token, ca_file)."""

from __future__ import annotations

import os
import stat
import tempfile
import tomllib
from pathlib import Path

from jit_hooks.errors import ConfigError

# Settings the file may hold; each one is also a `jit` option of the same name,
# so the file can fill click's default_map directly.
KEYS = ("url", "token", "ca_file")
ENV_CONFIG = "JIT_CONFIG"


def default_path() -> Path:
    """$JIT_CONFIG is handled by click; this is the fallback under $XDG_CONFIG_HOME."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "jit" / "config.toml"


def load(path: Path) -> dict[str, str]:
    """Read the config file; a missing file is an empty config.

    Raises ConfigError naming the file and key when it is unreadable or malformed.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"not valid TOML: {e}", path=str(path)) from None
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(
                f"unknown setting (expected one of {', '.join(KEYS)})", path=str(path), key=key
            )
        if not isinstance(value, str) or not value:
            raise ConfigError("expected a non-empty string", path=str(path), key=key)
        out[key] = value
    return out


def too_open(path: Path) -> bool:
    """True if a file holding a token can be read by group or others."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def _quote(value: str) -> str:
    # TOML basic string: escape backslash, quote and every control character.
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dumps(settings: dict[str, str]) -> str:
    lines = ["# jit CLI settings (written by `jit login`; keep this file private)"]
    for key in KEYS:
        if settings.get(key):
            lines.append(f"{key} = {_quote(settings[key])}")
    return "\n".join(lines) + "\n"


def save(path: Path, updates: dict[str, str | None]) -> None:
    """Merge `updates` into the file (None removes a key), atomically, mode 0600.

    A directory this creates is 0700; the file is written to a private temporary
    file next to it and renamed, so no reader ever sees a half-written token.
    """
    settings = load(path)
    for key, value in updates.items():
        if key not in KEYS:
            raise ValueError(key)
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
        os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise ConfigError(f"cannot write: {e.strerror}", path=str(path)) from None
    try:
        # mkstemp creates the file 0600 whatever the umask is.
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(settings))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"cannot write: {e.strerror}", path=str(path)) from None
