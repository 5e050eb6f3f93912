"""The marked jit-hooks block in sshd's PAM file: render, find, insert, remove (text only).

Where it goes and why is explained in wiring.py."""

from __future__ import annotations

import re

from jit_hooks.host.admin.layout import Layout, WiringError

PAM_BEGIN = "# BEGIN jit-hooks"
PAM_END = "# END jit-hooks"
# Written into the BEGIN line when enable had to end the file's last line first,
# so that disable can take exactly that newline back out.
_ADDED_NEWLINE = " (added the newline ending the line above)"


def render_pam_block(layout: Layout, break_glass: frozenset[str] | set[str]) -> str:
    """The marked block enable puts in sshd's PAM file (without a BEGIN suffix).

    The account hook also opens the session (``--open-session``): there is no
    session-open hook, so a login runs one hook process less. The close_session
    hook runs after the client has its answer (sshd's cleanup) and reports the end.
    The break-glass ``success=2`` / ``default=1`` jumps count lines of this block only:
    its account lines are contiguous wherever it is placed.
    """
    account = f"pam_exec.so quiet stdout {layout.command('jit-pam-account')} --open-session"
    closed = f"pam_exec.so quiet type=close_session {layout.command('jit-pam-session')}"
    lines = [
        f"{PAM_BEGIN}: written by `jit-hooks enable`, removed by `jit-hooks disable`",
    ]
    if break_glass:
        users = ":".join(sorted(break_glass))
        lines += [
            f"# Break-glass ({users}): the hooks log and report the use but cannot block it.",
            f"account [success=2 default=ignore] pam_succeed_if.so quiet user notin {users}",
            f"account optional {account}",
            "account [default=1] pam_permit.so",
            f"account required {account}",
        ]
    else:
        lines += [f"account required {account}"]
    lines += [f"session optional {closed}", PAM_END]
    return "\n".join(lines) + "\n"


_BLOCK_RE = re.compile(
    r"^" + re.escape(PAM_BEGIN) + r"(?P<begin>[^\n]*)\n(?:.*?\n)??" + re.escape(PAM_END) + r"\n",
    re.M | re.S,
)


def find_pam_block(text: str) -> re.Match | None:
    """The jit-hooks block in a PAM file, or None; WiringError if the markers are broken."""
    blocks = list(_BLOCK_RE.finditer(text))
    begins = len(re.findall(r"^" + re.escape(PAM_BEGIN), text, re.M))
    ends = len(re.findall(r"^" + re.escape(PAM_END) + r"$", text, re.M))
    if len(blocks) > 1 or begins != len(blocks) or ends != len(blocks):
        raise WiringError(
            f"{PAM_BEGIN!r}/{PAM_END!r} markers are unbalanced or repeated: fix by hand"
        )
    return blocks[0] if blocks else None


# The first line of the account or session stack: the block goes in front of it.
_STACK_LINE_RE = re.compile(
    r"^[ \t]*(?:-?(?:account|session)|@include[ \t]+common-(?:account|session)\S*)(?=[ \t]|$)",
    re.M | re.I,
)


def add_pam_block(text: str, block: str) -> str:
    """``text`` with ``block`` before its first account/session line (else at the end).

    An existing block is taken out first wherever it is (older versions appended it
    at the end), so enabling again moves it into place and never stacks.
    """
    text = remove_pam_block(text)
    first = _STACK_LINE_RE.search(text)
    if first:
        return text[: first.start()] + block + text[first.start() :]
    if text and not text.endswith("\n"):
        return text + "\n" + block.replace("\n", _ADDED_NEWLINE + "\n", 1)
    return text + block


def remove_pam_block(text: str) -> str:
    """``text`` without the jit-hooks block (and the newline enable added, if any)."""
    found = find_pam_block(text)
    if not found:
        return text
    start = found.start()
    if _ADDED_NEWLINE in found.group("begin") and text[:start].endswith("\n"):
        start -= 1
    return text[:start] + text[found.end() :]


def pam_block_body(text: str) -> str | None:
    """The block as enable would render it (marker suffix dropped), or None."""
    found = find_pam_block(text)
    return found.group(0).replace(_ADDED_NEWLINE, "", 1) if found else None
