"""The PAM_* values pam_exec hands a hook, safe from names the login user planted.

pam_exec builds a hook's environment from the PAM environment (pam_getenvlist)
and then appends its own PAM_SERVICE, PAM_USER, PAM_TTY, PAM_RHOST, PAM_RUSER and
PAM_TYPE. The PAM environment can hold names the login user chose: Debian's
sshd session stack runs ``pam_env.so user_readenv=1``, which loads the account's
~/.pam_environment (e.g. ``PAM_TYPE DEFAULT=close_session``). When a name appears
twice, CPython's os.environ keeps the FIRST one, the user's; pam_exec's own value
is the LAST. So a duplicated name is read from the process's initial environment,
/proc/self/environ, last occurrence winning. A name that appears once is read from
os.environ (same value; lets unit tests set it).

This protects only what pam_exec appends. SSH_AUTH_INFO_0 is not one of them:
pam_env replaces sshd's value in the PAM environment itself, so only running
before pam_env protects it: `jit-hooks enable` puts the hooks ahead of the
account/session stacks (see wiring.py). Stdlib only.
"""

from __future__ import annotations

import os

from jit_hooks.errors import JitError

ENVIRON = "/proc/self/environ"


def initial_environ(path: str = ENVIRON) -> list[tuple[str, str]]:
    """Every NAME=value of the environment the process started with, in order."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        # Fail closed: without it a duplicated name can't be told apart.
        raise JitError(f"cannot read {path}: {e.strerror}") from None
    return parse_environ(raw)


def parse_environ(raw: bytes) -> list[tuple[str, str]]:
    """NAME=value entries of a /proc/PID/environ image (NUL-separated), in order."""
    out = []
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            out.append((os.fsdecode(name), os.fsdecode(value)))
    return out


def pam_items(*names: str) -> dict[str, str | None]:
    """``names`` as pam_exec set them: the last of duplicates, else os.environ (None: unset)."""
    seen: dict[str, list[str]] = {}
    for name, value in initial_environ():
        if name in names:
            seen.setdefault(name, []).append(value)
    out: dict[str, str | None] = {}
    for name in names:
        values = seen.get(name, [])
        out[name] = values[-1] if len(values) > 1 else os.environ.get(name)
    return out


def last_values(entries: list[tuple[str, str]], names: tuple[str, ...]) -> dict[str, str | None]:
    """``names`` from forwarded entries (the resident helper): the last of duplicates wins.

    Same values as ``pam_items`` in the hook process: a name set once is what its
    os.environ held; of a duplicate, pam_exec's own value is the last.
    """
    out: dict[str, str | None] = dict.fromkeys(names)
    for name, value in entries:
        if name in out:
            out[name] = value
    return out


def first_value(entries: list[tuple[str, str]], name: str) -> str | None:
    """``name`` as the hook process's os.environ holds it: CPython keeps the FIRST duplicate."""
    for key, value in entries:
        if key == name:
            return value
    return None
