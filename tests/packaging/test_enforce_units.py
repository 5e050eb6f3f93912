"""The enforce timer and service the host package ships: they verify, and match the docs."""

from __future__ import annotations

from tests.packaging.conftest import REPO, exposure, needs_analyze, verify_units

UNITS = REPO / "packaging/host/lib/systemd/system"
NAMES = ("jit-hooks-enforce.service", "jit-hooks-enforce.timer")


@needs_analyze
def test_units_verify_and_are_hardened(tmp_path):
    jit_hooks = REPO / ".venv/bin/jit-hooks"
    for name in NAMES:
        text = (UNITS / name).read_text()
        # verify checks that ExecStart binaries exist: point at this checkout's venv.
        (tmp_path / name).write_text(text.replace("/usr/bin/jit-hooks", str(jit_hooks)))
    verify_units(*(tmp_path / n for n in NAMES), mention=str(tmp_path))
    # Root that signals other users' processes; everything else is locked down.
    assert exposure(tmp_path / NAMES[0]) <= 3.5


def test_units_run_enforce_once_every_30s_and_are_installed_disabled():
    service = (UNITS / NAMES[0]).read_text()
    timer = (UNITS / NAMES[1]).read_text()
    assert "ExecStart=/usr/bin/jit-hooks enforce --once\n" in service
    assert "Type=oneshot" in service
    # It delivers and removes spooled break-glass reports: the spool is writable to it.
    assert "\nReadWritePaths=-/var/spool/jit-hooks\n" in service
    tmpfiles = (REPO / "packaging/host/usr/lib/tmpfiles.d/jit-hooks.conf").read_text()
    assert "d /var/spool/jit-hooks 0700 jit-hooks jit-hooks -\n" in tmpfiles
    assert "OnUnitActiveSec=30s" in timer and "WantedBy=timers.target" in timer
    install = (REPO / "debian/jit-hooks.install").read_text()
    for name in NAMES:
        assert f"packaging/host/lib/systemd/system/{name} lib/systemd/system/" in install
    assert "dh_installsystemd --no-enable --no-start" in (REPO / "debian/rules").read_text()
