"""`jit-hooks enable/disable/status` on a throw-away root: real sshd -t, real service.

The root's sshd_config is Debian's layout bound to 127.0.0.1 at a free port and
never touches the machine's own sshd, /etc/ssh or /etc/pam.d.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time

import pytest

from jit_hooks.host.admin import pamconf
from tests.packaging.conftest import Root, write_host_config

pytestmark = pytest.mark.usefixtures("hook_user")


def sshd_T(root: Root, user: str) -> dict[str, str]:
    return root.sshd_T(f"user={user},host=localhost,addr=127.0.0.1")


def test_enable_disable_round_trip(enabled_root):
    root = enabled_root
    before = root.snapshot()

    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert "enabled:" in r.stdout and "service answers for host web1" in r.stdout
    # sshd itself now resolves the hook settings from the drop-in ...
    eff = sshd_T(root, "alice")
    assert eff["authorizedkeyscommand"].endswith(
        f"jit-authorized-keys --config {root.config} %u %f %t %k"
    )
    assert eff["authorizedkeyscommanduser"] == "jit-hooks"
    assert eff["authorizedkeysfile"] == "none"
    # Key-less logins are off by default, whatever sshd's own default says.
    assert (eff["passwordauthentication"], eff["kbdinteractiveauthentication"]) == ("no", "no")
    # ... except for the break-glass account, which keeps its own keys.
    own_keys = ".ssh/authorized_keys .ssh/authorized_keys2"
    assert sshd_T(root, "root")["authorizedkeysfile"] == own_keys
    assert sshd_T(root, "root")["authorizedkeyscommand"] == "none"
    state = (root.path / "run/jit-hooks").stat()  # created for the AKC's records
    assert (state.st_uid, state.st_mode & 0o777) == (pwd.getpwnam("jit-hooks").pw_uid, 0o700)
    spool = (root.path / "var/spool/jit-hooks").stat()  # for break-glass reports
    assert (spool.st_uid, spool.st_mode & 0o777) == (pwd.getpwnam("jit-hooks").pw_uid, 0o700)
    pam = root.pam.read_text()
    assert "account required pam_exec.so quiet stdout" in pam
    # In front of Debian's account/session stacks (before pam_env reads the user's
    # ~/.pam_environment), everything else unchanged.
    assert pam.index("# BEGIN jit-hooks") < pam.index("account    required     pam_nologin.so")
    assert pam.index("@include common-auth") < pam.index("# BEGIN jit-hooks")
    assert pamconf.remove_pam_block(pam) == before["etc/pam.d/sshd"][0].decode()

    status = root.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "enabled (drop-in current, PAM block current)" in status.stdout
    lines = status_lines(status.stdout)
    # No jit-hooksd in this root: reported, but the hooks work in-process, so not a failure.
    assert lines.pop("helper")[:3] == ("off", "no", "jit-hooksd")
    assert {v[0] for v in lines.values()} == {"ok"}
    assert set(lines) == {
        "config",
        "wiring",
        "sshd config",
        "sshd uses",
        "passwords",
        "break-glass",
        "token",
        "state dir",
        "spool",
        "service",
        "clock skew",
    }

    r = root.run("disable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert "disabled:" in r.stdout
    after = root.snapshot()
    assert after == before  # byte-identical, same modes


def test_drop_in_turns_passwords_off_over_the_main_config(enabled_root):
    """sshd takes a keyword's FIRST value: the drop-in, included at the top, beats the main file."""
    root = enabled_root
    with root.sshd_config.open("a") as f:
        f.write("PasswordAuthentication yes\n")
    assert sshd_T(root, "alice")["passwordauthentication"] == "yes"
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert "passwords: off" in r.stdout
    eff = sshd_T(root, "alice")
    assert (eff["passwordauthentication"], eff["kbdinteractiveauthentication"]) == ("no", "no")
    # Break-glass accounts log in with their own keys, not passwords, either.
    assert sshd_T(root, "root")["passwordauthentication"] == "no"
    r = root.run("disable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert sshd_T(root, "alice")["passwordauthentication"] == "yes"


def test_allow_passwords_warns_and_is_kept_by_status(enabled_root):
    root = enabled_root
    r = root.run("enable", "--no-reload", "--allow-passwords")
    assert r.returncode == 0, r.stderr
    assert "warning: passwords allowed (--allow-passwords)" in r.stderr
    assert "anyone with that account's password gets in" in r.stderr
    assert "PasswordAuthentication" not in root.dropin.read_text()
    assert sshd_T(root, "alice")["passwordauthentication"] == "yes"  # sshd's default
    status = root.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status_lines(status.stdout)
    assert lines["wiring"][:4] == ("ok", "enabled", "(drop-in", "current,")
    assert lines["passwords"][:2] == ("ok", "allowed")
    # enable without the flag turns passwords off again.
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0 and r.stdout.startswith("enabled:"), r.stdout + r.stderr
    assert sshd_T(root, "alice")["passwordauthentication"] == "no"
    assert status_lines(root.run("status").stdout)["passwords"][:2] == ("ok", "off")


def test_an_earlier_drop_in_allowing_passwords_loses(enabled_root):
    """A global value read first would win, but the drop-in's Match all overrides it."""
    root = enabled_root
    early = root.path / "etc/ssh/sshd_config.d/05-passwords.conf"
    early.write_text("PasswordAuthentication yes\n")
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert effective(root)["passwordauthentication"] == "no"


def test_an_earlier_drop_in_turning_pam_off_rolls_back(enabled_root):
    """UsePAM cannot be set in a Match block: an earlier global value wins, enable refuses."""
    root = enabled_root
    (root.path / "etc/ssh/sshd_config.d/05-nopam.conf").write_text("UsePAM no\n")
    assert "rolled back: sshd uses usepam 'no', not 'yes'" in refused(root)


def test_enable_is_idempotent(enabled_root):
    root = enabled_root
    assert root.run("enable", "--no-reload").returncode == 0
    first = root.snapshot()
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert "already enabled" in r.stdout
    assert root.snapshot() == first
    assert root.run("disable", "--no-reload").returncode == 0
    r = root.run("disable", "--no-reload")
    assert r.returncode == 0 and "already disabled" in r.stdout


def test_changed_break_glass_list_rewrites_the_wiring(enabled_root):
    root = enabled_root
    assert root.run("enable", "--no-reload").returncode == 0
    root.config.write_text(root.config.read_text().replace('["root"]', '["root", "daemon"]'))
    status = root.run("status")
    assert status.returncode == 1 and "outdated" in status.stdout
    assert root.run("enable", "--no-reload").returncode == 0
    assert "Match User daemon,root" in root.dropin.read_text()
    assert root.pam.read_text().count("# BEGIN jit-hooks") == 1


def test_enable_moves_a_block_older_versions_appended(enabled_root):
    root = enabled_root
    original = root.pam.read_text()
    assert root.run("enable", "--no-reload").returncode == 0
    current = root.pam.read_text()
    block = pamconf.pam_block_body(current)
    # An upgrade from a version that appended the block after pam_env.
    root.pam.write_text(original + block)
    status = root.run("status")
    assert status.returncode == 1 and "PAM block different" in status.stdout, status.stdout
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert root.pam.read_text() == current
    assert root.run("disable", "--no-reload").returncode == 0
    assert root.pam.read_text() == original


def effective(root: Root) -> dict[str, str]:
    """Real `sshd -T` for an ordinary client of the root's config."""
    return root.sshd_T("user=alice,host=x,addr=10.1.2.3")


def refused(root: Root, *args: str) -> str:
    before = root.snapshot()
    r = root.run("enable", "--no-reload", *args)
    assert r.returncode != 0
    assert root.snapshot() == before, "a refused enable must leave every file as it was"
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jit-hooks: "), r.stderr
    return lines[0]


def test_refuses_without_break_glass_unless_forced(sshd_root, host_service):
    svc, token = host_service
    write_host_config(sshd_root, svc.url, token, [])
    assert "no existing break-glass account" in refused(sshd_root)
    write_host_config(sshd_root, svc.url, token, ["no-such-user-here"])
    assert "(no-such-user-here: no such user)" in refused(sshd_root)
    write_host_config(sshd_root, svc.url, token, [])
    r = sshd_root.run("enable", "--no-reload", "--force")
    assert r.returncode == 0, r.stderr
    assert "Match User" not in sshd_root.dropin.read_text()


def test_refuses_when_service_is_down(enabled_root, host_service):
    svc, _ = host_service
    svc.stop()
    assert "service unreachable (refused)" in refused(enabled_root)


def test_refuses_a_token_of_another_host_or_none(enabled_root, host_service):
    svc, _ = host_service
    root = enabled_root
    root.config.write_text(root.config.read_text() + '[host]\nname = "db1"\n')
    assert "belongs to host 'web1'" in refused(root)
    root.token.write_text("jith_" + "x" * 43 + "\n")  # well-formed, unknown to the service
    assert "service unreachable (http_401)" in refused(root)


def test_refuses_a_token_file_the_hook_user_cannot_read(enabled_root):
    enabled_root.token.chmod(0o600)
    assert "must be mode 0640" in refused(enabled_root)


def test_refuses_missing_hook_commands(enabled_root, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    before = enabled_root.snapshot()
    r = enabled_root.run("enable", "--no-reload", bin_dir=str(empty))
    assert r.returncode == 1 and "jit-authorized-keys is missing" in r.stderr
    assert enabled_root.snapshot() == before


def test_sshd_rejecting_the_result_rolls_back_byte_identical(enabled_root):
    root = enabled_root
    # A config sshd -t rejects: enable writes, sshd refuses, enable puts it all back.
    with open(root.sshd_config, "a") as f:
        f.write("NoSuchKeyword yes\n")
    os.chmod(root.pam, 0o600)  # odd mode, must survive the rollback too
    line = refused(root)
    assert "sshd -t rejects the result, rolled back" in line
    assert not root.dropin.exists()


def test_another_drop_in_winning_rolls_back(enabled_root):
    root = enabled_root
    other = root.path / "etc/ssh/sshd_config.d/00-local.conf"
    other.write_text("AuthorizedKeysFile .ssh/authorized_keys\nExposeAuthInfo no\n")
    # Both lose to the drop-in's Match all.
    assert root.run("enable", "--no-reload").returncode == 0
    got = effective(root)
    assert (got["authorizedkeysfile"], got["exposeauthinfo"]) == ("none", "yes")


def test_config_without_include_rolls_back(enabled_root):
    root = enabled_root
    text = root.sshd_config.read_text().split("\n", 1)[1]  # drop the Include line
    root.sshd_config.write_text(text)
    assert "rolled back: sshd uses authorizedkeyscommand" in refused(root)


def test_pam_lines_outside_the_block_are_refused(enabled_root):
    with open(enabled_root.pam, "a") as f:
        f.write("account required pam_exec.so /usr/bin/jit-pam-account\n")
    assert "outside the jit-hooks block" in refused(enabled_root)


def test_enable_reloads_the_running_sshd(enabled_root):
    """A real sshd started from the root's config gets SIGHUP (and keeps running)."""
    root = enabled_root
    log = root.path / "sshd.log"
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-f", str(root.sshd_config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
    )
    try:
        pidfile = root.path / "run/sshd.pid"
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        r = root.run("enable")
        assert r.returncode == 0, r.stderr
        assert f"reloaded sshd (pid {proc.pid})" in r.stdout
        for _ in range(100):
            if "Received SIGHUP" in log.read_text():
                break
            time.sleep(0.1)
        assert "Received SIGHUP" in log.read_text()
        r = root.run("disable")
        assert r.returncode == 0 and f"reloaded sshd (pid {proc.pid})" in r.stdout
        assert proc.poll() is None, "sshd must survive both reloads"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_status_reports_a_broken_service_and_config(sshd_root, host_service):
    svc, token = host_service
    write_host_config(sshd_root, svc.url, token, ["root"])
    svc.stop()
    r = sshd_root.run("status")
    assert r.returncode == 1
    lines = status_lines(r.stdout)
    assert lines["wiring"][:2] == ("ok", "disabled")
    assert lines["sshd config"][0] == "ok"
    assert lines["token"][0] == "ok"
    assert lines["service"][:2] == ("FAIL", "service")
    sshd_root.config.write_text("[service]\nurls = 3\n")
    r = sshd_root.run("status")
    assert r.returncode == 1
    assert status_lines(r.stdout)["config"][0] == "FAIL" and "service.urls" in r.stdout


def status_lines(out: str) -> dict[str, tuple[str, ...]]:
    """`name: ok|FAIL text` lines -> {name: (ok|FAIL, first word, ...)}."""
    result = {}
    for line in out.splitlines():
        name, _, rest = line.partition(":")
        result[name] = tuple(rest.split())
    return result


def test_refuses_a_state_dir_others_could_plant_records_in(enabled_root):
    state = enabled_root.path / "run/jit-hooks"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    assert "must be a directory owned by jit-hooks, mode 0700" in refused(enabled_root)


def test_refuses_files_the_hook_user_cannot_read(enabled_root):
    # Root may read everything; sshd runs the AKC as jit-hooks, which may not.
    (enabled_root.path / "etc/jit-hooks").chmod(0o700)
    assert "is not readable by jit-hooks" in refused(enabled_root)
