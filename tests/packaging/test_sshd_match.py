"""Admin `Match` blocks cannot hand passwords or standing keys back (review finding, HIGH).

Real `jit-hooks enable`/`status` on a Debian-shaped root, and the real /usr/sbin/sshd -T
asked about the clients the Match block matches (not the made-up probe client).
"""

import pytest

pytestmark = pytest.mark.usefixtures("hook_user")


HIT = "user=alice,host=x,addr=10.1.2.3"


@pytest.mark.parametrize("match", ["Match Address 10.0.0.0/8", "Match User alice"])
def test_match_block_after_the_dropin_loses(enabled_root, match):
    root = enabled_root
    with root.sshd_config.open("a") as f:
        f.write(
            f"{match}\n    PasswordAuthentication yes\n    KbdInteractiveAuthentication yes\n"
            "    AuthorizedKeysFile .ssh/authorized_keys\n    AuthorizedKeysCommand none\n"
        )
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    assert root.run("status").returncode == 0
    hit = root.sshd_T(HIT)
    assert hit["passwordauthentication"] == "no"
    assert hit["kbdinteractiveauthentication"] == "no"
    assert hit["authorizedkeysfile"] == "none"
    assert hit["authorizedkeyscommand"].split()[0].endswith("/jit-authorized-keys")
    # Break-glass (root) still reads its own file, without the hook command.
    bg = root.sshd_T("user=root,host=x,addr=10.1.2.3")
    assert bg["authorizedkeysfile"] == ".ssh/authorized_keys .ssh/authorized_keys2"
    assert bg["authorizedkeyscommand"] == "none"


def test_match_block_read_before_the_dropin_is_refused(enabled_root):
    root = enabled_root
    early = root.path / "etc/ssh/sshd_config.d/05-admin.conf"
    early.write_text("# admin's\nMatch Address 10.0.0.0/8\n    PasswordAuthentication yes\n")
    r = root.run("enable", "--no-reload")
    assert r.returncode != 0
    assert f"{early}:3" in r.stderr and "PasswordAuthentication yes" in r.stderr
    assert not root.dropin.exists()  # rolled back
    early.unlink()
    assert root.run("enable", "--no-reload").returncode == 0
    early.write_text("Match User alice\n    AuthorizedKeysFile .ssh/authorized_keys\n")
    # What the scan claims: sshd really would give alice her standing keys back.
    assert root.sshd_T(HIT)["authorizedkeysfile"] == ".ssh/authorized_keys"
    st = root.run("status")
    assert st.returncode != 0
    assert f"{early}:2" in st.stdout and "FAIL" in st.stdout


def test_certificate_keyword_in_any_match_block_is_refused(enabled_root):
    root = enabled_root
    with root.sshd_config.open("a") as f:
        f.write(f"Match Group admins\n    TrustedUserCAKeys {root.path}/etc/ssh/ca.pub\n")
    r = root.run("enable", "--no-reload")
    assert r.returncode != 0
    assert f"{root.sshd_config}:11" in r.stderr and "TrustedUserCAKeys" in r.stderr


def test_closing_match_blocks_are_accepted(enabled_root):
    root = enabled_root
    (root.path / "etc/ssh/sshd_config.d/05-admin.conf").write_text(
        "Match User guest\n    PasswordAuthentication no\n    AuthorizedKeysCommand none\n"
    )
    r = root.run("enable", "--no-reload")
    assert r.returncode == 0, r.stderr
