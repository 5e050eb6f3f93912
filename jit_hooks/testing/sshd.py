"""A real, sandboxed sshd with the jit-hooks wired in: for e2e tests, the demo and benchmarks.

Never touches the machine's sshd, /etc/ssh or port 22:

* the hooks are installed into a fresh root-owned 0755 directory under
  /var/lib/jit-hooks-test/ (sshd refuses an AuthorizedKeysCommand under a
  non-root-owned or group/world-writable directory, so not under /tmp) and run
  with ``/usr/bin/python3 -IS`` like the packaged wrappers; with JIT_HOOKS_INSTALLED=1 the installed
  /usr/bin/jit-* commands of the Debian package are used instead;
* sshd runs as a symlink named ``sshd-jit-<random>``, so PAM uses our own
  /etc/pam.d/sshd-jit-<random> (removed at close) and not /etc/pam.d/sshd;
* its own config, host key, pid file and log, 127.0.0.1 on a free high port;
* the hooks log to a syslog socket in the sandbox that the tests read;
* the hook wrappers are thin clients of jit-hooksd (like the packaged ones) on
  ``<sandbox>/run/hooksd.sock``: with ``hooksd=True`` a real helper process
  (``jit_hooks/testing/hooksd.py``, as the AKC user) serves that socket, started
  before sshd and stopped in ``close()``; without it nothing listens there and
  the wrappers fall back to running the hook in-process (the hooks as they ran
  before the helper existed).

If the PAM file were missing PAM would silently fall back to /etc/pam.d/other
and no hook would run: callers must assert the hooks' log lines.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jit_hooks import sshkeys
from jit_hooks.host.admin import pamconf
from jit_hooks.testing.hooksd import HooksDaemon, wrapper_text
from jit_hooks.testing.syslog_sink import SyslogSink

SANDBOX_PARENT = Path("/var/lib/jit-hooks-test")
PAM_DIR = Path("/etc/pam.d")
SSHD = "/usr/sbin/sshd"
HOOK_USER = "jit-hooks"
HOOKS = {
    "jit-authorized-keys": "authorized-keys",
    "jit-pam-account": "pam-account",
    "jit-pam-session": "pam-session",
}
INSTALLED_LIB = "/usr/lib/python3/dist-packages"
REPO = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed() -> bool:
    """Test the Debian package's /usr/bin/jit-* instead of a copy of this checkout."""
    return os.environ.get("JIT_HOOKS_INSTALLED") == "1"


def ensure_hook_user() -> None:
    """The AuthorizedKeysCommandUser; the Debian package creates the same system user."""
    try:
        pwd.getpwnam(HOOK_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                HOOK_USER,
            ],
            check=True,
            capture_output=True,
        )


@dataclass
class Person:
    """An ssh key pair held by someone (private key file + parsed public key)."""

    name: str
    key_path: Path
    public: sshkeys.PublicKey

    @property
    def public_line(self) -> str:
        return f"{self.public.key_type} {self.public.blob} {self.name}"


