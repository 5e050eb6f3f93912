"""The hosts' one atomic file write: readers see the old file or the new one, never half.

Used on the login path (connection records, break-glass spool) and by host
administration (sshd/PAM wiring, enroll): stdlib only, cheap to import.
"""

from __future__ import annotations

import _thread
import os


def write_atomic(
    path: str,
    data: bytes,
    *,
    mode: int = 0o600,
    uid: int | None = None,
    gid: int | None = None,
    durable: bool = True,
    dir_fd: int | None = None,
) -> None:
    """Replace ``path`` with ``data`` through a temp file renamed over it.

    The temp file is created with O_EXCL|O_NOFOLLOW (a planted link or file makes
    this fail instead of writing through it) under a name unique to this process
    and thread (jit-hooksd writes from several threads). ``uid``/``gid``: owner
    to give it (both or neither). ``durable``: fsync the file and its directory
    (skip it for files on tmpfs that die with the boot anyway). ``dir_fd``:
    ``path`` is relative to that open directory.
    """
    tmp = f"{path}.{os.getpid()}.{_thread.get_ident()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if uid is not None and gid is not None:
                os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if durable:
        _fsync_dir(os.path.dirname(path) or ".", dir_fd)


def _fsync_dir(path: str, dir_fd: int | None) -> None:
    # The rename itself must survive a crash too.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
