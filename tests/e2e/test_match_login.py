"""Live: an admin's `Match User` block cannot turn password logins back on (review, HIGH).

Real sshd, real ssh password login, real service: while alice holds an approval for the
login account, a Match block in the main sshd_config re-enabling passwords for that
account does not let a password in (the drop-in's closing `Match all` wins).
"""

from tests.e2e.conftest import PASSWORD
from tests.e2e.test_enable_login import enabled_world, jit_hooks, restart  # noqa: F401


def test_match_user_block_does_not_reopen_password_logins(enabled_world):  # noqa: F811
    w = enabled_world
    with (w.box.root / "sshd_config").open("a") as f:
        f.write(f"Match User {w.login}\n    PasswordAuthentication yes\n")
    r = jit_hooks(w, "enable", "--no-reload")
    assert r.returncode == 0, r.stderr
    restart(w)
    w.approve(w.request("alice"))
    r = w.box.ssh_password(w.login, PASSWORD, "echo ran-ok")
    assert r.returncode != 0 and "ran-ok" not in r.stdout
    assert f"Accepted password for {w.login}" not in w.box.log_text()
