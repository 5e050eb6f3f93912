"""Key parsing against keys made by the real ssh-keygen, plus property tests."""

from __future__ import annotations

import base64
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jit_hooks.errors import KeyParseError
from jit_hooks.sshkeys import fingerprint, parse_blob, parse_public_key


def keygen(tmp_path, *args: str) -> tuple[str, str]:
    """Make a key with ssh-keygen; return (public line, fingerprint ssh-keygen prints)."""
    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "me@x", "-f", str(path), *args], check=True)
    line = (tmp_path / "k.pub").read_text()
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path) + ".pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    return line, fp


@pytest.mark.parametrize(
    "args,bits",
    [
        (("-t", "ed25519"), 256),
        (("-t", "ecdsa", "-b", "256"), 256),
        (("-t", "ecdsa", "-b", "384"), 384),
        (("-t", "ecdsa", "-b", "521"), 521),
        (("-t", "rsa", "-b", "2048"), 2048),
    ],
)
def test_real_keys_parse_with_ssh_keygen_fingerprint(tmp_path, args, bits):
    line, fp = keygen(tmp_path, *args)
    key = parse_public_key(line)
    assert key.fingerprint == fp
    assert key.bits == bits
    assert key.comment == "me@x"
    assert key.line() == " ".join(line.split()[:2])


def test_short_rsa_refused(tmp_path):
    line, _ = keygen(tmp_path, "-t", "rsa", "-b", "1024")
    with pytest.raises(KeyParseError, match="1024 bits"):
        parse_public_key(line)


def _wire(*parts: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(p)) + p for p in parts)).decode()


def test_security_keys_accepted():
    blob = _wire(b"sk-ssh-ed25519@openssh.com", b"\x01" * 32, b"ssh:")
    key = parse_blob("sk-ssh-ed25519@openssh.com", blob)
    assert key.fingerprint == fingerprint(blob)
    point = b"\x04" + b"\x02" * 64
    blob = _wire(b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", point, b"ssh:")
    assert parse_blob("sk-ecdsa-sha2-nistp256@openssh.com", blob).bits == 256


@pytest.mark.parametrize(
    "line,message",
    [
        ("", "expected"),
        ("ssh-ed25519", "expected"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unsupported"),
        ('command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA', "unsupported"),
        ("ssh-ed25519 !!!notbase64!!!", "base64"),
        ("ssh-ed25519 " + _wire(b"ssh-rsa", b"\x01", b"\x01"), "does not match"),
        ("ssh-ed25519 " + _wire(b"ssh-ed25519", b"\x01" * 31), "32 bytes"),
        ("ssh-ed25519 " + _wire(b"ssh-ed25519", b"\x01" * 32, b"x"), "trailing"),
        ("ecdsa-sha2-nistp256 " + _wire(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04"), "curve"),
        ("ssh-ed25519 AAAA\nssh-ed25519 AAAA", "single line"),
    ],
)
def test_bad_keys_refused_with_reason(line, message):
    with pytest.raises(KeyParseError, match=message):
        parse_public_key(line)


def test_comment_is_sanitised():
    blob = _wire(b"ssh-ed25519", b"\x07" * 32)
    key = parse_public_key(f"ssh-ed25519 {blob} evil\x1b[31m\u202e comment")
    assert key.comment == "evil[31m comment"
    assert all(" " <= c <= "~" for c in key.comment)


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text):
    try:
        key = parse_public_key(text)
    except KeyParseError:
        return
    assert key.fingerprint.startswith("SHA256:")


@given(st.binary(max_size=200))
def test_arbitrary_blobs_never_crash(raw):
    try:
        key = parse_blob("ssh-ed25519", base64.b64encode(raw).decode() or "AAAA")
    except KeyParseError:
        return
    # Only a well-formed ed25519 blob may get through.
    assert len(raw) == 4 + 11 + 4 + 32 and key.bits == 256
