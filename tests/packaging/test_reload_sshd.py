"""reload_sshd signals only a process whose executable is sshd (review finding 7).

A real process that renamed itself "sshd" (/proc/PID/comm, which any process may
change) is named by the root's PidFile, as a stale pid file would after pid reuse.
"""

import subprocess
import sys

from jit_hooks.host.admin import sshd_probe
from jit_hooks.host.admin.layout import Layout
from tests.packaging.conftest import sshd_root  # noqa: F401 - fixture

FAKE = (
    "import time\n"
    "open('/proc/self/comm', 'w').write('sshd')\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def test_process_named_sshd_is_not_signalled(sshd_root):  # noqa: F811
    root = sshd_root
    p = subprocess.Popen([sys.executable, "-c", FAKE], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        assert open(f"/proc/{p.pid}/comm").read().strip() == "sshd"
        (root.path / "run/sshd.pid").write_text(f"{p.pid}\n")
        out = sshd_probe.reload_sshd(Layout(root=str(root.path)))
        assert "not sshd: not reloaded" in out, out
        # SIGHUP would have ended it (python's default action).
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_dead_pid_is_not_running(sshd_root):  # noqa: F811
    root = sshd_root
    p = subprocess.Popen(["true"])
    p.wait()
    (root.path / "run/sshd.pid").write_text(f"{p.pid}\n")
    out = sshd_probe.reload_sshd(Layout(root=str(root.path)))
    assert out.startswith("sshd is not running"), out
