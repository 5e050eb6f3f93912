"""Schema checks of hook API answers: the host trusts no field it did not check."""

from __future__ import annotations

import re
from collections.abc import Mapping

from jit_hooks.errors import BadResponse
from jit_hooks.protocol import (
    ALLOWED_KEY_OPTIONS,
    CONNECTION_RE,
    FINGERPRINT_RE,
    HOST_NAME_RE,
    KEY_BLOB_RE,
    KEY_TYPES,
    LOGIN_RE,
    AuthorizedKey,
    DecisionAnswer,
    PingAnswer,
    SessionActive,
    SessionsAnswer,
    SessionToEnd,
)

MAX_KEYS = 100
MAX_REASON = 200
# Source ranges one grant may be pinned to (the service's policy.MAX_FROM).
MAX_FROM = 16
_CIDR_CHARS = re.compile(r"\A[0-9A-Fa-f.:/]{2,49}\Z")
# Unix seconds between 2000-01-01 and 2200-01-01: anything else is nonsense.
_MIN_TIME, _MAX_TIME = 946684800, 7258118400


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _time(value: object) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and _MIN_TIME <= value <= _MAX_TIME
    )


def sanitize(text: object, limit: int = MAX_REASON) -> str:
    """Printable ASCII only, at most ``limit`` characters (for logs and PAM messages)."""
    if not isinstance(text, str):
        return ""
    return "".join(c for c in text if " " <= c <= "~")[:limit].strip()


def check_key(item: object) -> str | None:
    """Return why a key entry is unusable, or None if every field is as the contract says."""
    if not isinstance(item, dict):
        return "not_an_object"
    key_type, blob, fp = item.get("key_type"), item.get("key"), item.get("fingerprint")
    if not isinstance(key_type, str) or key_type not in KEY_TYPES:
        return "bad_key_type"
    if not isinstance(blob, str) or not KEY_BLOB_RE.match(blob):
        return "bad_key"
    if not isinstance(fp, str) or not FINGERPRINT_RE.match(fp):
        return "bad_fingerprint"
    if not _time(item.get("expires_at")):
        return "bad_expires_at"
    request_id = item.get("request_id")
    if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
        return "bad_request_id"
    options = item.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return "bad_options"
    if any(o not in ALLOWED_KEY_OPTIONS for o in options):
        return "option_not_allowed"
    try:
        check_cidrs(item.get("from_cidrs"))
    except BadResponse:
        return "bad_from"
    return None


def check_cidrs(value: object) -> list[str] | None:
    """The source ranges of a pinned grant, each exactly as ``ipaddress`` writes it; or None.

    They go into a ``from="..."`` key option and decide who may log in: only
    canonical networks pass (no host bits, no /0, no text around them), so
    nothing the service sent reaches sshd unless it re-prints identically.
    """
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FROM:
        raise BadResponse("schema", f"from_cidrs must be a list of 1 to {MAX_FROM} networks")
    import ipaddress  # only for pinned grants (~1 ms)

    for v in value:
        if not isinstance(v, str) or not _CIDR_CHARS.match(v):
            raise BadResponse("schema", "from_cidrs entry is not a network")
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError:
            raise BadResponse("schema", "from_cidrs entry is not a network") from None
        if net.with_prefixlen != v or net.prefixlen == 0:
            raise BadResponse("schema", "from_cidrs entry is not a canonical network")
    return list(value)


def rhost_allowed(rhost: str | None, cidrs: list[str]) -> bool:
    """Whether the remote address (PAM_RHOST) lies in one of the checked ``cidrs``.

    No address, or a name instead of one (sshd's UseDNS), is outside every range.
    """
    import ipaddress

    try:
        addr = ipaddress.ip_address(rhost or "")
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in ipaddress.ip_network(c) for c in cidrs)


