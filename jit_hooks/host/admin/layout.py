"""Where the sshd/PAM wiring lives: one Layout, resolved under a root directory (tests, images)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from jit_hooks.errors import JitError
from jit_hooks.host import paths

DROPIN_NAME = "10-jit-hooks.conf"
SSHD = "/usr/sbin/sshd"


class WiringError(JitError):
    """Raised when the wiring can't be written, verified or removed (nothing is left changed)."""


@dataclass(frozen=True)
class Layout:
    """Where the wiring lives; everything under ``root`` unless given explicitly."""

    root: str = "/"
    sshd_config: str | None = None  # default <root>/etc/ssh/sshd_config
    pam_file: str | None = None  # default <root>/etc/pam.d/sshd
    host_config: str | None = None  # default <root>/etc/jit-hooks/jit-hooks.toml
    bin_dir: str = "/usr/bin"  # where sshd/PAM find the hooks (absolute, not under root)
    sshd: str = SSHD

    def under_root(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @property
    def sshd_config_path(self) -> str:
        return self.sshd_config or self.under_root("/etc/ssh/sshd_config")

    @property
    def dropin_path(self) -> str:
        return os.path.join(os.path.dirname(self.sshd_config_path), "sshd_config.d", DROPIN_NAME)

    @property
    def pam_path(self) -> str:
        return self.pam_file or self.under_root("/etc/pam.d/sshd")

    @property
    def host_config_path(self) -> str:
        return self.host_config or self.under_root(paths.CONFIG_PATH)

    def command(self, name: str) -> str:
        """A hook's command line; names the config file only when it isn't the default."""
        cmd = os.path.join(self.bin_dir, name)
        if self.host_config_path != paths.CONFIG_PATH:
            cmd += f" --config {self.host_config_path}"
        return cmd
