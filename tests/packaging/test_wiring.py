"""The PAM block and drop-in rendering of jit_hooks.host.wiring (pure text logic)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jit_hooks.host import wiring

LAYOUT = wiring.Layout(root="/", bin_dir="/usr/bin")
DEBIAN_PAM = "@include common-auth\naccount required pam_nologin.so\n@include common-account\n"


def test_dropin_names_hooks_and_break_glass():
    text = wiring.render_dropin(LAYOUT, {"breakglass", "admin2"})
    assert "AuthorizedKeysCommand /usr/bin/jit-authorized-keys %u %f %t %k\n" in text
    assert "AuthorizedKeysCommandUser jit-hooks\n" in text
    assert "AuthorizedKeysFile none\n" in text
    assert text.endswith(
        "Match User admin2,breakglass\n    AuthorizedKeysFile .ssh/authorized_keys "
        ".ssh/authorized_keys2\n    AuthorizedKeysCommand none\n"
    )


def test_non_default_config_is_passed_to_every_hook():
    layout = wiring.Layout(root="/srv/r", bin_dir="/opt/bin")
    dropin = wiring.render_dropin(layout, set())
    pam = wiring.render_pam_block(layout, set())
    arg = "--config /srv/r/etc/jit-hooks/jit-hooks.toml"
    assert f"/opt/bin/jit-authorized-keys {arg} %u %f %t %k" in dropin
    assert f"/opt/bin/jit-pam-account {arg}\n" in pam
    assert pam.count(f"/opt/bin/jit-pam-session {arg}\n") == 2
    assert "Match" not in dropin


def test_pam_block_keeps_break_glass_out_of_reach_of_the_hooks():
    block = wiring.render_pam_block(LAYOUT, {"breakglass"})
    lines = [ln for ln in block.splitlines() if not ln.startswith("#")]
    assert lines[:4] == [
        "account [success=2 default=ignore] pam_succeed_if.so quiet user notin breakglass",
        "account optional pam_exec.so quiet stdout /usr/bin/jit-pam-account",
        "account [default=1] pam_permit.so",
        "account required pam_exec.so quiet stdout /usr/bin/jit-pam-account",
    ]


@pytest.mark.parametrize(
    "original",
    [DEBIAN_PAM, "", "no final newline", "a\n\n", DEBIAN_PAM + "# trailing comment"],
)
def test_pam_block_round_trip_is_byte_exact(original):
    block = wiring.render_pam_block(LAYOUT, {"root"})
    enabled = wiring.add_pam_block(original, block)
    assert wiring.pam_block_body(enabled) == block
    # Enabling again (same or other break-glass list) replaces, never stacks.
    again = wiring.add_pam_block(enabled, wiring.render_pam_block(LAYOUT, {"x"}))
    assert again.count(wiring.PAM_BEGIN) == 1
    assert wiring.add_pam_block(again, block) == enabled
    assert wiring.remove_pam_block(enabled) == original
    assert wiring.remove_pam_block(again) == original
    assert wiring.remove_pam_block(original) == original


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_round_trip_any_text_without_markers(original):
    if "jit-hooks" in original:
        return
    block = wiring.render_pam_block(LAYOUT, set())
    assert wiring.remove_pam_block(wiring.add_pam_block(original, block)) == original


@pytest.mark.parametrize(
    "broken",
    [
        "# BEGIN jit-hooks: x\naccount required pam_exec.so /usr/bin/jit-pam-account\n",
        "# END jit-hooks\n",
        "# BEGIN jit-hooks\n# END jit-hooks\n# BEGIN jit-hooks\n# END jit-hooks\n",
    ],
)
def test_unbalanced_markers_are_refused(broken):
    with pytest.raises(wiring.WiringError, match="markers"):
        wiring.remove_pam_block(broken)
