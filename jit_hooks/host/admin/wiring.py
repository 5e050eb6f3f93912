"""sshd + PAM wiring of the hooks: render, write, verify with sshd, revert exactly.

`jit-hooks enable` writes two things and `disable` removes exactly them:

* the sshd drop-in ``<sshd_config dir>/sshd_config.d/10-jit-hooks.conf`` (Debian 12's
  sshd_config includes ``sshd_config.d/*.conf`` at its top, and the first value of a
  keyword wins, so the drop-in decides the keywords it sets);
* a marked block in sshd's PAM service file (``/etc/pam.d/sshd``), between
  ``# BEGIN jit-hooks`` and ``# END jit-hooks`` lines, inserted just before the
  file's first account or session line (``@include common-account`` /
  ``common-session`` included), or appended if it has none. sshd's PAM service name
  is fixed, and Debian's pam-auth-update only manages the common-* files shared by
  every service (su, sudo, login...), so this block is the smallest edit that
  touches sshd alone; removing it restores the file byte for byte.

  Why before, not after: Debian's session stack runs ``pam_env.so user_readenv=1``,
  which loads the login account's own ~/.pam_environment into the PAM environment.
  pam_exec hands a hook that environment first and its own PAM_* values after, so a
  hook running after pam_env could read PAM_TYPE / PAM_USER the user chose, and an
  SSH_AUTH_INFO_0 the user replaced (pam_env overwrites sshd's value: only running
  before pam_env protects it). The account line also has to precede common-account,
  whose ``[new_authtok_reqd=done]`` (expired password) would skip it. The hooks
  additionally take the last of duplicated PAM_* names (see pamenv.py).

Break-glass accounts are kept independent of jit-hooks: sshd reads their keys from
their own AuthorizedKeysFile, and in PAM the hooks run for them as ``optional``
(to log and report the use) so a broken hook, Python or service cannot lock them out.

Every path is resolved under a root directory (layout.py) so tests (and chroots)
never touch the machine's own sshd. The pieces: sshd_dropin.py and pamconf.py
(the text), filetx.py (write all or put all back), sshd_probe.py (what sshd says).
Stdlib only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from jit_hooks.host.admin.filetx import (
    Change,
    FileState,
    apply_changes,
    decode,
    real,
    revert_changes,
)
from jit_hooks.host.admin.layout import Layout, WiringError
from jit_hooks.host.admin.pamconf import (
    add_pam_block,
    find_pam_block,
    remove_pam_block,
    render_pam_block,
)
from jit_hooks.host.admin.sshd_dropin import dropin_allows_passwords, render_dropin
from jit_hooks.host.admin.sshd_probe import sshd_test, verify_effective


def plan_enable(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> list[Change]:
    """The file changes that make the wiring current (empty-effect changes if it already is)."""
    dropin_dir = os.path.dirname(layout.dropin_path)
    if not os.path.isdir(dropin_dir):
        raise WiringError(f"{dropin_dir} does not exist: this sshd_config has no drop-in directory")
    pam = FileState.read(real(layout.pam_path))
    if pam.data is None:
        raise WiringError(f"{layout.pam_path}: missing (is openssh-server installed?)")
    text = decode(pam)
    outside = remove_pam_block(text)
    if "jit-pam-account" in outside or "jit-pam-session" in outside:
        raise WiringError(
            f"{layout.pam_path}: already runs jit-pam-* outside the jit-hooks block: "
            "remove those lines by hand first"
        )
    new_pam = add_pam_block(text, render_pam_block(layout, break_glass))
    return [
        Change(
            FileState.read(layout.dropin_path),
            render_dropin(layout, break_glass, allow_passwords=allow_passwords).encode(),
        ),
        Change(pam, new_pam.encode()),
    ]


def plan_disable(layout: Layout) -> list[Change]:
    """The file changes that remove the wiring (none if it is absent)."""
    changes = []
    dropin = FileState.read(layout.dropin_path)
    if dropin.data is not None:
        changes.append(Change(dropin, None))
    pam = FileState.read(real(layout.pam_path))
    if pam.data is not None:
        changes.append(Change(pam, remove_pam_block(decode(pam)).encode()))
    return [c for c in changes if c.changes_anything]


@dataclass
class WiringStatus:
    dropin: str  # "absent" | "current" | "different"
    pam: str  # "absent" | "current" | "different"
    problems: list[str] = field(default_factory=list)
    allow_passwords: bool = False  # the drop-in was written by `enable --allow-passwords`

    @property
    def state(self) -> str:
        if self.dropin == self.pam == "absent":
            return "disabled"
        if self.dropin == self.pam == "current":
            return "enabled"
        if "absent" in (self.dropin, self.pam):
            return "partial"
        return "outdated"


def wiring_status(layout: Layout, break_glass: frozenset[str] | set[str]) -> WiringStatus:
    """Compare the files with what enable would write now."""
    dropin = FileState.read(layout.dropin_path).data
    allow = dropin is not None and dropin_allows_passwords(dropin)
    if dropin is None:
        d = "absent"
    else:
        rendered = render_dropin(layout, break_glass, allow_passwords=allow).encode()
        d = "current" if dropin == rendered else "different"
    pam_text = decode(FileState.read(real(layout.pam_path)))
    if find_pam_block(pam_text) is None:
        p = "absent"
    else:
        # Current means the same block in the same place (a block an older version
        # appended at the end is "different": enable moves it).
        wanted = add_pam_block(pam_text, render_pam_block(layout, break_glass))
        p = "current" if wanted == pam_text else "different"
    return WiringStatus(d, p, allow_passwords=allow)


def enable(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> bool:
    """Write the wiring, check it with sshd, roll back on any problem.

    Returns False if it was already current (nothing written). The caller checks the
    service and the break-glass list first; this only deals with files and sshd.
    """
    changes = plan_enable(layout, break_glass, allow_passwords=allow_passwords)
    if not any(c.changes_anything for c in changes):
        problem = sshd_test(layout)
        if problem:
            raise WiringError(f"sshd -t rejects the configuration: {problem}")
        return False
    apply_changes(changes)
    try:
        problem = sshd_test(layout)
        if problem:
            raise WiringError(f"sshd -t rejects the result, rolled back: {problem}")
        problems = verify_effective(layout, break_glass, allow_passwords=allow_passwords)
        if problems:
            raise WiringError(f"rolled back: {problems[0]}")
    except BaseException:
        revert_changes(changes)
        raise
    return True


def disable(layout: Layout) -> bool:
    """Remove the wiring; returns False if there was none. Checks sshd afterwards."""
    changes = plan_disable(layout)
    if not changes:
        return False
    apply_changes(changes)
    if not os.path.exists(layout.sshd):
        return True  # sshd itself is gone (openssh-server removed): nothing to check
    problem = sshd_test(layout)
    if problem:
        raise WiringError(
            f"wiring removed, but sshd -t rejects the remaining configuration: {problem}"
        )
    return True
