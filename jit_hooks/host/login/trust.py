"""sshd's StrictModes for the files that decide whom the hooks trust (stdlib only).

The config (service URLs), the CA file and the host token, and every directory
above each of them up to ``/``, must be owned by root and not writable by group
or others: whoever can write one of them can point the hooks at a service of
their own and let themselves in (OpenSSH misc.c safe_path applies the same rule
to authorized_keys). The token must also be unreadable by others: mode 0640 or
stricter, group root or the AKC user's, and not a symlink. Each file is opened
with O_NOFOLLOW and checked with fstat on the opened descriptor, so what was
checked is what is read. There is deliberately no switch to skip this.
"""

from __future__ import annotations

import os
import stat

from jit_hooks.errors import ConfigError
from jit_hooks.host import paths

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# Token: owner read/write, group read, nothing else (0640 or stricter).
_TOKEN_BITS = 0o640


def _hook_gid() -> int | None:
    import grp  # only when a group-readable token has a group other than root

    try:
        return grp.getgrnam(paths.HOOK_USER).gr_gid
    except KeyError:
        return None


def _fix_mode(mode: int, allowed: int) -> str:
    return f"{mode & allowed & 0o7777:o}"


def check_dirs(path: str, what: str) -> None:
    """Every directory above ``path`` (resolved) up to / is root-owned, not group/world-writable."""
    directory = os.path.dirname(path)
    while True:
        try:
            st = os.stat(directory)
        except OSError as e:
            raise ConfigError(
                f"directory above {what} {path}: {e.strerror or e}", path=directory
            ) from None
        if st.st_uid != 0:
            raise ConfigError(
                f"directory above {what} {path} is owned by uid {st.st_uid}, not root: "
                f"chown root {directory}",
                path=directory,
            )
        if st.st_mode & 0o022:
            kind = "world-writable" if st.st_mode & 0o002 else "group-writable"
            # A shared directory like /tmp (sticky) is meant to stay writable: move the file.
            fix = "" if st.st_mode & stat.S_ISVTX else f"chmod {_fix_mode(st.st_mode, ~0o022)} "
            fix += f"{directory}, or " if fix else ""
            raise ConfigError(
                f"directory above {what} {path} is {kind} (mode {st.st_mode & 0o7777:04o}): "
                f"{fix}keep the file under /etc/jit-hooks",
                path=directory,
            )
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def open_trusted(path: str, what: str, *, token: bool = False) -> int:
    """Open ``path`` read-only after the trust checks; return the fd (caller closes it).

    ``what`` names the file in errors ("config", "CA file", "host token");
    ``token`` adds the token rules (not a symlink, 0640 or stricter, group root or
    the hook user's). Raises ConfigError naming the file, what is wrong and the fix.
    """
    if token:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise ConfigError(
                    f"{what} is a symlink: replace it with the file itself "
                    f"(0640 root:{paths.HOOK_USER})",
                    path=path,
                )
        except OSError as e:
            raise ConfigError(f"cannot read {what}: {e.strerror or e}", path=path) from None
    # Directories are checked on the resolved path (as sshd does); the file itself
    # is then opened without following a symlink, so a swap after the check fails.
    real = os.path.realpath(path)
    if real != path:
        # A symlink on the way is only as safe as the directory holding it: whoever
        # can write there can point it elsewhere after this check.
        check_dirs(os.path.abspath(path), what)
    check_dirs(real, what if real == path else f"{what} {path} ->")
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror or e}", path=path) from None
    try:
        _check_file(os.fstat(fd), path, what, token=token)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_file(st: os.stat_result, path: str, what: str, *, token: bool) -> None:
    mode = st.st_mode & 0o7777
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} is not a regular file", path=path)
    if st.st_uid != 0:
        raise ConfigError(
            f"{what} is owned by uid {st.st_uid}, not root: chown root {path}", path=path
        )
    if mode & 0o022:
        kind = "world-writable" if mode & 0o002 else "group-writable"
        allowed = _TOKEN_BITS if token else ~0o022
        raise ConfigError(
            f"{what} is {kind} (mode {mode:04o}): chmod {_fix_mode(mode, allowed)} {path}",
            path=path,
        )
    if not token:
        return
    if mode & ~_TOKEN_BITS:
        raise ConfigError(
            f"{what} has mode {mode:04o}, must be 0640 or stricter: "
            f"chmod {_fix_mode(mode, _TOKEN_BITS)} {path}",
            path=path,
        )
    if mode & 0o040 and st.st_gid != 0 and st.st_gid != _hook_gid():
        raise ConfigError(
            f"{what} is readable by group {st.st_gid}, which is not {paths.HOOK_USER}: "
            f"chgrp {paths.HOOK_USER} {path}",
            path=path,
        )


def read_trusted(path: str, what: str, limit: int, *, token: bool = False) -> bytes:
    """The first ``limit`` bytes of ``path`` after ``open_trusted``'s checks."""
    fd = open_trusted(path, what, token=token)
    try:
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror or e}", path=path) from None
    finally:
        os.close(fd)


def check(path: str, what: str, *, token: bool = False) -> None:
    """Raise ConfigError unless ``path`` passes the trust rule (see the module docstring)."""
    os.close(open_trusted(path, what, token=token))
