"""Fixtures for the packaging tests: a throw-away sshd root tree, the hook user, a service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from jit_hooks.testing.sshd import HOOK_USER, ensure_hook_user, free_port

REPO = Path(__file__).resolve().parents[2]
# The hook wrappers as the package installs them; when the .deb is installed
# (JIT_HOOKS_INSTALLED=1) the tests use the real /usr/bin ones instead.
INSTALLED = os.environ.get("JIT_HOOKS_INSTALLED") == "1"
BIN_DIR = "/usr/bin" if INSTALLED else str(REPO / "packaging/host/usr/bin")
# Root-owned 0755 parent of the throw-away roots (left in place, empty, after the tests).
PACKAGING_PARENT = Path("/var/lib/jit-hooks-test-pkg")


needs_analyze = pytest.mark.skipif(
    not shutil.which("systemd-analyze"), reason="systemd-analyze (package systemd) not installed"
)


def verify_units(*units: Path | str, mention: str) -> None:
    """`systemd-analyze verify` passes ``units``, with no complaint naming ``mention``."""
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if mention in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def exposure(unit: Path) -> float:
    """systemd's offline rating of a service unit's exposure (0 locked down .. 10)."""
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def jit_hooks_cmd() -> list[str]:
    """The admin command under test: the installed one, or the source tree's."""
    if INSTALLED:
        return ["/usr/bin/jit-hooks"]
    return [sys.executable, "-m", "jit_hooks.cli.admin"]


@dataclass
class Root:
    """A directory tree shaped like a Debian host's /etc, with its own sshd config."""

    path: Path
    port: int

    @property
    def sshd_config(self) -> Path:
        return self.path / "etc/ssh/sshd_config"

    @property
    def dropin(self) -> Path:
        return self.path / "etc/ssh/sshd_config.d/10-jit-hooks.conf"

    @property
    def pam(self) -> Path:
        return self.path / "etc/pam.d/sshd"

    @property
    def config(self) -> Path:
        return self.path / "etc/jit-hooks/jit-hooks.toml"

    @property
    def token(self) -> Path:
        return self.path / "etc/jit-hooks/host-token"

    def run(self, *args: str, input: str | None = None, bin_dir: str = BIN_DIR):
        """`jit-hooks SUBCOMMAND --root ROOT ... ARGS`; returns the CompletedProcess."""
        sub, rest = args[0], args[1:]
        cmd = [*jit_hooks_cmd(), sub, "--root", str(self.path), "--bin-dir", bin_dir, *rest]
        return subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60)

    def sshd_T(self, client: str) -> dict[str, str]:
        """Real `sshd -T` of this root's config for ``client`` ("user=..,host=..,addr=..")."""
        r = subprocess.run(
            ["/usr/sbin/sshd", "-T", "-f", str(self.sshd_config), "-C", client],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Every file under etc/: bytes and mode, to prove nothing changed."""
        out = {}
        for p in sorted((self.path / "etc").rglob("*")):
            if p.is_file():
                out[str(p.relative_to(self.path))] = (p.read_bytes(), p.stat().st_mode)
        return out


def write_sshd_root(path: Path, port: int) -> Root:
    """sshd_config like Debian 12's (drop-ins included first), bound to 127.0.0.1:port."""
    (path / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (path / "etc/pam.d").mkdir(parents=True)
    (path / "etc/jit-hooks").mkdir(parents=True)
    (path / "run").mkdir()
    key = path / "etc/ssh/ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    (path / "etc/ssh/sshd_config").write_text(
        f"Include {path}/etc/ssh/sshd_config.d/*.conf\n"
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {key}\n"
        f"PidFile {path}/run/sshd.pid\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM yes\n"
        "PrintMotd no\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    # Debian's own PAM file for sshd, as the machine has it (read only, copied).
    shutil.copy("/etc/pam.d/sshd", path / "etc/pam.d/sshd")
    return Root(path=path, port=port)


def write_host_config(root: Root, url: str, token: str, break_glass: list[str]) -> None:
    accounts = ", ".join(f'"{a}"' for a in break_glass)
    root.config.write_text(
        "[service]\n"
        f'urls = ["{url}"]\n'
        f'token_file = "{root.token}"\n'
        "connect_timeout = 2.0\n"
        "total_timeout = 5.0\n"
        "[break_glass]\n"
        f"accounts = [{accounts}]\n"
        "[state]\n"
        f'dir = "{root.path}/run/jit-hooks"\n'
        f'spool_dir = "{root.path}/var/spool/jit-hooks"\n'
    )
    root.token.write_text(token + "\n")
    os.chown(root.token, 0, _hook_gid())
    root.token.chmod(0o640)


def _hook_gid() -> int:
    import grp

    return grp.getgrnam(HOOK_USER).gr_gid


@pytest.fixture(scope="session")
def hook_user():
    """The jit-hooks system user the package creates (created here if missing, then removed)."""
    import pwd

    try:
        pwd.getpwnam(HOOK_USER)
        created = False
    except KeyError:
        # What postinst's `adduser --system --group` makes (the e2e sandbox's user; its
        # group of the same name comes from Debian's USERGROUPS_ENAB yes).
        ensure_hook_user()
        created = True
    yield HOOK_USER
    if created:
        subprocess.run(["userdel", HOOK_USER], timeout=60, capture_output=True)
        subprocess.run(["groupdel", HOOK_USER], timeout=60, capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def privsep_dir():
    # `sshd -t` insists on its privilege separation directory, which the machine
    # only has once its own sshd ran; openssh's tmpfiles.d would create the same.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


@pytest.fixture
def sshd_root() -> Root:
    # Outside pytest's 0700 tmp dir: the hook user must be able to read the
    # root's config and token, as it must on a real host (enable checks that).
    # Not under /tmp either: the hooks refuse a config below a world-writable
    # directory (sshd's StrictModes rule), sticky bit or not.
    PACKAGING_PARENT.mkdir(mode=0o755, exist_ok=True)
    PACKAGING_PARENT.chmod(0o755)
    base = Path(tempfile.mkdtemp(prefix="jitpkg-", dir=PACKAGING_PARENT))
    base.chmod(0o755)
    try:
        yield write_sshd_root(base / "root", free_port())
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def host_service(service):
    """(service, host token) of a real service with host web1 registered."""
    svc = service
    token = svc.admin("host", "add", "web1").strip()
    return svc, token


@pytest.fixture
def enabled_root(sshd_root, host_service, hook_user) -> Root:
    """A root with config + token for a live service and break-glass account root."""
    svc, token = host_service
    write_host_config(sshd_root, svc.url, token, ["root"])
    return sshd_root
