"""A data directory path the OS refuses (a file, a symlink loop, a name too long):
one line naming the path and the OS error, exit 1, no traceback.

The old code caught only FileNotFoundError/PermissionError while looking for the
cause: `jit-server --data-dir FILE user list` printed two tracebacks (mkdir's
FileExistsError, then NotADirectoryError from the cause lookup), and root's
`serve` with a data dir under a regular file one more.
"""

from __future__ import annotations

import os

import pytest

from jit_hooks.testing.service import free_port
from tests.server.test_cli import run


@pytest.fixture(autouse=True)
def _sqlite_only(db_backend: str) -> None:
    if db_backend != "sqlite":
        pytest.skip("the data dir's SQLite file")


def only_error_line(r) -> str:  # noqa: ANN001
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jit-server: error: "), r.stderr
    return lines[0]


def test_a_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x\n")
    line = only_error_line(run(f, "user", "list"))
    assert line == (
        f"jit-server: error: cannot use {f}/jit.db: Not a directory ({f} is a file, "
        "not a directory)"
    )
    assert f.read_text() == "x\n"


def test_a_data_dir_under_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x\n")
    line = only_error_line(run(f / "sub", "host", "add", "web1"))
    assert f"cannot use {f}/sub/jit.db: Not a directory ({f} is a file" in line, line


def test_a_symlink_loop_and_a_name_too_long(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    line = only_error_line(run(loop, "user", "list"))
    assert f"cannot use {loop}/jit.db: Too many levels of symbolic links" in line, line
    long = tmp_path / ("a" * 300)
    line = only_error_line(run(long, "user", "list"))
    assert f"cannot use {long}/jit.db: File name too long" in line, line


@pytest.mark.skipif(os.geteuid() != 0, reason="the owner check runs for root only")
def test_root_serve_with_a_data_dir_under_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x\n")
    r = run(f / "sub", "serve", "--listen", f"127.0.0.1:{free_port()}")
    line = only_error_line(r)
    assert line == (
        f"jit-server: error: cannot use {f}/sub: Not a directory ({f} is a file, not a directory)"
    )