def authorized_keys(answer: object) -> list[object]:
    """The raw ``keys`` list of an authorized-keys answer; entries are checked by check_key."""
    if not isinstance(answer, dict) or not isinstance(answer.get("keys"), list):
        raise BadResponse("schema", "expected {'keys': [...]}")
    keys = answer["keys"]
    if len(keys) > MAX_KEYS:
        raise BadResponse("schema", f"more than {MAX_KEYS} keys")
    return keys


def as_key(item: dict) -> AuthorizedKey:
    """Copy the checked fields of a key entry (drops anything unknown)."""
    return AuthorizedKey(
        key_type=item["key_type"],
        key=item["key"],
        fingerprint=item["fingerprint"],
        expires_at=item["expires_at"],
        options=list(item.get("options", [])),
        request_id=item["request_id"],
        from_cidrs=check_cidrs(item.get("from_cidrs")),
    )


def decision(answer: object) -> DecisionAnswer:
    """Check an account/session answer: decision allow|deny, reason, ids."""
    if not isinstance(answer, dict) or answer.get("decision") not in ("allow", "deny"):
        raise BadResponse("schema", "expected a decision of 'allow' or 'deny'")
    request_id = answer.get("request_id")
    expires_at = answer.get("expires_at")
    if request_id is not None and not _is_int(request_id):
        raise BadResponse("schema", "request_id must be an integer or null")
    if expires_at is not None and not _time(expires_at):
        raise BadResponse("schema", "expires_at must be unix seconds or null")
    reason = answer.get("reason", "")
    if not isinstance(reason, str):
        raise BadResponse("schema", "reason must be a string")
    return DecisionAnswer(
        decision=answer["decision"],
        reason=sanitize(reason),
        request_id=request_id,
        expires_at=expires_at,
        from_cidrs=check_cidrs(answer.get("from_cidrs")),
    )


# The parts of a question an answer must echo, and what a valid value looks like
# (an echoed value is logged only if it is valid: never raw service text).
_ECHOED = {
    "host": HOST_NAME_RE,
    "login": LOGIN_RE,
    "fingerprint": FINGERPRINT_RE,
    "connection": CONNECTION_RE,
    # Break-glass reports: the answer must be about this report (and stage).
    "report_id": re.compile(r"\A[0-9a-f]{32}\Z"),
    "stage": re.compile(r"\A[a-z-]{1,32}\Z"),
}
_MISSING = object()


def mismatch(answer: object, asked: Mapping[str, object]) -> tuple[str, str] | None:
    """Which part of the question ``answer`` does not echo, or None if it answers ``asked``.

    ``asked`` is the query as sent. Its ``host`` is the configured host.name: if
    set, the echoed host must be that name; if None, the echo must still name a
    host (the service's name for the token, logged with the decision). Every other
    echoed field of ``asked`` must come back exactly (null for null). The result is
    (field, the answered value if valid, else "invalid"/"missing"): for the log line.
    An answer without any echo (a service older than the echo) is ("echo", "missing").
    """
    if not isinstance(answer, dict) or not any(k in answer for k in _ECHOED):
        return "echo", "missing"
    for field, pattern in _ECHOED.items():
        if field != "host" and field not in asked:
            continue
        got = answer.get(field, _MISSING)
        want = asked.get(field)
        if got is _MISSING:
            return field, "missing"
        if field == "host" and want is None:
            ok = isinstance(got, str) and pattern.match(got) is not None
        else:
            ok = type(got) is type(want) and got == want
        if not ok:
            shown = got if isinstance(got, str) and pattern.match(got) else "invalid"
            return field, "null" if got is None else shown
    return None


def ping(answer: object) -> PingAnswer:
    """Check a ping answer: the host name the token belongs to and the service clock."""
    if not isinstance(answer, dict):
        raise BadResponse("schema", "expected an object")
    host, now = answer.get("host"), answer.get("time")
    if not isinstance(host, str) or not isinstance(now, int) or not _time(now):
        raise BadResponse("schema", "expected {'host': str, 'time': int}")
    return PingAnswer(host=sanitize(host, 253), time=now)


MAX_SESSIONS = 1000
END_REASONS = frozenset({"revoked", "expired", "user_disabled", "not_active"})


