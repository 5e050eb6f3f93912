"""The frames the thin hook clients (thin.py) and jit-hooksd (daemon.py) exchange.

Imports nothing: thin.py runs under ``python3 -IS`` with ``_socket`` only, and
loads this module on its fast path. All lengths are unsigned 32-bit big-endian.

    request: b"JHQ1" LEN FIELD... with FIELD = LEN BYTES:
             mode, environ (raw /proc/self/environ; empty for the AKC), argv[1:]...
    answer:  b"JHA1" STATUS(1 byte: 0, 1 or 2) LEN STDOUT, then the helper closes.
    refusal: b"JHR1" LEN REASON (ASCII): the helper ran no hook (it is at its cap);
             the client denies and logs ``error=helper_REASON``.
"""

REQUEST_MAGIC = b"JHQ1"
ANSWER_MAGIC = b"JHA1"
REFUSAL_MAGIC = b"JHR1"
MAX_REQUEST = 256 * 1024
MAX_STDOUT = 64 * 1024
MAX_ARGS = 64
MAX_REASON = 64
STATUSES = (0, 1, 2)
MODES = ("authorized-keys", "pam-account", "pam-session")


class Garbled(Exception):
    """Raised when bytes are not a well-formed frame; ``args[0]`` is a short reason."""


class Refusal(Garbled):
    """Raised when the helper sent a refusal frame; ``args[0]`` is ``helper_REASON``."""


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def encode_request(mode: str, argv: list, environ: bytes) -> bytes:
    """The request frame; ValueError if it would be over MAX_REQUEST / MAX_ARGS."""
    if len(argv) > MAX_ARGS:
        raise ValueError("too many arguments")
    parts = [_field(mode.encode("ascii")), _field(environ)]
    parts += [_field(a.encode("utf-8", "surrogateescape")) for a in argv]
    payload = b"".join(parts)
    if len(payload) > MAX_REQUEST:
        raise ValueError("request too large")
    return REQUEST_MAGIC + _field(payload)


def request_size(head: bytes) -> int:
    """Payload length announced by the 8-byte request head; Garbled if not one."""
    if len(head) != 8 or head[:4] != REQUEST_MAGIC:
        raise Garbled("request_garbled")
    size = int.from_bytes(head[4:], "big")
    if size > MAX_REQUEST:
        raise Garbled("request_oversize")
    return size


def decode_request(payload: bytes) -> tuple:
    """(mode, raw environ, argv as bytes) of a request payload; Garbled if malformed."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(payload):
        if pos + 4 > len(payload) or len(fields) > MAX_ARGS + 2:
            raise Garbled("request_garbled")
        n = int.from_bytes(payload[pos : pos + 4], "big")
        if pos + 4 + n > len(payload):
            raise Garbled("request_garbled")
        fields.append(payload[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if len(fields) < 2:
        raise Garbled("request_garbled")
    mode = fields[0].decode("ascii", "replace")
    if mode not in MODES:
        raise Garbled("request_bad_mode")
    return mode, fields[1], fields[2:]


def encode_answer(status: int, stdout: bytes) -> bytes:
    if status not in STATUSES or len(stdout) > MAX_STDOUT:
        raise ValueError("answer out of range")
    return ANSWER_MAGIC + bytes((status,)) + _field(stdout)


def encode_refusal(reason: str) -> bytes:
    data = reason.encode("ascii")
    if len(data) > MAX_REASON or not data.isalnum():
        raise ValueError("refusal reason out of range")
    return REFUSAL_MAGIC + _field(data)


def decode_answer(data: bytes) -> tuple:
    """(status, stdout) of an answer frame, checked strictly; raises Garbled (Refusal)."""
    if data[:4] == REFUSAL_MAGIC:
        size = int.from_bytes(data[4:8], "big")
        reason = data[8:]
        if len(data) < 8 or size != len(reason) or not reason.isalnum():
            raise Garbled("bad refusal")
        raise Refusal("helper_" + reason.decode("ascii"))
    if len(data) < 9 or data[:4] != ANSWER_MAGIC:
        raise Garbled("bad answer header")
    status = data[4]
    size = int.from_bytes(data[5:9], "big")
    if status not in STATUSES:
        raise Garbled("bad status")
    if size > MAX_STDOUT or len(data) != 9 + size:
        raise Garbled("bad answer length")
    return status, data[9:]
