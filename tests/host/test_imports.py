"""The hot path stays stdlib-only: importing the hooks pulls in no heavy package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FORBIDDEN = (
    "fastapi", "sqlalchemy", "pydantic", "click", "requests", "jit_hooks.server", "starlette",
    "uvicorn", "cachetools", "logging",
    # start-up cost: the hooks have their own HTTP exchange, NamedTuples, and load ssl
    # only for an https URL
    "http", "email", "dataclasses", "inspect", "ssl",
)  # fmt: skip
HOOKS = ("authorized_keys", "pam_account", "pam_session")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_imports_are_stdlib_only(hook):
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        f"import jit_hooks.host.{hook}; print('\\n'.join(sorted(sys.modules)))"
    )
    # -I: isolated, as the installed wrappers run it (no site-packages, no env).
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = [m for m in out if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN]
    assert loaded == []
    assert f"jit_hooks.host.{hook}" in out


def test_entry_point_usage_smoke(tmp_path):
    """Each entry point runs as a process and fails closed without a config."""
    for hook in HOOKS:
        r = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                f"from jit_hooks.host.{hook} import main; raise SystemExit(main())",
                "--config",
                str(tmp_path / "missing.toml"),
                "deploy",
                "SHA256:x",
                "t",
                "k",
            ],
            capture_output=True,
            text=True,
            env={"PAM_TYPE": "account", "PAM_USER": "deploy"},
        )
        assert r.returncode == 1, hook
        assert "reason=config" in r.stderr
