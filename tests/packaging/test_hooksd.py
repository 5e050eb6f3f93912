"""The resident hook helper as the package ships it: /usr/sbin/jit-hooksd and its units.

The source checks always run. With the package installed (JIT_HOOKS_INSTALLED=1,
scripts/ci-deb) the installed files are checked too, and the installed helper serves
the installed thin AKC for real: started as jit-hooks by systemd-socket-activate (the
same LISTEN_FDS hand-over as systemd's jit-hooksd.socket), in a private mount namespace
whose /run/jit-hooks is a scratch directory, so the machine's own /run/jit-hooks (and
any real jit-hooksd.socket) is never touched.
"""

from __future__ import annotations

import grp
import importlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.packaging.conftest import (
    HOOK_USER,
    INSTALLED,
    REPO,
    exposure,
    needs_analyze,
    verify_units,
)

UNITS = REPO / "packaging/host/lib/systemd/system"
SOCKET, SERVICE = "jit-hooksd.socket", "jit-hooksd.service"
WRAPPER = REPO / "packaging/host/usr/sbin/jit-hooksd"
needs_installed = pytest.mark.skipif(
    not INSTALLED, reason="needs the installed package (JIT_HOOKS_INSTALLED=1, scripts/ci-deb)"
)


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_wrapper_is_a_python3_IS_script_importing_the_daemon_main():
    text = WRAPPER.read_text()
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert 'sys.path.append("/usr/lib/python3/dist-packages")' in text
    assert re.findall(r"^from (\S+) import main$", text, re.M) == ["jit_hooks.host.login.daemon"]
    assert "raise SystemExit(main())" in text
    assert callable(importlib.import_module("jit_hooks.host.login.daemon").main)
    assert WRAPPER.stat().st_mode & 0o777 == 0o755


def test_units_are_socket_activated_and_hardened():
    sock = unit_settings((UNITS / SOCKET).read_text())
    assert sock["ListenStream"] == ["/run/jit-hooks/hooksd.sock"]
    for key, value in {
        "SocketUser": "jit-hooks",
        "SocketGroup": "jit-hooks",
        "SocketMode": "0600",
        "DirectoryMode": "0700",
        "Accept": "no",
        "RemoveOnStop": "yes",
        "WantedBy": "sockets.target",
    }.items():
        assert sock[key] == [value], key
    svc = unit_settings((UNITS / SERVICE).read_text())
    for key, value in {
        "Type": "simple",
        "ExecStart": "/usr/sbin/jit-hooksd",
        "User": "jit-hooks",
        "Group": "jit-hooks",
        "Requires": SOCKET,
        "After": SOCKET,
        "Restart": "on-failure",
        "UMask": "0077",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
    }.items():
        assert svc[key] == [value], key
    assert "@system-service" in svc["SystemCallFilter"]
    # Its records and socket, and the break-glass spool (reports it could not deliver).
    assert svc["ReadWritePaths"] == ["/run/jit-hooks", "-/var/spool/jit-hooks"]
    # It reads sshd's /proc/<pid>/stat and checks real peer uids.
    assert "ProtectProc" not in svc and "PrivateUsers" not in svc
    assert "WantedBy" not in svc, "the socket starts the helper; the service is not enabled"


def test_debian_installs_the_helper_and_enables_only_its_socket():
    install = (REPO / "debian/jit-hooks.install").read_text().splitlines()
    assert "packaging/host/usr/sbin/jit-hooksd usr/sbin/" in install
    for name in (SOCKET, SERVICE):
        assert f"packaging/host/lib/systemd/system/{name} lib/systemd/system/" in install
    assert "man/jit-hooksd.8" in (REPO / "debian/jit-hooks.manpages").read_text().splitlines()
    rules = (REPO / "debian/rules").read_text()
    calls = re.findall(r"^\tdh_installsystemd\b(.*)$", rules, re.M)
    assert sorted(c.strip() for c in calls) == sorted(
        [
            # The enforce backstop and the session agent ship disabled (jit-hooks enable
            # --sessions turns them on).
            "--no-enable --no-start jit-hooks-enforce.service jit-hooks-enforce.timer"
            " jit-hooks-agent.service",
            f"--no-restart-after-upgrade --no-stop-on-upgrade {SOCKET}",
            SERVICE,
        ]
    )


