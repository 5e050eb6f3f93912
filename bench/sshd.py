"""The sandboxed sshd of the e2e tests (jit_hooks/testing/sshd.py), in two benchmark variants.

Both run Debian's full /etc/pam.d/sshd stack (read from this machine, copied into
the sandbox's own PAM service file, never edited), so a ratio is what a real
host sees; the e2e sandbox's own stack is a few lines only.

* ``HookedSshd``: the tests' sandbox (AKC + PAM account hook opening the session +
  close_session hook, run by /usr/bin/python3 -IS from a root-owned copy of the
  package), its hook block put into Debian's stack by the wiring code
  (pamconf.add_pam_block, as `jit-hooks enable` does); ``legacy_session``: the
  wiring before --open-session (a session-open hook, 4 hook processes a login);
  plus ``MaxStartups`` raised for the login storm when asked.
* ``StaticSshd``: the same binary, config and PAM stack without the jit-hooks lines:
  keys come from a static ~/.ssh/authorized_keys file (the baseline).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jit_hooks.host.admin import pamconf
from jit_hooks.testing.sshd import SshdSandbox

DEBIAN_PAM = Path("/etc/pam.d/sshd")


def debian_pam_stack(label: str) -> str:
    """This machine's /etc/pam.d/sshd (Debian's, as openssh-server ships it), read only."""
    text = DEBIAN_PAM.read_text()
    if "@include common-account" not in text or pamconf.PAM_BEGIN in text:
        raise RuntimeError(f"{DEBIAN_PAM} is not Debian's stock sshd PAM file")
    return f"# {label} (copy of {DEBIAN_PAM}, removed at teardown)\n" + text


class HookedSshd(SshdSandbox):
    """The e2e sandbox on Debian's PAM stack; ``max_startups`` (sshd's default is
    10:30:100) for the storm; ``legacy_session``: a session-open hook (see above)."""

    def __init__(
        self,
        *,
        max_startups: str | None = None,
        legacy_session: bool = False,
        **kw,  # noqa: ANN003
    ) -> None:
        self.max_startups = max_startups
        self.legacy_session = legacy_session
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

    def _write_pam_file(self, *, legacy_session: bool | None = None) -> None:
        if legacy_session is None:
            legacy_session = self.legacy_session
        block = self.pam_block(legacy_session=legacy_session)
        base = debian_pam_stack(f"jit-hooks bench {self.root}")
        self.pam_file.write_text(pamconf.add_pam_block(base, block))

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

    def _write_pam_file(self, *, legacy_session: bool | None = None) -> None:
        self.pam_file.write_text(debian_pam_stack(f"jit-hooks bench baseline {self.root}"))
