"""The sshd_config.d drop-in `jit-hooks enable` writes (text only)."""

from __future__ import annotations

from jit_hooks.host import paths
from jit_hooks.host.admin.layout import Layout

# What sshd reads for break-glass accounts: Debian's default AuthorizedKeysFile.
BREAK_GLASS_KEYS_FILE = ".ssh/authorized_keys .ssh/authorized_keys2"
# Marks a drop-in written by `enable --allow-passwords` (status and enable read it back).
ALLOW_PASSWORDS_LINE = "# Passwords allowed (`jit-hooks enable --allow-passwords`)."


def render_dropin(
    layout: Layout, break_glass: frozenset[str] | set[str], *, allow_passwords: bool = False
) -> str:
    """The sshd_config.d drop-in enable writes."""
    lines = [
        "# Written by `jit-hooks enable`; `jit-hooks disable` removes it. Do not edit:",
        "# change /etc/jit-hooks/jit-hooks.toml and run `jit-hooks enable` again.",
        "# Keys come from the approval service, valid only while an approval is active.",
        f"AuthorizedKeysCommand {layout.command('jit-authorized-keys')} %u %f %t %k",
        f"AuthorizedKeysCommandUser {paths.HOOK_USER}",
        "# Nobody keeps standing keys: only break-glass accounts read their own file.",
        "AuthorizedKeysFile none",
        "# The PAM session hook reads the accepted key from SSH_AUTH_INFO_0.",
        "ExposeAuthInfo yes",
        "# The PAM account hook re-checks the approval for every login method.",
        "UsePAM yes",
    ]
    if allow_passwords:
        lines += [
            ALLOW_PASSWORDS_LINE,
            "# While anyone holds an approval for an account, its password lets anyone in.",
        ]
    else:
        lines += [
            "# Key-less logins off: the PAM account hook can only decide by the login",
            "# account, so while anyone holds an approval for it, its password would do.",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
        ]
    if break_glass:
        lines += [
            "# Break-glass accounts: keys from their own file, independent of the service",
            "# and of the hook command.",
            f"Match User {','.join(sorted(break_glass))}",
            f"    AuthorizedKeysFile {BREAK_GLASS_KEYS_FILE}",
            "    AuthorizedKeysCommand none",
        ]
    lines += [
        "# Repeated for every client: sshd applies the first value a matching Match block",
        "# sets, so an admin's Match block further down cannot turn these back on.",
        "Match all",
        f"    AuthorizedKeysCommand {layout.command('jit-authorized-keys')} %u %f %t %k",
        f"    AuthorizedKeysCommandUser {paths.HOOK_USER}",
        "    AuthorizedKeysFile none",
        "    ExposeAuthInfo yes",
    ]
    if not allow_passwords:
        lines += ["    PasswordAuthentication no", "    KbdInteractiveAuthentication no"]
    return "\n".join(lines) + "\n"


def dropin_allows_passwords(dropin: bytes) -> bool:
    """Whether a drop-in on disk was written by `enable --allow-passwords`."""
    return ALLOW_PASSWORDS_LINE.encode() in dropin.splitlines()
