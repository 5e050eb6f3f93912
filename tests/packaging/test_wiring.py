"""The PAM block and drop-in rendering of jit_hooks.host.admin.wiring (pure text logic)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jit_hooks.host.admin import pamconf, sshd_dropin
from jit_hooks.host.admin.layout import Layout, WiringError

LAYOUT = Layout(root="/", bin_dir="/usr/bin")
DEBIAN_PAM = "@include common-auth\naccount required pam_nologin.so\n@include common-account\n"


def test_dropin_names_hooks_and_break_glass():
    text = sshd_dropin.render_dropin(LAYOUT, {"breakglass", "admin2"})
    assert "AuthorizedKeysCommand /usr/bin/jit-authorized-keys %u %f %t %k\n" in text
    assert "AuthorizedKeysCommandUser jit-hooks\n" in text
    assert "AuthorizedKeysFile none\n" in text
    bg = (
        "Match User admin2,breakglass\n    AuthorizedKeysFile .ssh/authorized_keys "
        ".ssh/authorized_keys2\n    AuthorizedKeysCommand none\n"
    )
    assert bg in text
    # The closing Match all comes after it (the break-glass block's values win for them).
    tail = text.split(bg)[1]
    assert [ln for ln in tail.splitlines() if ln.startswith("Match")] == ["Match all"]
    assert "    AuthorizedKeysFile none\n" in tail and "    PasswordAuthentication no\n" in tail


def test_non_default_config_is_passed_to_every_hook():
    layout = Layout(root="/srv/r", bin_dir="/opt/bin")
    dropin = sshd_dropin.render_dropin(layout, set())
    pam = pamconf.render_pam_block(layout, set())
    arg = "--config /srv/r/etc/jit-hooks/jit-hooks.toml"
    assert f"/opt/bin/jit-authorized-keys {arg} %u %f %t %k" in dropin
    assert f"/opt/bin/jit-pam-account {arg} --open-session\n" in pam
    assert pam.count(f"/opt/bin/jit-pam-session {arg}\n") == 1  # close only
    assert "Match User" not in dropin
    assert f"Match all\n    AuthorizedKeysCommand /opt/bin/jit-authorized-keys {arg}" in dropin


def test_pam_block_keeps_break_glass_out_of_reach_of_the_hooks():
    block = pamconf.render_pam_block(LAYOUT, {"breakglass"})
    lines = [ln for ln in block.splitlines() if not ln.startswith("#")]
    assert lines[:4] == [
        "account [success=2 default=ignore] pam_succeed_if.so quiet user notin breakglass",
        "account optional pam_exec.so quiet stdout /usr/bin/jit-pam-account --open-session",
        "account [default=1] pam_permit.so",
        "account required pam_exec.so quiet stdout /usr/bin/jit-pam-account --open-session",
    ]


@pytest.mark.parametrize(
    "original",
    [DEBIAN_PAM, "", "no final newline", "a\n\n", DEBIAN_PAM + "# trailing comment"],
)
def test_pam_block_round_trip_is_byte_exact(original):
    block = pamconf.render_pam_block(LAYOUT, {"root"})
    enabled = pamconf.add_pam_block(original, block)
    assert pamconf.pam_block_body(enabled) == block
    # Enabling again (same or other break-glass list) replaces, never stacks.
    again = pamconf.add_pam_block(enabled, pamconf.render_pam_block(LAYOUT, {"x"}))
    assert again.count(pamconf.PAM_BEGIN) == 1
    assert pamconf.add_pam_block(again, block) == enabled
    assert pamconf.remove_pam_block(enabled) == original
    assert pamconf.remove_pam_block(again) == original
    assert pamconf.remove_pam_block(original) == original


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_round_trip_any_text_without_markers(original):
    if "jit-hooks" in original:
        return
    block = pamconf.render_pam_block(LAYOUT, set())
    assert pamconf.remove_pam_block(pamconf.add_pam_block(original, block)) == original


@pytest.mark.parametrize(
    "broken",
    [
        "# BEGIN jit-hooks: x\naccount required pam_exec.so /usr/bin/jit-pam-account\n",
        "# END jit-hooks\n",
        "# BEGIN jit-hooks\n# END jit-hooks\n# BEGIN jit-hooks\n# END jit-hooks\n",
    ],
)
def test_unbalanced_markers_are_refused(broken):
    with pytest.raises(WiringError, match="markers"):
        pamconf.remove_pam_block(broken)


# /etc/pam.d/sshd as Debian 12's openssh-server ships it (unmodified copy).
DEBIAN12_PAM = (Path(__file__).parents[1] / "data" / "debian12-pam-sshd").read_text()


def _stack(text: str, kind: str) -> list[str]:
    """The non-comment lines of one PAM stack (and its @include), in file order."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and (words[0].lstrip("-") == kind or words[:2] == ["@include", f"common-{kind}"]):
            out.append(line)
    return out


