"""CPU seconds of process trees, from /proc/PID/stat (utime, stime, cutime, cstime)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, list[str]] | None:
    """(parent pid, the fields after the command name), or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or ')'.
    rest = raw.rsplit(")", 1)[1].split()
    return int(rest[1]), rest


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(roots: list[int], *, exclude: frozenset[int] = frozenset()) -> float:
    """User + system CPU of the trees under ``roots`` so far, children that exited included.

    Each live process adds its own time and that of the children it has reaped
    (cutime, cstime): a PostgreSQL backend that ended during a round still
    counts, through its postmaster. ``exclude``: live processes to leave out
    (the lock sampler's own backend), with whatever they reaped.
    """
    total = 0
    for root in roots:
        for pid in descendants(root):
            if pid in exclude:
                continue
            st = _stat(pid)
            if st is None:
                continue
            # Fields 14-17 of proc(5), counted from 1 with pid and comm: here 11-14.
            utime, stime, cutime, cstime = (int(x) for x in st[1][11:15])
            total += utime + stime + cutime + cstime
    return total / _TICK
