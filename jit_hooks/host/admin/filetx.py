"""A small file transaction: write several files, put every one back exactly on failure."""

from __future__ import annotations

import os
from dataclasses import dataclass

from jit_hooks.host.admin.layout import WiringError
from jit_hooks.host.atomic import write_atomic


@dataclass
class FileState:
    """A file's bytes and metadata before a change, so it can be put back exactly."""

    path: str
    data: bytes | None  # None: the file did not exist
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    times: tuple[int, int] | None = None

    @classmethod
    def read(cls, path: str) -> FileState:
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return cls(path, None)
        except OSError as e:
            raise WiringError(f"{path}: cannot read: {e.strerror}") from None
        return cls(
            path, data, st.st_mode & 0o7777, st.st_uid, st.st_gid, (st.st_atime_ns, st.st_mtime_ns)
        )


@dataclass
class Change:
    before: FileState
    after: bytes | None  # None: remove the file
    mode: int = 0o644

    @property
    def changes_anything(self) -> bool:
        return self.before.data != self.after


def write_file(path: str, data: bytes, *, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Replace ``path`` atomically with ``data``, ``mode`` and (as root) owner ``uid:gid``."""
    if os.geteuid() == 0:
        write_atomic(path, data, mode=mode, uid=uid, gid=gid)
    else:
        write_atomic(path, data, mode=mode)


def apply_changes(changes: list[Change]) -> None:
    """Write every change; on any failure put back what was already written."""
    done: list[Change] = []
    try:
        for change in changes:
            if not change.changes_anything:
                continue
            b = change.before
            if change.after is None:
                os.unlink(b.path)
            elif b.data is None:
                write_file(b.path, change.after, mode=change.mode)
            else:
                write_file(b.path, change.after, mode=b.mode, uid=b.uid, gid=b.gid)
            done.append(change)
    except OSError as e:
        revert_changes(done)
        raise WiringError(f"{e.filename or 'file'}: cannot write: {e.strerror}") from None


def revert_changes(changes: list[Change]) -> None:
    """Put every file of ``changes`` back to its ``before`` bytes, mode, owner and times."""
    for change in reversed(changes):
        b = change.before
        if b.data is None:
            try:
                os.unlink(b.path)
            except FileNotFoundError:
                pass
            continue
        write_file(b.path, b.data, mode=b.mode, uid=b.uid, gid=b.gid)
        if b.times:
            os.utime(b.path, ns=b.times)


def real(path: str) -> str:
    # Edit the file a symlink points at rather than replacing the link.
    return os.path.realpath(path)


def decode(state: FileState) -> str:
    try:
        return state.data.decode("utf-8") if state.data is not None else ""
    except UnicodeDecodeError:
        raise WiringError(f"{state.path}: not UTF-8 text") from None
