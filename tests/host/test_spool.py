"""The break-glass spool on a real filesystem: modes, symlinks, bounds (the oldest are kept)."""

from __future__ import annotations

import os

import pytest

from jit_hooks.host.login import spool


def report(n: int, **over) -> spool.Report:
    r = spool.Report(
        report_id=f"{n:032x}", at=1_700_000_000 + n, login="breakglass", rhost="192.0.2.1",
        connection="1234:5678", stage="account",
    )  # fmt: skip
    r.update(over)  # type: ignore[typeddict-item]
    return r


@pytest.fixture
def spool_dir(tmp_path):
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    return d


def read(spool_dir) -> list:
    fd = spool.open_dir(str(spool_dir))
    try:
        return list(spool.read_all(fd))
    finally:
        os.close(fd)


def test_written_reports_are_0600_and_read_back_oldest_first(spool_dir):
    spool.write(str(spool_dir), report(2))
    spool.write(str(spool_dir), report(1))
    names = sorted(os.listdir(spool_dir))
    assert names == [f"bg-00{1_700_000_001}-{1:032x}.json", f"bg-00{1_700_000_002}-{2:032x}.json"]
    assert all(os.stat(spool_dir / n).st_mode & 0o777 == 0o600 for n in names)
    assert [r for _n, r in read(spool_dir)] == [report(1), report(2)]


def test_full_spool_keeps_the_oldest(spool_dir, monkeypatch):
    monkeypatch.setattr(spool, "MAX_FILES", 3)
    for n in range(3):
        spool.write(str(spool_dir), report(n))
    with pytest.raises(spool.SpoolError, match="full"):
        spool.write(str(spool_dir), report(99))
    assert [r["report_id"] for _n, r in read(spool_dir)] == [f"{n:032x}" for n in range(3)]


@pytest.mark.parametrize("mode", [0o750, 0o707, 0o777])
def test_a_directory_others_can_enter_is_refused(spool_dir, mode):
    os.chmod(spool_dir, mode)
    with pytest.raises(spool.SpoolError, match="mode 0700"):
        spool.write(str(spool_dir), report(1))
    assert os.listdir(spool_dir) == []


def test_a_symlinked_directory_is_refused(spool_dir, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(spool_dir)
    with pytest.raises(spool.SpoolError):
        spool.write(str(link), report(1))
    assert os.listdir(spool_dir) == []


def test_planted_files_read_as_invalid_and_symlinks_are_not_followed(spool_dir, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"not": "a report"}')
    (spool_dir / f"bg-1-{'a' * 32}.json").symlink_to(secret)
    loose = spool_dir / f"bg-2-{'b' * 32}.json"
    loose.write_text('{"x": 1}')
    os.chmod(loose, 0o644)  # readable by others: not ours
    spool.write(str(spool_dir), report(3))
    got = read(spool_dir)
    assert [(n, r is None) for n, r in got] == [
        (f"bg-00{1_700_000_003}-{3:032x}.json", False),
        (f"bg-1-{'a' * 32}.json", True),
        (f"bg-2-{'b' * 32}.json", True),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"login": "Root;rm"},
        {"report_id": "xyz"},
        {"at": -1},
        {"at": True},
        {"stage": "shell"},
        {"connection": "1:2:3"},
    ],
)
def test_invalid_reports_are_not_written(spool_dir, bad):
    with pytest.raises(ValueError):
        spool.write(str(spool_dir), report(1, **bad))
    assert os.listdir(spool_dir) == []


# -- delivery (break_glass.flush) against a real HTTP server ----------------------


@pytest.fixture
def flusher(spool_dir, fault, sink):
    """(config, client, log) for flush(): the spool above, the fault server as the service."""
    from jit_hooks.host.login.client import HookClient
    from jit_hooks.host.login.config import parse_config
    from jit_hooks.host.login.log import HookLog

    config = parse_config(
        {
            "service": {"urls": [fault.url], "token_file": "/nonexistent/token"},
            "state": {"spool_dir": str(spool_dir)},
        },
        path="/etc/jit-hooks/jit-hooks.toml",
    )
    client = HookClient(config, token="jith_" + "x" * 43)
    return config, client, HookLog("jit-hooks-enforce", str(sink.path))


def test_flush_delivers_oldest_first_and_removes_only_what_was_taken(spool_dir, fault, flusher):
    from jit_hooks.host.login import break_glass

    config, client, log = flusher
    for n in (2, 1):
        spool.write(str(spool_dir), report(n))
    fault.fault, fault.status = "status", 503
    assert break_glass.flush(config, log, client=client) == (0, 0, 2)
    assert len(os.listdir(spool_dir)) == 2  # the service did not take them: kept

    fault.fault, fault.status, fault.answer = "ok", 200, {"recorded": True}
    assert break_glass.flush(config, log, client=client) == (2, 0, 0)
    assert os.listdir(spool_dir) == []
    sent = [r.json() for r in fault.requests if r.path.endswith("/break-glass")]
    assert [(b["report_id"], b["at"]) for b in sent[-2:]] == [
        (f"{1:032x}", 1_700_000_001),
        (f"{2:032x}", 1_700_000_002),
    ]


def test_one_flusher_at_a_time(spool_dir, fault, flusher):
    import fcntl

    from jit_hooks.host.login import break_glass

    config, client, log = flusher
    spool.write(str(spool_dir), report(1))
    fault.answer = {"recorded": True}
    held = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert break_glass.flush(config, log, client=client) == (0, 0, 0)
        assert fault.requests == [] and len(os.listdir(spool_dir)) == 1
    finally:
        os.close(held)
    assert break_glass.flush(config, log, client=client) == (1, 0, 0)