@needs_analyze
def test_units_verify_and_rate_ok(tmp_path):
    for name in (SOCKET, SERVICE):
        text = (UNITS / name).read_text()
        if not INSTALLED:
            # verify checks that ExecStart exists: the checkout's wrapper stands in.
            text = text.replace("/usr/sbin/jit-hooksd", str(WRAPPER))
        (tmp_path / name).write_text(text)
    verify_units(tmp_path / SOCKET, tmp_path / SERVICE, mention=str(tmp_path))
    rating = exposure(tmp_path / SERVICE)
    assert rating <= 2.0, "systemd rates the helper's exposure above 2.0 (of 10)"


# -- the installed package -------------------------------------------------------------


@needs_installed
def test_installed_files_and_modes():
    for path, mode in (
        ("/usr/sbin/jit-hooksd", 0o755),
        (f"/lib/systemd/system/{SOCKET}", 0o644),
        (f"/lib/systemd/system/{SERVICE}", 0o644),
        ("/usr/share/man/man8/jit-hooksd.8.gz", 0o644),
    ):
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode), path
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, 0, 0), path
    assert Path("/usr/sbin/jit-hooksd").read_bytes() == WRAPPER.read_bytes()
    for name in (SOCKET, SERVICE):
        assert Path(f"/lib/systemd/system/{name}").read_bytes() == (UNITS / name).read_bytes()
    listed = subprocess.run(
        ["dpkg-query", "-L", "jit-hooks"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert "/usr/sbin/jit-hooksd" in listed and f"/lib/systemd/system/{SOCKET}" in listed
    # Enabled on install (deb-systemd-helper works without a running systemd too); the
    # helper service itself and the enforce timer are not.
    assert os.path.islink(f"/etc/systemd/system/sockets.target.wants/{SOCKET}")
    assert not os.path.lexists("/etc/systemd/system/timers.target.wants/jit-hooks-enforce.timer")
    assert not list(Path("/etc/systemd/system").glob(f"*.wants/{SERVICE}"))


@needs_installed
@needs_analyze
def test_installed_units_verify():
    verify_units(
        f"/lib/systemd/system/{SOCKET}", f"/lib/systemd/system/{SERVICE}", mention="jit-hooksd"
    )


# -- the installed helper serves the installed thin AKC --------------------------------

POLICY = """
[[policy]]
name = "hooksd"
hosts = ["web1"]
logins = ["deploy"]
requesters = { roles = ["requester"] }
approvers = { roles = ["approver"] }
approvals_required = 1
max_duration = 3600
reason_required = false
"""
SOCK = "/run/jit-hooks/hooksd.sock"


def make_key(directory: Path, name: str) -> tuple[str, str, str]:
    """(fingerprint, key type, base64 blob) of a new ed25519 key."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
        check=True,
        timeout=30,
    )
    key_type, blob = Path(f"{path}.pub").read_text().split()[:2]
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()[1]
    return fp, key_type, blob


def in_run_dir(run_dir: Path, user: str, *cmd: str, etc: Path | None = None) -> list[str]:
    """``cmd`` as ``user``, in a private mount namespace whose /run/jit-hooks is ``run_dir``.

    With ``etc``, that namespace's /etc/jit-hooks is ``etc`` too (the helper's enrolled
    config and token instead of the package's unenrolled ones).
    setpriv execs (no fork): the command is the process we start and can stop.
    """
    script = 'mount --bind "$1" /run/jit-hooks && shift && '
    dirs = [str(run_dir)]
    if etc is not None:
        script += 'mount --bind "$1" /etc/jit-hooks && shift && '
        dirs.append(str(etc))
    script += 'umask 077 && exec "$@"'
    account = pwd.getpwnam(user)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        *dirs,
        "setpriv",
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--",
        *cmd,
    ]


class Helper:
    """The helper process tree: unshare -> sh -> strace, whose child is jit-hooksd."""

    def __init__(self, proc: subprocess.Popen, run_dir: Path, base: Path, trace: Path):
        self.proc, self.run_dir, self.base, self.trace = proc, run_dir, base, trace

    def log(self) -> str:
        return (self.base / "helper.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to jit-hooksd itself (strace would only detach from it)."""
        if self.proc.poll() is not None:
            return
        pid = self.proc.pid
        try:
            pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass
        try:
            os.kill(pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def helper(service, hook_user):
    """The installed jit-hooksd, socket-activated as jit-hooks on a scratch /run/jit-hooks.

    Only the helper sees a config for the live service (a scratch /etc/jit-hooks bound
    over the package's in its own namespace): a hook that fell back to running
    in-process would read the package's unenrolled config and deny everything.
    Under strace, to check it against the unit's system call filter.
    """
    base = Path(tempfile.mkdtemp(prefix="jitpkg-hooksd-", dir="/tmp"))
    base.chmod(0o755)
    run_dir, etc = base / "run", base / "etc"
    run_dir.mkdir(mode=0o700)
    etc.mkdir(mode=0o755)
    user = pwd.getpwnam(HOOK_USER)
    os.chown(run_dir, user.pw_uid, user.pw_gid)
    token = service.admin("host", "add", "web1").strip()
    (etc / "jit-hooks.toml").write_text(
        f'[service]\nurls = ["{service.url}"]\ntoken_file = "/etc/jit-hooks/host-token"\n'
        'connect_timeout = 2.0\ntotal_timeout = 5.0\n[host]\nname = "web1"\n'
        "[break_glass]\naccounts = []\n"
    )
    (etc / "host-token").write_text(token + "\n")
    os.chown(etc / "host-token", 0, grp.getgrnam(HOOK_USER).gr_gid)
    (etc / "host-token").chmod(0o640)
    trace = base / "helper.strace"
    log = open(base / "helper.log", "wb")
    script = (
        'mount --bind "$1" /run/jit-hooks && mount --bind "$2" /etc/jit-hooks && umask 077 && '
        f"exec strace -f -qq -o {trace} "
        f"setpriv --reuid={user.pw_uid} --regid={user.pw_gid} --clear-groups -- "
        f"systemd-socket-activate -l {SOCK} /usr/sbin/jit-hooksd"
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
        + [str(run_dir), str(etc)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    h = Helper(proc, run_dir, base, trace)
    try:
        for _ in range(300):
            if (run_dir / "hooksd.sock").exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert (run_dir / "hooksd.sock").exists(), h.log()
        yield h
    finally:
        h.stop()
        shutil.rmtree(base, ignore_errors=True)


def syscall_group(name: str) -> set[str]:
    """The system calls of a systemd group like @system-service, nested groups expanded."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, timeout=60
    ).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.strip() and not line.lstrip().startswith("#"):
            current.append(line.split()[0])

    def expand(group: str, seen: set[str]) -> set[str]:
        calls = set()
        for item in groups.get(group, []):
            if item.startswith("@"):
                if item not in seen:
                    seen.add(item)
                    calls |= expand(item, seen)
            else:
                calls.add(item)
        return calls

    return expand(name, {name})


def traced_helper_calls(trace: Path) -> tuple[set[str], list[str]]:
    """(system calls, W+X mappings) of jit-hooksd: the trace after its execve."""
    lines = trace.read_text(errors="replace").splitlines()
    start = next(i for i, ln in enumerate(lines) if 'execve("/usr/sbin/jit-hooksd"' in ln)
    calls, wx = set(), []
    for line in lines[start + 1 :]:
        m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
        if not m:
            continue
        calls.add(m.group(1))
        if m.group(1) in ("mmap", "mprotect", "pkey_mprotect"):
            if "PROT_WRITE" in line and "PROT_EXEC" in line:
                wx.append(line)
    return calls, wx


def akc(run_dir: Path, key: tuple[str, str, str], login: str = "deploy"):
    fp, key_type, blob = key
    return subprocess.run(
        in_run_dir(run_dir, HOOK_USER, "/usr/bin/jit-authorized-keys", login, fp, key_type, blob),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@needs_installed
@needs_analyze
@pytest.mark.skipif(
    not shutil.which("systemd-socket-activate") or not shutil.which("strace"),
    reason="systemd-socket-activate (systemd) or strace not installed",
)
def test_installed_helper_serves_the_installed_akc(service, helper, tmp_path):
    run_dir = helper.run_dir
    st = (run_dir / "hooksd.sock").stat()
    assert stat.S_ISSOCK(st.st_mode)
    # Bound by systemd-socket-activate running as jit-hooks: owned by it, as SocketUser=
    # makes it. That tool has no SocketMode=: set the unit's 0600 so that the peers below
    # see the same socket as under jit-hooksd.socket.
    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (HOOK_USER,) * 2
    (run_dir / "hooksd.sock").chmod(0o600)
    wrapper = Path("/usr/bin/jit-authorized-keys").read_text()
    assert "thin" in wrapper and SOCK in wrapper, "the installed AKC is not a thin client"

    for who, role in (("alice", "requester"), ("bob", "approver")):
        service.admin("user", "add", who, "--role", role)
    alice = service.admin("token", "create", "alice").strip()
    bob = service.admin("token", "create", "bob").strip()
    (tmp_path / "policy.toml").write_text(POLICY)
    service.admin("policy", "add", str(tmp_path / "policy.toml"))
    approved, other = make_key(tmp_path, "alice"), make_key(tmp_path, "mallory")
    body = {"public_key": f"{approved[1]} {approved[2]} alice"}
    assert service.call("POST", "/api/v1/keys", token=alice, body=body)[0] == 201
    body = {"host": "web1", "login": "deploy", "reason": "hooksd", "duration_seconds": 600}
    status, req = service.call("POST", "/api/v1/requests", token=alice, body=body)
    assert status == 201
    status, _ = service.call("POST", f"/api/v1/requests/{req['id']}/approve", token=bob, body={})
    assert status == 200

    r = akc(run_dir, approved)
    assert r.returncode == 0, r.stdout + r.stderr + helper.log()
    line = r.stdout.strip()
    assert line.startswith('expiry-time="'), line
    assert line.endswith(f"ssh-ed25519 {approved[2]} jit-request-{req['id']}"), line
    assert len(r.stdout.splitlines()) == 1

    r = akc(run_dir, other)
    assert r.stdout == "", r.stdout  # no key line: sshd refuses the key
    rows = service.sqlite("SELECT kind, data FROM audit_events ORDER BY id")
    decisions = [
        (json.loads(d).get("fingerprint"), json.loads(d).get("decision"))
        for k, d in rows
        if k == "hook.authorized_keys"
    ]
    # The helper asked the service for both (a fallback could not have: no token).
    assert decisions == [(approved[0], "allow"), (other[0], "deny")], decisions

    # Peers: jit-hooks may only ask for the AKC (the helper answers a bare deny; a hook
    # running in-process would have printed the user message), nobody else gets in at all.
    env = {"PAM_TYPE": "account", "PAM_USER": "deploy", "PAM_SERVICE": "sshd"}
    r = subprocess.run(
        in_run_dir(
            run_dir,
            HOOK_USER,
            "env",
            *(f"{k}={v}" for k, v in env.items()),
            "/usr/bin/jit-pam-account",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert (r.returncode, r.stdout) == (1, ""), r.stdout + r.stderr
    # The admin's view of it (status only looks for the listener, it does not connect),
    # on the host the helper serves: its enrolled /etc/jit-hooks, not the package's.
    r = subprocess.run(
        in_run_dir(run_dir, "root", "/usr/bin/jit-hooks", "status", etc=helper.base / "etc"),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert f"helper:       ok   jit-hooksd socket {SOCK} is listening" in r.stdout, r.stdout
    probe = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    r = subprocess.run(
        in_run_dir(run_dir, "nobody", "/usr/bin/python3", "-I", "-c", probe, SOCK),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1 and "PermissionError" in r.stderr, r.stderr

    # What it did stays inside jit-hooksd.service's SystemCallFilter= (a call outside
    # would be EPERM under systemd) and MemoryDenyWriteExecute=.
    helper.stop()
    calls, wx = traced_helper_calls(helper.trace)
    allowed = syscall_group("@system-service") - syscall_group("@privileged")
    allowed -= syscall_group("@resources")
    assert {"accept4", "connect", "sendto"} <= calls, sorted(calls)
    assert not calls - allowed, sorted(calls - allowed)
    assert not wx, wx[:3]
