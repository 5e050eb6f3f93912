"""jit-hooksd's cache of the host config and token: reloaded whenever a trust input changes.

The helper used to read and parse its config and token on every request. This
keeps the loaded config (token included) per config path and hands it out only
while nothing it came from has changed: the identity (device, inode, mtime, ctime,
size, mode, owner) of the config, CA and token files, of what a symlink among them
points to, and of every directory above each (device, inode, mode, owner). Any
change runs the whole load again, trust rule (trust.py) included, so a chmod o+w
or a rewritten ``urls`` takes effect on the next request. Failures are never
cached, and neither is any decision: only the inputs of one.

Only the helper imports this (cachetools is not for the hook processes' start-up).
"""

from __future__ import annotations

import os
import threading
import time

import cachetools

from jit_hooks.host.login import config as host_config
from jit_hooks.host.login.config import HostConfig

MAX_CONFIGS = 8  # distinct --config paths the helper serves (one on a real host)
# A file changed less than this ago is not cached: file times advance in clock ticks
# (milliseconds), so a same-size rewrite within one tick would keep its identity
# ("racy git"). Such a file is loaded afresh until it is older than this.
RACY_NS = 2_000_000_000

Identity = tuple[object, ...]


def _file_identity(path: str) -> Identity:
    """What must stay the same for a cached read of ``path`` to stay valid."""
    parts: list[object] = [path]
    for stat_call, name in ((os.lstat, path), (os.stat, os.path.realpath(path))):
        try:
            st = stat_call(name)
        except OSError as e:
            parts.append(("error", name, e.errno))
            continue
        parts.append(
            (
                name,
                st.st_dev,
                st.st_ino,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_size,
                st.st_mode,
                st.st_uid,
                st.st_gid,
            )
        )
    directory = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            st = os.stat(directory)
            parts.append((directory, st.st_dev, st.st_ino, st.st_mode, st.st_uid))
        except OSError as e:
            parts.append(("error", directory, e.errno))
        parent = os.path.dirname(directory)
        if parent == directory:
            return tuple(parts)
        directory = parent


def _changed_recently(files: list[str]) -> bool:
    now = time.time_ns()
    for path in files:
        try:
            if os.stat(path).st_ctime_ns > now - RACY_NS:
                return True
        except OSError:
            return True
    return False


def identity(config_path: str, config: HostConfig | None) -> Identity:
    """The identity of a config file and, if known, of its CA and token files."""
    files = [config_path]
    if config is not None:
        files += [p for p in (config.ca_file, config.token_file) if p]
    return tuple(_file_identity(p) for p in files)


class ConfigCache:
    """``load(path)``: the loaded config, reloaded when any input changed (see above)."""

    def __init__(self, maxsize: int = MAX_CONFIGS):
        # path -> (identity the entry is valid for, or None; config with its token)
        self._entries: cachetools.LRUCache[str, tuple[Identity | None, HostConfig]] = (
            cachetools.LRUCache(maxsize)
        )
        self._lock = threading.Lock()
        self.loads = 0  # full loads done (for tests: a hit does none)

    def load(self, path: str) -> HostConfig:
        with self._lock:
            entry = self._entries.get(path)
        known = entry[1] if entry is not None else None
        # Taken before reading anything, with the CA/token paths the last load found:
        # if a file changes while we read, the identities differ and nothing is cached.
        before = identity(path, known)
        if entry is not None and entry[0] == before:
            return entry[1]
        self.loads += 1
        config = host_config.load_fresh(path)  # ConfigError: not cached
        config = config._replace(token=host_config.read_token(config.token_file))
        after = identity(path, config)
        files = [p for p in (path, config.ca_file, config.token_file) if p]
        # Valid only if nothing changed during the load and no file is so new that a
        # rewrite could keep its identity; else the next request loads again.
        valid = before == after and not _changed_recently(files)
        with self._lock:
            self._entries[path] = (before if valid else None, config)
        return config


def install(cache: ConfigCache | None = None) -> ConfigCache:
    """Make ``config.load_config`` use ``cache`` in this process (the helper's main)."""
    cache = cache or ConfigCache()
    host_config._loader = cache.load
    return cache
