"""POST /api/v1/login against the real PAM stack (service "login") of this machine.

The success path needs a local unix user with a password: the test creates a
throwaway one (useradd + chpasswd, root only) and removes it afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

from tests.server.conftest import Admin

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd"), reason="creating a unix user needs root"
)


@pytest.fixture
def unix_user():
    name = "jitpam" + secrets.token_hex(4)
    password = "pw-" + secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=False)


def test_wrong_password_is_401(service):
    status, body = service.call(
        "POST", "/api/v1/login", body={"username": "nobody-here", "password": "wrong"}
    )
    assert body == {
        "error": "unauthorized",
        "detail": "invalid username or password",
        "field": None,
    }
    assert status == 401
    status, body = service.call("POST", "/api/v1/login", body={"username": "x"})
    assert (status, body["field"]) == (422, "password")


@needs_root
def test_password_login_through_pam(service, unix_user):
    from jit_hooks.server import store

    name, password = unix_user
    # A unix user unknown to jit gets the same 401 as a wrong password.
    status, _ = service.call("POST", "/api/v1/login", body={"username": name, "password": password})
    assert status == 401

    admin = Admin(service)
    try:
        admin(store.add_user, name=name, roles=["requester"])
    finally:
        admin.close()
    status, body = service.call(
        "POST", "/api/v1/login", body={"username": name, "password": password}
    )
    assert status == 200, body
    assert body["token"].startswith("jitu_")
    assert body["user"]["name"] == name
    status, me = service.call("GET", "/api/v1/me", token=body["token"])
    assert (status, me["name"]) == (200, name)

    status, _ = service.call(
        "POST", "/api/v1/login", body={"username": name, "password": password + "x"}
    )
    assert status == 401

    service.admin("user", "disable", name)
    status, _ = service.call("POST", "/api/v1/login", body={"username": name, "password": password})
    assert status == 401
    assert service.call("GET", "/api/v1/me", token=body["token"])[0] == 401

    kinds = [k for (k,) in service.sqlite("SELECT kind FROM audit_events ORDER BY id")]
    assert kinds.count("login.failed") == 3
    # The password never reaches the audit log.
    assert not service.sqlite("SELECT id FROM audit_events WHERE data LIKE ?", (f"%{password}%",))