def _session_base(item: object) -> dict:
    if not isinstance(item, dict):
        raise BadResponse("schema", "session entry is not an object")
    conn, login = item.get("connection"), item.get("login")
    if not isinstance(conn, str) or not CONNECTION_RE.match(conn):
        raise BadResponse("schema", "session connection is not a connection id")
    if not isinstance(login, str) or not LOGIN_RE.match(login):
        raise BadResponse("schema", "session login is not a login name")
    request_id = item.get("request_id")
    if request_id is not None and not _is_int(request_id):
        raise BadResponse("schema", "session request_id must be an integer or null")
    return item


def sessions(answer: object, host: str | None = None) -> SessionsAnswer:
    """Check a sessions answer; any bad entry rejects the whole answer (nothing is ended).

    The answer must name the host it lists (its echo): ``host`` (the config's
    host.name) if set, else any valid name. Another host's list is refused
    whole (``mismatch``): its connection ids mean nothing here.
    """
    if not isinstance(answer, dict):
        raise BadResponse("schema", "expected an object")
    end, active, now = answer.get("end"), answer.get("active"), answer.get("time")
    if not isinstance(end, list) or not isinstance(active, list) or not isinstance(now, int):
        raise BadResponse("schema", "expected {'end': [...], 'active': [...], 'time': int}")
    if not _time(now):
        raise BadResponse("schema", "time must be unix seconds")
    wrong = mismatch(answer, {"host": host})
    if wrong is not None:
        raise BadResponse("mismatch", f"sessions answer: {wrong[0]}={wrong[1]}")
    if len(end) + len(active) > MAX_SESSIONS:
        raise BadResponse("schema", f"more than {MAX_SESSIONS} sessions")
    out_end: list[SessionToEnd] = []
    for item in end:
        item = _session_base(item)
        if item.get("reason") not in END_REASONS:
            raise BadResponse("schema", "session reason is not a known reason")
        fp = item.get("fingerprint")  # absent from an older service: no notice
        if fp is not None and not (isinstance(fp, str) and FINGERPRINT_RE.match(fp)):
            raise BadResponse("schema", "session fingerprint is not a key fingerprint")
        out_end.append(
            SessionToEnd(
                connection=item["connection"],
                login=item["login"],
                request_id=item.get("request_id"),
                reason=item["reason"],
                fingerprint=fp,
            )
        )
    out_active: list[SessionActive] = []
    for item in active:
        item = _session_base(item)
        if not _is_int(item.get("request_id")) or not _time(item.get("expires_at")):
            raise BadResponse("schema", "active session needs request_id and expires_at")
        out_active.append(
            SessionActive(
                connection=item["connection"],
                login=item["login"],
                request_id=item["request_id"],
                expires_at=item["expires_at"],
            )
        )
    return SessionsAnswer(end=out_end, active=out_active, time=now)


def recorded(answer: object, asked: Mapping[str, object] | None = None) -> bool:
    """Check a break-glass answer; with ``asked``, that it echoes that report's question.

    A report whose answer names another login or connection was not recorded
    as far as we can tell: the caller keeps it (spool) for another try.
    """
    if not isinstance(answer, dict) or answer.get("recorded") is not True:
        raise BadResponse("schema", "expected {'recorded': true}")
    wrong = None if asked is None else mismatch(answer, asked)
    if wrong is not None:
        raise BadResponse("mismatch", f"break-glass answer: {wrong[0]}={wrong[1]}")
    return True


def grant_too_long(expires_at: int | None, max_grant: int, now: float | None = None) -> bool:
    """Whether an approval ends more than ``max_grant`` seconds after ``now`` (host clock).

    The service is the root of trust, but a host still refuses the absurd: an
    approval moved years ahead (a bug, a tampered database) is denied, whatever
    else in the answer is right. ``None`` (no end given) is longer than any bound.
    """
    if expires_at is None:
        return True
    if now is None:
        import time  # builtin, loaded already: no start-up cost

        now = time.time()
    return expires_at > now + max_grant
