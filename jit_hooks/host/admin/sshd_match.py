"""Find admin `Match` blocks that would hand a client back what the drop-in takes away.

`sshd -T` answers for one made-up connection only, so a ``Match User/Address/Group``
block can turn passwords or standing keys back on for the clients it matches while
the probe looks fine. Two defences:

* the drop-in ends with a ``Match all`` block repeating the keywords it guards
  (sshd_dropin.MATCH_ALL_KEYWORDS): in sshd's Match pass the first active value
  wins, so every Match block read after the drop-in loses;
* this scan reads the config the way sshd does (the main file, each ``Include`` glob
  expanded in sorted order, depth-first) and reports every Match block that sets a
  guarded keyword and is read *before* the drop-in (it would still win), and every
  Match block anywhere setting a keyword the drop-in does not repeat but which opens
  another way in without the approval (certificates, host-based logins, principals).

A Match block in an included file ends with that file (sshd restores the including
file's state). Relative Include paths are taken relative to the main file's
directory (/etc/ssh on a real host, as in sshd). Stdlib only.
"""

from __future__ import annotations

import glob
import os
import re
import shlex

# Keywords the drop-in repeats in its closing ``Match all`` block: a Match block
# read after the drop-in cannot change them; one read before it can.
REPEATED = frozenset(
    {
        "authorizedkeyscommand",
        "authorizedkeyscommanduser",
        "authorizedkeysfile",
        "exposeauthinfo",
        "passwordauthentication",
        "kbdinteractiveauthentication",
        "challengeresponseauthentication",  # sshd's old name for the line above
    }
)
# Keywords the drop-in leaves alone (an admin may use them globally) but which, set in
# a Match block, let the matched clients in by a certificate or host key that the
# AuthorizedKeysCommand never sees: refused wherever the block is.
ELSEWHERE = frozenset(
    {
        "trustedusercakeys",
        "authorizedprincipalsfile",
        "authorizedprincipalscommand",
        "authorizedprincipalscommanduser",
        "hostbasedauthentication",
    }
)
GUARDED = REPEATED | ELSEWHERE
# sshd refuses deeper nesting as well; this also stops an Include loop.
MAX_DEPTH = 16


# Values that only take a way in away: a Match block setting them is harmless.
CLOSING = frozenset({"no", "none"})


def _words(line: str) -> list[str]:
    """Keyword and arguments of a config line (sshd also accepts ``Keyword=value``)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    parts = re.split(r"[\s=]+", line, maxsplit=1)
    rest = parts[1] if len(parts) > 1 else ""
    try:
        args = shlex.split(rest, comments=True)
    except ValueError:
        args = rest.split()
    return [parts[0], *args]


def _include_paths(pattern: str, base: str) -> list[str]:
    path = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
    if glob.has_magic(path):
        return sorted(glob.glob(path))
    return [path]


def scan(main: str, dropin: str) -> list[str]:
    """Problems (``file:line: ...``) with Match blocks in ``main`` and what it includes."""
    base = os.path.dirname(main)
    problems: list[str] = []
    seen_dropin = False
    dropin_real = os.path.realpath(dropin)

    def walk(path: str, in_match: bool, depth: int) -> None:
        nonlocal seen_dropin
        if depth > MAX_DEPTH:
            problems.append(f"{path}: Include nested deeper than {MAX_DEPTH}")
            return
        if os.path.realpath(path) == dropin_real:
            seen_dropin = True
            return
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return  # sshd skips a missing Include target too
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror}")
            return
        for n, raw in enumerate(lines, 1):
            words = _words(raw)
            if not words:
                continue
            key = words[0].lower()
            if key == "match":
                in_match = True
            elif key == "include":
                for pattern in words[1:]:
                    for inc in _include_paths(pattern, base):
                        walk(inc, in_match, depth + 1)
            elif in_match and key in GUARDED and not set(map(str.lower, words[1:])) <= CLOSING:
                where = f"{path}:{n}"
                setting = " ".join(words)
                if key in ELSEWHERE:
                    problems.append(
                        f"{where}: a Match block sets {setting!r}, which lets the matched "
                        "clients in without the approval service"
                    )
                elif not seen_dropin:
                    problems.append(
                        f"{where}: a Match block read before the jit-hooks drop-in sets "
                        f"{setting!r}, which would win over jit-hooks for the matched clients"
                    )

    walk(main, False, 0)
    return problems
