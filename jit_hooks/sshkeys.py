"""Parse and validate OpenSSH public keys; compute SHA256 fingerprints (stdlib only)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import NamedTuple

from jit_hooks.errors import KeyParseError
from jit_hooks.protocol import KEY_BLOB_RE, KEY_TYPES

MIN_RSA_BITS = 2048
MAX_COMMENT_LEN = 100

# curve name inside the blob, and the length of an uncompressed point (0x04||X||Y)
_ECDSA_CURVES = {
    "nistp256": 65,
    "nistp384": 97,
    "nistp521": 133,
}


# A NamedTuple rather than a frozen dataclass: importing dataclasses pulls in
# inspect, ~10 ms of every hook process's start-up (bench P2).
class PublicKey(NamedTuple):
    key_type: str
    blob: str  # canonical base64, as in an authorized_keys line
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it
    bits: int
    comment: str  # sanitised: printable ASCII only, may be ""

    def line(self) -> str:
        """The key as an authorized_keys line without comment or options."""
        return f"{self.key_type} {self.blob}"


def fingerprint(blob: bytes | str) -> str:
    """SHA256 fingerprint of a raw or base64 key blob, as ssh-keygen prints it."""
    raw = _b64decode(blob) if isinstance(blob, str) else blob
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(line: str) -> PublicKey:
    """Parse one ``TYPE BASE64 [COMMENT]`` line; raise KeyParseError if it is not a usable key.

    Lines with options (``command=... ssh-ed25519 ...``) are refused: options
    are decided by policy, never taken from what a user uploads.
    """
    if not isinstance(line, str):
        raise KeyParseError("public key must be a string")
    if "\n" in line.strip() or "\r" in line or "\x00" in line:
        raise KeyParseError("public key must be a single line")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise KeyParseError("expected 'TYPE BASE64 [COMMENT]'")
    key_type, blob_b64 = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        raise KeyParseError(f"unsupported key type {_printable(key_type)[:40]!r}")
    return parse_blob(key_type, blob_b64, comment=parts[2] if len(parts) > 2 else "")


def parse_blob(key_type: str, blob_b64: str, *, comment: str = "") -> PublicKey:
    """Validate a key given as sshd's %t/%k pair (type and base64 blob)."""
    if key_type not in KEY_TYPES:
        raise KeyParseError(f"unsupported key type {_printable(key_type)[:40]!r}")
    if not KEY_BLOB_RE.match(blob_b64):
        raise KeyParseError("key data is not valid base64")
    raw = _b64decode(blob_b64)
    bits = _check_wire_format(key_type, raw)
    return PublicKey(
        key_type=key_type,
        blob=base64.b64encode(raw).decode(),
        fingerprint=fingerprint(raw),
        bits=bits,
        comment=_printable(comment)[:MAX_COMMENT_LEN],
    )


def _b64decode(data: str) -> bytes:
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise KeyParseError("key data is not valid base64") from e


def _printable(text: str) -> str:
    return "".join(c for c in text if " " <= c <= "~").strip()


class _Reader:
    """Reads SSH wire-format strings (uint32 length + bytes)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def string(self) -> bytes:
        if self.pos + 4 > len(self.data):
            raise KeyParseError("key data is truncated")
        (n,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        if n > len(self.data) - self.pos:
            raise KeyParseError("key data is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise KeyParseError("key data has trailing bytes")


def _check_wire_format(key_type: str, raw: bytes) -> int:
    """Check the blob really is a key of ``key_type``; return its size in bits."""
    r = _Reader(raw)
    if r.string() != key_type.encode():
        raise KeyParseError("key type does not match key data")
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        if len(r.string()) != 32:
            raise KeyParseError("ed25519 key must be 32 bytes")
        bits = 256
    elif key_type == "ssh-rsa":
        e = int.from_bytes(r.string(), "big")
        n = int.from_bytes(r.string(), "big")
        bits = n.bit_length()
        if e < 3 or e % 2 == 0:
            raise KeyParseError("RSA public exponent is invalid")
        if bits < MIN_RSA_BITS:
            raise KeyParseError(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} required")
    else:  # ecdsa-sha2-<curve> and sk-ecdsa-sha2-nistp256@openssh.com
        curve = r.string().decode("ascii", "replace")
        expected = key_type.split("@")[0].rsplit("-", 1)[1]
        if curve != expected or curve not in _ECDSA_CURVES:
            raise KeyParseError("ECDSA curve does not match key type")
        point = r.string()
        if len(point) != _ECDSA_CURVES[curve] or point[0] != 4:
            raise KeyParseError("ECDSA point is malformed")
        bits = int(curve[5:])
    if key_type.startswith("sk-"):
        application = r.string()
        if not application.startswith(b"ssh:"):
            raise KeyParseError("security key application must start with 'ssh:'")
    r.end()
    return bits
