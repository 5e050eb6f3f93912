"""The sandboxed sshd of the e2e tests (jit_hooks/testing/sshd.py), in two benchmark variants.

* ``HookedSshd``: the tests' sandbox as is (AKC + PAM account + PAM session
  hooks, run by /usr/bin/python3 -I from a root-owned copy of the package),
  plus ``MaxStartups`` raised for the login storm when asked.
* ``StaticSshd``: the same binary, config and PAM stack with the jit-hooks lines
  taken out: keys come from a static ~/.ssh/authorized_keys file (the baseline).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jit_hooks.testing.sshd import SshdSandbox


class HookedSshd(SshdSandbox):
    """The e2e sandbox; ``max_startups`` (sshd's default is 10:30:100) for the storm."""

    def __init__(self, *, max_startups: str | None = None, **kw) -> None:  # noqa: ANN003
        self.max_startups = max_startups
        super().__init__(password_auth=False, **kw)

    def configure(self, urls: list[str], token: str, *, ca_file: Path | None = None, **kw) -> None:  # noqa: ANN003
        """The sandbox's configure(), plus the CA of an HTTPS service (readable by the AKC user)."""
        super().configure(urls, token, **kw)
        if ca_file is not None:
            dst = self.root / "etc" / "ca.pem"
            shutil.copyfile(ca_file, dst)
            os.chmod(dst, 0o644)
            text = self.config_path.read_text()
            self.config_path.write_text(
                text.replace("[service]\n", f'[service]\nca_file = "{dst}"\n', 1)
            )

    def use_world(self, world) -> None:  # noqa: ANN001
        """Point the hooks at the bench world's service (its URL, host token and CA)."""
        self.configure(
            [world.svc.url],
            world.host_token,
            ca_file=world.ca_file,
            connect_timeout=2.0,
            total_timeout=5.0,
        )

    def _write_sshd_config(self) -> None:
        super()._write_sshd_config()
        if self.max_startups:
            path = self.root / "sshd_config"
            # Global options must come before any Match block: put it first.
            path.write_text(f"MaxStartups {self.max_startups}\n" + path.read_text())


class StaticSshd(SshdSandbox):
    """Baseline: no hooks at all, ~/.ssh/authorized_keys, pam_permit where the hooks were."""

    def __init__(self, **kw) -> None:  # noqa: ANN003
        super().__init__(password_auth=False, **kw)

    def _write_sshd_config(self) -> None:
        super()._write_sshd_config()
        path = self.root / "sshd_config"
        lines = []
        for line in path.read_text().splitlines():
            if line.startswith("AuthorizedKeysCommand"):
                continue
            if line == "AuthorizedKeysFile none":
                line = "AuthorizedKeysFile .ssh/authorized_keys"
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")

    def _write_pam_file(self) -> None:
        self.pam_file.write_text(
            f"# jit-hooks bench baseline {self.root} (removed at teardown)\n"
            "auth     required pam_unix.so\n"
            "account  required pam_permit.so\n"
            "session  required pam_permit.so\n"
            "password required pam_deny.so\n"
        )