class SshdSandbox:
    """See the module docstring. ``close()`` always cleans up everything it created."""

    def __init__(
        self,
        *,
        break_glass: tuple[str, ...] = (),  # roles: accounts jt<tag><role>
        password_auth: bool = True,
        tz: str = "JIT-5",  # POSIX TZ string (5 h east of UTC): works without tzdata
        hooksd: bool = False,  # serve the hooks from a real jit-hooksd (see the docstring)
    ):
        if os.geteuid() != 0:
            raise RuntimeError("the sshd sandbox needs root (sshd, PAM, useradd)")
        self.tag = secrets.token_hex(4)
        self.name = f"sshd-jit-{self.tag}"
        self.port = free_port()
        self.users: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.pam_file = PAM_DIR / self.name
        self.password_auth = password_auth
        # sshd reads expiry-time="...Z" as UTC only if it honours the Z; running it
        # in a zone 5 h east of UTC makes any local-time misreading refuse the key.
        self.tz = tz
        self.hooksd = hooksd
        self.daemon: HooksDaemon | None = None
        SANDBOX_PARENT.mkdir(mode=0o755, exist_ok=True)
        self.root = SANDBOX_PARENT / self.tag
        self.root.mkdir(mode=0o755)
        # Explicit modes, whatever the umask: sshd wants root-owned, not group/world
        # writable; the AKC user must be able to traverse and read.
        os.chmod(SANDBOX_PARENT, 0o755)
        os.chmod(self.root, 0o755)
        try:
            self._build(break_glass)
        except BaseException:
            self.close()
            raise

    # -- paths ----------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / "etc" / "jit-hooks.toml"

    @property
    def token_path(self) -> Path:
        return self.root / "etc" / "host-token"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def sshd_log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def hooksd_socket(self) -> Path:
        return self.root / "run" / "hooksd.sock"

    @property
    def hooksd_log(self) -> Path:
        return self.root / "hooksd.log"

    @property
    def bin_dir(self) -> Path:
        """Where sshd's hook commands are (``jit-hooks enable --bin-dir``)."""
        if installed() and not self.hooksd:
            return Path("/usr/bin")  # they ask /run/jit-hooks/hooksd.sock: none in tests
        return self.root / "bin"

    def hook_command(self, name: str) -> str:
        return str(self.bin_dir / name)

    # -- build ----------------------------------------------------------------

    def _build(self, break_glass: tuple[str, ...]) -> None:
        ensure_hook_user()
        hook_uid = pwd.getpwnam(HOOK_USER).pw_uid
        hook_gid = pwd.getpwnam(HOOK_USER).pw_gid
        for d in ("bin", "etc", "lib", "keys"):
            (self.root / d).mkdir()
            os.chmod(self.root / d, 0o755)
        os.chmod(self.root / "keys", 0o700)
        self.state_dir.mkdir(mode=0o700)
        os.chown(self.state_dir, hook_uid, hook_gid)
        self.spool_dir.mkdir(mode=0o700)  # like /var/spool/jit-hooks
        os.chown(self.spool_dir, hook_uid, hook_gid)
        # Like /run/jit-hooks: the helper's socket dir, 0700 jit-hooks (root gets in anyway).
        self.hooksd_socket.parent.mkdir(mode=0o700)
        os.chown(self.hooksd_socket.parent, hook_uid, hook_gid)
        if not installed():
            self._install_hooks()
        elif self.hooksd:  # the installed package's code, through the sandbox's socket
            self._write_wrappers(INSTALLED_LIB)
        self.sink = SyslogSink(self.root / "log.sock")
        if self.hooksd:
            lib = INSTALLED_LIB if installed() else str(self.root / "lib")
            self.daemon = HooksDaemon(
                lib, self.hooksd_socket, user=HOOK_USER, syslog_socket=self.sink.path,
                log_path=self.hooksd_log,
            ).start()  # fmt: skip
        self.break_glass = tuple(self.account_name(role) for role in break_glass)
        self.token_path.write_text("")
        os.chown(self.token_path, 0, hook_gid)
        os.chmod(self.token_path, 0o640)
        self.configure(["http://127.0.0.1:9"], "jith_" + "x" * 43)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / "host_key")],
            check=True,
        )
        os.symlink(SSHD, self.root / self.name)
        self._write_sshd_config()
        self._write_pam_file()
        # sshd's privilege separation directory (Debian's unit creates it at start).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.start()

    def _install_hooks(self) -> None:
        src = REPO / "jit_hooks"
        dst = self.root / "lib" / "jit_hooks"
        shutil.copytree(
            src, dst, ignore=shutil.ignore_patterns("__pycache__", "server", "cli", "*.pyc")
        )
        # Byte-compile as root: the hooks run as users who cannot write here.
        subprocess.run(["/usr/bin/python3", "-I", "-m", "compileall", "-q", str(dst)], check=True)
        for dirpath, _dirs, files in os.walk(dst):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o644)
        self._write_wrappers(str(self.root / "lib"))

    def _write_wrappers(self, lib: str) -> None:
        for name, mode in HOOKS.items():
            path = self.root / "bin" / name
            path.write_text(wrapper_text(lib, mode, str(self.hooksd_socket)))
            os.chmod(path, 0o755)

    def _write_sshd_config(self) -> None:
        cfg = f"--config {self.config_path}"
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.root / 'host_key'}",
            f"PidFile {self.root / 'sshd.pid'}",
            "UsePAM yes",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "AuthorizedKeysFile none",
            f"AuthorizedKeysCommand {self.hook_command('jit-authorized-keys')} {cfg} %u %f %t %k",
            f"AuthorizedKeysCommandUser {HOOK_USER}",
            "ExposeAuthInfo yes",
            "AllowTcpForwarding yes",
            "LogLevel VERBOSE",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
        ]
        for account in self.break_glass:
            lines += [
                f"Match User {account}",
                "    AuthorizedKeysFile .ssh/authorized_keys",
                "    AuthorizedKeysCommand none",
            ]
        (self.root / "sshd_config").write_text("\n".join(lines) + "\n")

    def pam_block(self, *, legacy_session: bool = False) -> str:
        """The hook lines, as `jit-hooks enable` writes them (pamconf.render_pam_block):
        the account hook opens the session (--open-session), a close_session hook
        reports its end. ``legacy_session``: the wiring of jit-hooks before that (a
        session-open hook, no --open-session), as a host not re-enabled still has it."""
        cfg = f"--config {self.config_path}"
        account = self.hook_command("jit-pam-account")
        session = self.hook_command("jit-pam-session")
        if legacy_session:
            lines = [
                f"account  required pam_exec.so quiet stdout {account} {cfg}",
                f"session  required pam_exec.so quiet stdout type=open_session {session} {cfg}",
            ]
        else:
            lines = [f"account  required pam_exec.so quiet stdout {account} {cfg} --open-session"]
        lines.append(f"session  optional pam_exec.so quiet type=close_session {session} {cfg}")
        return f"{pamconf.PAM_BEGIN}: e2e sandbox\n" + "\n".join(lines) + f"\n{pamconf.PAM_END}\n"

    def _write_pam_file(self, *, legacy_session: bool = False) -> None:
        # Shaped like Debian 12's /etc/pam.d/sshd where it matters: the session stack
        # runs pam_env user_readenv=1 (the login's ~/.pam_environment), and the hook
        # lines go where `jit-hooks enable` puts them, by the same wiring code.
        base = (
            f"# jit-hooks e2e sandbox {self.root} (removed at teardown)\n"
            "auth     required pam_unix.so\n"
            "session  required pam_env.so user_readenv=1 envfile=/etc/default/locale\n"
            "password required pam_deny.so\n"
        )
        block = self.pam_block(legacy_session=legacy_session)
        self.pam_file.write_text(pamconf.add_pam_block(base, block))

    def configure(
        self,
        urls: list[str],
        token: str,
        *,
        connect_timeout: float = 2.0,
        total_timeout: float = 5.0,
        host_name: str = "web1",
    ) -> None:
        """(Re)write the hooks' config and host token; the next login uses them."""
        self.token_path.write_text(token + "\n")
        url_list = ", ".join(f'"{u}"' for u in urls)
        accounts = ", ".join(f'"{a}"' for a in self.break_glass)
        self.config_path.write_text(
            f'[service]\nurls = [{url_list}]\ntoken_file = "{self.token_path}"\n'
            f"connect_timeout = {connect_timeout}\ntotal_timeout = {total_timeout}\n"
            f'[host]\nname = "{host_name}"\n'
            f"[break_glass]\naccounts = [{accounts}]\n"
            f'[state]\ndir = "{self.state_dir}"\nspool_dir = "{self.spool_dir}"\n'
            f'[log]\nsyslog_socket = "{self.sink.path}"\n'
        )
        os.chmod(self.config_path, 0o644)

    # -- sshd -----------------------------------------------------------------

    def start(self) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": self.tz}
        self.proc = subprocess.Popen(
            [
                str(self.root / self.name),
                "-D",
                "-f",
                str(self.root / "sshd_config"),
                "-E",
                str(self.sshd_log),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log_text()}")
            if "Server listening on 127.0.0.1" in self.log_text():
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {self.log_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        try:
            return self.sshd_log.read_text(errors="replace")
        except OSError:
            return ""

    # -- people and accounts --------------------------------------------------

    def account_name(self, role: str) -> str:
        return f"jt{self.tag}{role}"[:32]

    def add_account(
        self, role: str, *, password: str | None = None, keys: tuple[str, ...] | list[str] = ()
    ) -> str:
        """A local unix account ``jt<tag><role>`` (removed at close); returns its name."""
        name = self.account_name(role)
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
        self.users.append(name)
        if password:
            subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        if keys:
            pw = pwd.getpwnam(name)
            ssh_dir = Path(pw.pw_dir) / ".ssh"
            ssh_dir.mkdir(mode=0o700)
            (ssh_dir / "authorized_keys").write_text("\n".join(keys) + "\n")
            os.chmod(ssh_dir / "authorized_keys", 0o600)
            for p in (ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        return name

    def person(self, name: str) -> Person:
        """A new ed25519 key pair for ``name``, kept in the sandbox (0600)."""
        path = self.root / "keys" / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
            check=True,
        )
        return Person(name, path, sshkeys.parse_public_key(path.with_suffix(".pub").read_text()))

    # -- client ---------------------------------------------------------------

    def ssh_args(self, login: str, *options: str, log_level: str = "ERROR") -> list[str]:
        # ssh shows PAM messages (pam_exec's stdout) only at LogLevel INFO or above.
        return [
            "ssh", "-F", "/dev/null", "-p", str(self.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", f"LogLevel={log_level}", "-o", "ConnectTimeout=10",
            *options, f"{login}@127.0.0.1",
        ]  # fmt: skip

    def ssh(
        self,
        login: str,
        person: Person,
        *command: str,
        extra: tuple[str, ...] = (),
        timeout: float = 60,
        log_level: str = "ERROR",
    ) -> subprocess.CompletedProcess:
        """``ssh -i KEY -o BatchMode=yes login@127.0.0.1 command``; returns the result."""
        args = self.ssh_args(
            login, "-i", str(person.key_path), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", *extra,
            log_level=log_level,
        )  # fmt: skip
        return subprocess.run(
            [*args, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def ssh_password(
        self, login: str, password: str, *command: str, timeout: float = 60, log_level="INFO"
    ) -> subprocess.CompletedProcess:
        """A password login, the password given through SSH_ASKPASS (no tty needed)."""
        askpass = self.root / "keys" / f"askpass-{secrets.token_hex(4)}"
        askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
        os.chmod(askpass, 0o700)
        env = {
            **os.environ,
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": "none",
        }
        args = self.ssh_args(
            login, "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
            "-o", "NumberOfPasswordPrompts=1", log_level=log_level,
        )  # fmt: skip
        try:
            return subprocess.run(
                [*args, *command],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            askpass.unlink()

    # -- teardown -------------------------------------------------------------

    def close(self) -> None:
        self.stop()
        if self.daemon is not None:
            self.daemon.stop()
        for name in self.users:
            subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
        self.users.clear()
        if getattr(self, "sink", None):
            self.sink.close()
        try:
            self.pam_file.unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            SANDBOX_PARENT.rmdir()  # only if no other sandbox is alive
        except OSError:
            pass

    def __enter__(self) -> SshdSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":  # manual check: python -m jit_hooks.testing.sshd
    with SshdSandbox() as box:
        print(box.root, box.port, file=sys.stderr)
        print(box.log_text())