@pytest.mark.parametrize("break_glass", [set(), {"breakglass"}])
def test_block_precedes_debian_account_and_session_stacks(break_glass):
    block = pamconf.render_pam_block(LAYOUT, break_glass)
    enabled = pamconf.add_pam_block(DEBIAN12_PAM, block)
    # Inside the file exactly once, after the auth stack, before everything else.
    assert enabled.count(block) == 1
    assert enabled.index("@include common-auth") < enabled.index(block)
    assert enabled.index(block) < enabled.index("account    required     pam_nologin.so")
    # Our account lines come before common-account (whose new_authtok_reqd=done
    # would skip them) and our session lines before pam_env user_readenv=1 (which
    # loads the user's ~/.pam_environment into the environment hooks get).
    account = _stack(enabled, "account")
    session = _stack(enabled, "session")
    ours_a = [i for i, ln in enumerate(account) if "jit-pam-account" in ln]
    ours_s = [i for i, ln in enumerate(session) if "jit-pam-session" in ln]
    assert max(ours_a) < account.index("@include common-account")
    env = next(i for i, ln in enumerate(session) if "user_readenv=1" in ln)
    assert max(ours_s) < env
    assert max(ours_s) < session.index("@include common-session")
    if break_glass:
        # The jumps are relative: the lines they skip are our own, contiguous ones.
        assert account[: ours_a[-1] + 1] == [
            ln for ln in block.splitlines() if ln.startswith("account")
        ]
        assert session[: ours_s[-1] + 1] == [
            ln for ln in block.splitlines() if ln.startswith("session")
        ]
    assert pamconf.remove_pam_block(enabled) == DEBIAN12_PAM
    assert pamconf.add_pam_block(enabled, block) == enabled


@pytest.mark.parametrize(
    ("original", "expect_before"),
    [
        ("auth required pam_unix.so\n-session optional pam_systemd.so\n", "-session optional"),
        ("auth x\n  @include common-session-noninteractive\n", "  @include common-session"),
        ("auth x\nSESSION required pam_env.so\n", "SESSION required"),
        ("# account required pam_x.so\naccounting\nsession required a.so\n", "session required"),
    ],
)
def test_block_goes_before_the_first_account_or_session_line(original, expect_before):
    block = pamconf.render_pam_block(LAYOUT, set())
    enabled = pamconf.add_pam_block(original, block)
    assert block + expect_before in enabled
    assert pamconf.remove_pam_block(enabled) == original


def test_block_appended_by_older_versions_is_moved_into_place():
    block = pamconf.render_pam_block(LAYOUT, {"breakglass"})
    old = DEBIAN12_PAM + block  # where versions before this one put it
    assert pamconf.add_pam_block(old, block) == pamconf.add_pam_block(DEBIAN12_PAM, block)
    # Also when the old block carried the "added the newline" marker.
    unterminated = DEBIAN12_PAM.rstrip("\n")
    old_marked = unterminated + "\n" + block.replace("\n", pamconf._ADDED_NEWLINE + "\n", 1)
    assert pamconf.remove_pam_block(old_marked) == unterminated
    moved = pamconf.add_pam_block(old_marked, block)
    assert moved == pamconf.add_pam_block(unterminated, block)
    assert pamconf.remove_pam_block(moved) == unterminated
