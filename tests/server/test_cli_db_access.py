"""A SQLite database the running user cannot use: the error names file, user and owner.

SQLite alone says "unable to open database file" (a 0600 file of another user) or
"attempt to write a readonly database" (0644, even for `user list`): neither names
the file nor says it is a permission of who runs the command, the usual case being
root's file and the service user's command (or the other way round).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.server.test_cli import ok, one_line_error

OTHER = 65533  # a uid with no passwd entry: not root, not the file's owner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture(autouse=True)
def _sqlite_only(db_backend: str) -> None:
    if db_backend != "sqlite":
        pytest.skip("SQLite files only")


@pytest.fixture
def root_db():  # noqa: ANN201
    """A migrated database of root's, in a directory anyone may enter (not under
    pytest's 0700 tmp_path, which the other user could not reach at all)."""
    d = Path(tempfile.mkdtemp(prefix="jit-db-access-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        ok(d, "db", "upgrade")
        yield d
    finally:
        shutil.rmtree(d)


def as_other(data_dir: Path, *args: str, **run: object) -> subprocess.CompletedProcess:
    """`jit-server --data-dir DATA_DIR ARGS` as uid OTHER (stdout captured unless ``run`` says)."""
    run = {"stdout": subprocess.PIPE, **run}
    return subprocess.run(  # type: ignore[call-overload]
        [
            "setpriv",
            f"--reuid={OTHER}",
            f"--regid={OTHER}",
            "--clear-groups",
            "--",
            sys.executable,
            "-m",
            "jit_hooks.server.cli",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        cwd="/",
        **run,
    )


@pytest.mark.parametrize("mode", [0o600, 0o644])
@pytest.mark.parametrize("args", [("user", "list"), ("host", "add", "web1")])
def test_another_users_database_names_file_user_and_owner(root_db, mode, args):
    db = root_db / "jit.db"
    os.chmod(db, mode)
    line = one_line_error(as_other(root_db, *args))
    assert line == (
        f"jit-server: error: user uid {OTHER} cannot read and write {db} (owner root, mode "
        f"{mode:04o}): run jit-server as root (`runuser -u root -- jit-server ...`) or make it "
        "the service user's"
    )


def test_a_closed_directory_above_is_named(root_db):
    os.chmod(root_db, 0o700)
    line = one_line_error(as_other(root_db, "user", "list"))
    assert f"user uid {OTHER} cannot reach {root_db / 'jit.db'}" in line, line
