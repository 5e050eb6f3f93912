"""Service packaging: the systemd units verify, and the documented SQLite backup
of a LIVE service restores into a fresh service that answers with the same data."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from jit_hooks.testing.service import start_service
from tests.packaging.conftest import REPO, exposure, needs_analyze, verify_units

UNITS = REPO / "packaging/server"
POLICY = """
[[policy]]
name = "web"
hosts = ["web1"]
logins = ["deploy"]
requesters = { roles = ["requester"] }
approvers = { roles = ["approver"] }
approvals_required = 1
max_duration = 3600
reason_required = true
"""


@needs_analyze
def test_units_verify_and_are_hardened(tmp_path):
    venv_server = REPO / ".venv/bin/jit-server"
    for name in ("jit-server.service", "jit-server-backup.service", "jit-server-backup.timer"):
        text = (UNITS / name).read_text()
        # verify checks that ExecStart binaries exist: point at this checkout's venv.
        (tmp_path / name).write_text(text.replace("/usr/bin/jit-server", str(venv_server)))
    verify_units(*sorted(tmp_path.iterdir()), mention=str(tmp_path))

    unit = (UNITS / "jit-server.service").read_text()
    for setting in (
        "User=jit-server",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=jit-server",
        "CapabilityBoundingSet=\n",
    ):
        assert setting in unit
    rating = exposure(tmp_path / "jit-server.service")
    assert rating <= 2.0, "systemd rates the unit's exposure above 2.0 (of 10)"


def backup(db: Path, dest: Path, method: str) -> None:
    """The two online backups docs/packaging.md gives, run while the service writes."""
    if method == "sqlite3 .backup":
        subprocess.run(["sqlite3", str(db), f".backup '{dest}'"], check=True, timeout=60)
    else:
        con = sqlite3.connect(db)
        try:
            con.execute("VACUUM INTO ?", (str(dest),))
        finally:
            con.close()


@pytest.mark.parametrize(
    "method,target",
    [("sqlite3 .backup", "same data dir"), ("VACUUM INTO", "new data dir")],
)
def test_backup_of_a_live_service_restores_the_same_data(service, tmp_path, method, target):
    svc = service
    svc.admin("user", "add", "alice", "--role", "requester")
    svc.admin("user", "add", "bob", "--role", "approver")
    alice = svc.admin("token", "create", "alice").strip()
    bob = svc.admin("token", "create", "bob").strip()
    host_token = svc.admin("host", "add", "web1").strip()
    (tmp_path / "policy.toml").write_text(POLICY)
    svc.admin("policy", "add", str(tmp_path / "policy.toml"))
    body = {"host": "web1", "login": "deploy", "reason": "INC-7", "duration_seconds": 600}
    status, request = svc.call("POST", "/api/v1/requests", token=alice, body=body)
    assert status == 201, request
    status, approved = svc.call(
        "POST", f"/api/v1/requests/{request['id']}/approve", token=bob, body={}
    )
    assert status == 200 and approved["state"] == "approved", approved

    dump = tmp_path / "backup.db"
    backup(svc.data_dir / "jit.db", dump, method)  # the service is still running

    # Changes after the backup must not be in the restore.
    svc.admin("user", "add", "carol", "--role", "approver")
    status, _ = svc.call("POST", f"/api/v1/requests/{request['id']}/revoke", token=alice, body={})
    assert status == 200

    if target == "same data dir":
        # docs/packaging.md, "Restore": stop, replace jit.db, drop the old WAL files.
        svc.stop()
        fresh_dir = svc.data_dir
        for stale in ("jit.db-wal", "jit.db-shm"):
            (fresh_dir / stale).unlink(missing_ok=True)
    else:
        fresh_dir = tmp_path / "restored"
        fresh_dir.mkdir()
    shutil.copy(dump, fresh_dir / "jit.db")
    restored = start_service(fresh_dir)  # runs `db upgrade` then serves, like the unit
    try:
        status, got = restored.call("GET", f"/api/v1/requests/{request['id']}", token=alice)
        assert status == 200
        assert got == approved | {"state": "approved"}
        status, ping = restored.call("GET", "/api/v1/hook/ping", token=host_token)
        assert status == 200 and ping["host"] == "web1"
        users = restored.admin("user", "list", "--json")
        assert "alice" in users and "bob" in users and "carol" not in users
        restored.admin("audit", "verify")  # the hash chain survived intact
    finally:
        restored.stop()


def test_venv_install_from_the_wheel_migrates_and_serves(tmp_path):
    """docs/packaging.md installs the service from the project's wheel: build it, install
    it into a fresh target (not this editable checkout) and run `jit-server db upgrade`
    and the app factory from there, so missing package data (migrations) shows up."""
    venv_python = REPO / ".venv/bin/python"
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            str(venv_python),
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = wheels.glob("jit_hooks-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [
            str(venv_python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    sources = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "jit_hooks").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    installed = {
        p.relative_to(target).as_posix()
        for p in (target / "jit_hooks").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    # script.py.mako only serves `alembic revision` in a checkout, never a running service.
    missing = sources - installed - {"jit_hooks/server/migrations/script.py.mako"}
    assert missing == set(), "files of the package missing from the wheel"

    # -S: no site processing, so this checkout's editable install stays out of sys.path;
    # the service's dependencies come from the venv's site-packages, jit_hooks from `target`.
    site_packages = next((REPO / ".venv/lib").glob("python3*/site-packages"))
    data = tmp_path / "data"
    code = "\n".join(
        [
            "import sys",
            f"sys.path[:0] = [{str(target)!r}, {str(site_packages)!r}]",
            "import jit_hooks",
            f"assert jit_hooks.__file__.startswith({str(target)!r}), jit_hooks.__file__",
            "from jit_hooks.server.cli import main",
            f"sys.argv = ['jit-server', '--data-dir', {str(data)!r}, 'db', 'upgrade']",
            "try:",
            "    main()",
            "except SystemExit as e:",
            "    assert not e.code, e.code",
            "from jit_hooks.server.app import create_app",
            "from jit_hooks.server.settings import Settings",
            f"create_app(Settings.from_options(data_dir={str(data)!r}))",
        ]
    )
    r = subprocess.run(
        [str(venv_python), "-S", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    tables = (
        sqlite3.connect(data / "jit.db")
        .execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetchall()
    )
    assert {"alembic_version"} <= {t[0] for t in tables} and len(tables) > 3
