"""The one place that reads /proc: process stat fields, exe, cmdline, listening unix sockets.

Used on the login path (connection ids in connection.py, jit-hooksd's peer check)
and by host administration (enforce, status): stdlib only, cheap to import.
Every reader takes ``proc`` so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
from typing import NamedTuple

PROC = "/proc"


class ProcStat(NamedTuple):
    ppid: int
    tty_nr: int
    start: str  # clock ticks since boot (field 22), as in a connection id
    state: str = "R"  # "Z": a zombie, already dead


def _stat_fields(pid: int, proc: str) -> list[str]:
    """Fields 3.. of /proc/PID/stat (state first); OSError / ValueError if unreadable."""
    with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
        data = f.read()
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    return data[data.rindex(")") + 2 :].split()


def stat(pid: int, proc: str = PROC) -> ProcStat | None:
    """Parent, controlling tty, start time and state of ``pid``; None if there is none."""
    try:
        fields = _stat_fields(pid, proc)
        return ProcStat(
            ppid=int(fields[1]), tty_nr=int(fields[4]), start=fields[19], state=fields[0]
        )
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int, proc: str = PROC) -> str:
    """``pid``'s start time in clock ticks since boot; OSError/ValueError if unreadable."""
    fields = _stat_fields(pid, proc)
    if len(fields) < 20:
        raise ValueError(f"unexpected {proc}/{pid}/stat format")
    return fields[19]  # field 22 of proc(5), counting from 1 with pid and comm


def parent_pid(pid: int, proc: str = PROC) -> int:
    """Field 4 of /proc/PID/stat; OSError/ValueError if unreadable."""
    return int(_stat_fields(pid, proc)[1])


def exe_name(pid: int, proc: str = PROC) -> str | None:
    """Base name of ``pid``'s executable (its exe link, not its changeable name); None if hidden."""
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None
    return os.path.basename(exe.removesuffix(" (deleted)"))  # " (deleted)": after an upgrade


def comm(pid: int, proc: str = PROC) -> str | None:
    """``pid``'s command name (changeable by the process); None if there is no such process."""
    try:
        with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def cmdline(pid: int, proc: str = PROC) -> bytes:
    """The process title (e.g. sshd's ``sshd: alice [priv]``); b"" if unreadable."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            return f.read(4096)
    except OSError:
        return b""


def children_map(proc: str = PROC) -> dict[int, list[tuple[int, ProcStat]]]:
    """parent pid -> [(pid, stat)] of every live process (one pass over /proc)."""
    children: dict[int, list[tuple[int, ProcStat]]] = {}
    for name in os.listdir(proc):
        if name.isdigit():
            st = stat(int(name), proc)
            if st is not None:
                children.setdefault(st.ppid, []).append((int(name), st))
    return children


# /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; __SO_ACCEPTCON in Flags
# marks a listening socket.
_SO_ACCEPTCON = 0x10000


def unix_listening(path: str, proc: str = PROC) -> bool | None:
    """Whether a stream socket listens at ``path`` (None: /proc/net/unix unreadable)."""
    try:
        with open(f"{proc}/net/unix", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == path and fields[4] == "0001":
            if int(fields[3], 16) & _SO_ACCEPTCON:
                return True
    return False
