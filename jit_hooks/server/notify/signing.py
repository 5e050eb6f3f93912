"""HMAC-SHA256 signatures of webhook bodies: ``X-Jit-Signature: t=<unix time>,v1=<hex>``.

The MAC covers ``<t>.<body>`` (as GitHub's and Stripe's do), so a captured
delivery cannot be replayed outside the receiver's time window nor its body
changed. docs/server.md shows a receiver's check.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Jit-Signature"
TOLERANCE = 300  # seconds a receiver accepts between the signature's time and its clock


class BadSignature(ValueError):
    """Raised when a signature header is malformed, stale or does not match."""


def mac(secret: str, timestamp: int, body: bytes) -> str:
    msg = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp``."""
    return f"t={int(timestamp)},v1={mac(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = TOLERANCE) -> int:
    """Check a header against ``body``; return its timestamp or raise BadSignature."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            raise BadSignature("malformed signature header")
        parts.setdefault(k, []).append(v)
    try:
        (t_raw,) = parts["t"]
        t = int(t_raw)
    except (KeyError, ValueError):
        raise BadSignature("missing or bad timestamp") from None
    if abs(now - t) > tolerance:
        raise BadSignature("timestamp outside the replay window")
    expected = mac(secret, t, body)
    # Any v1 may match: a sender rotating its key sends one per key.
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise BadSignature("signature does not match")
    return t
