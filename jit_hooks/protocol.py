"""Wire contract between host hooks, CLIs and the approval service (stdlib only).

Imported by the hot path: keep it free of anything but the stdlib and cheap to
import. The service builds its pydantic schemas to match these shapes; the host
hooks validate what they receive against them and drop anything else.
"""

from __future__ import annotations

import re
from typing import Literal, NotRequired, TypedDict, get_args

API_PREFIX = "/api/v1"

# Hook endpoints, authenticated with the host token (Authorization: Bearer ...).
HOOK_AUTHORIZED_KEYS = f"{API_PREFIX}/hook/authorized-keys"
HOOK_ACCOUNT = f"{API_PREFIX}/hook/account"
HOOK_SESSION = f"{API_PREFIX}/hook/session"
HOOK_BREAK_GLASS = f"{API_PREFIX}/hook/break-glass"
HOOK_PING = f"{API_PREFIX}/hook/ping"
HOOK_SESSIONS = f"{API_PREFIX}/hook/sessions"

# Key types sshd may offer that we accept (sk- are FIDO security keys).
KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)

# authorized_keys options a service answer may ask the host to apply. Anything
# else (command=, environment=, permitopen=, ...) is dropped by the host: a
# compromised service must not be able to run commands through us.
ALLOWED_KEY_OPTIONS = frozenset(
    {
        "restrict",
        "no-agent-forwarding",
        "no-port-forwarding",
        "no-pty",
        "no-user-rc",
        "no-X11-forwarding",
    }
)

# "SHA256:" + unpadded base64 of a SHA-256 digest: exactly 43 characters.
FINGERPRINT_RE = re.compile(r"\ASHA256:[A-Za-z0-9+/]{43}\Z")
# Base64 key blob as sshd prints it for %k (no whitespace, bounded length).
KEY_BLOB_RE = re.compile(r"\A[A-Za-z0-9+/]{16,16384}={0,2}\Z")
# Login names: POSIX portable user names (what useradd accepts by default).
LOGIN_RE = re.compile(r"\A[a-z_][a-z0-9_-]{0,31}\$?\Z")
# Connection id shared by the AKC and the PAM hooks of one sshd connection:
# "<monitor pid>:<monitor start time in clock ticks since boot>".
CONNECTION_RE = re.compile(r"\A[0-9]{1,10}:[0-9]{1,20}\Z")
# Host names as the service stores them (and as host.name in the host config).
HOST_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")

# Upper bound on a hook response body the host will read.
MAX_HOOK_RESPONSE_BYTES = 64 * 1024

# A request's state as the API reports it (expired and pending_expired are computed
# from its times, not only stored); also what `jit list --state` accepts.
RequestState = Literal[
    "pending",
    "approved",
    "denied",
    "cancelled",
    "revoked",
    "expired",
    "pending_expired",
    "dropped",
]
REQUEST_STATES: tuple[str, ...] = get_args(RequestState)

# The usage report's fields per approval (GET /api/v1/reports/usage), in the column
# order of its CSV from `jit usage` and `jit-server report usage`.
USAGE_COLUMNS = (
    "request_id", "requester", "target", "login", "state", "starts_at", "ends_at",
    "from_cidrs", "used", "sessions", "open_sessions", "hosts", "sources", "keys",
    "total_seconds", "longest_seconds",
)  # fmt: skip


def csv_safe(cell: str) -> str:
    """``cell`` with a leading ' if a spreadsheet would run it as a formula (CSV injection)."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


class AuthorizedKeysQuery(TypedDict):
    """POST HOOK_AUTHORIZED_KEYS body: sshd's %u %f %t %k, the host name and connection."""

    host: str | None  # the host config's host.name, if set
    login: str
    fingerprint: str
    key_type: str
    key: str
    connection: str | None


class Echo(TypedDict):
    """The question, repeated in every hook answer so it can't answer another one.

    ``host`` is the name of the host the token belongs to; ``login``,
    ``fingerprint`` and ``connection`` are the asked values, verbatim (null
    where the hook sent none). The host denies an answer whose echo differs
    from what it asked (a pooled connection or a proxy mixing up answers).
    """

    host: str
    login: str
    fingerprint: str | None
    connection: str | None


class AuthorizedKey(TypedDict):
    """One key valid now for the login on the asking host."""

    key_type: str
    key: str  # base64 blob
    fingerprint: str
    expires_at: int  # unix seconds, end of the approval window
    options: list[str]  # subset of ALLOWED_KEY_OPTIONS
    request_id: int
    # Source ranges the grant is pinned to (canonical CIDRs; the key line's from="..."),
    # or None. Absent in answers of services older than pinned grants.
    from_cidrs: list[str] | None


class AuthorizedKeysAnswer(Echo):
    keys: list[AuthorizedKey]


class AccountQuery(TypedDict):
    """POST HOOK_ACCOUNT body."""

    host: str | None  # the host config's host.name, if set
    login: str
    rhost: str | None
    service: str | None
    connection: str | None
    fingerprint: str | None  # the key the AKC accepted on this connection, if any
    # Sent (true) only by the account hook wired with --open-session: the allow also
    # records the session, so no session-open hook runs (docs/host.md).
    open_session: NotRequired[bool]


Decision = Literal["allow", "deny"]


class DecisionAnswer(TypedDict):
    """Answer of HOOK_ACCOUNT and HOOK_SESSION (besides its Echo)."""

    decision: Decision
    reason: str  # short, human, printable ASCII; host re-sanitises anyway
    request_id: int | None
    expires_at: int | None
    # An allow pinned to source ranges: the host checks PAM_RHOST against them.
    from_cidrs: list[str] | None


class SessionQuery(TypedDict):
    """POST HOOK_SESSION body."""

    # abort: the host refused a login whose session the account call opened.
    event: Literal["open", "close", "abort"]
    host: str | None  # the host config's host.name, if set
    login: str
    rhost: str | None
    connection: str
    key_type: str | None
    key: str | None
    fingerprint: str | None


class BreakGlassQuery(TypedDict):
    """POST HOOK_BREAK_GLASS body: a break-glass account logged in."""

    login: str
    rhost: str | None
    connection: str | None
    stage: str  # "authorized-keys" | "account" | "session"
    # 32 hex digits chosen by the host: the service records one event per id, so a
    # report delivered again from the host's spool is not counted twice.
    report_id: str
    at: int  # the login time on the host (a spooled report arrives late)


class SessionToEnd(TypedDict):
    """A live session whose approval is no longer active: the host ends it."""

    connection: str
    login: str
    request_id: int | None
    reason: str  # "revoked" | "expired" | "user_disabled" | "not_active"
    fingerprint: str | None  # the key the session logged in with (next-login notice)


class SessionActive(TypedDict):
    """A live session whose approval is still active, and when that ends."""

    connection: str
    login: str
    request_id: int
    expires_at: int


class SessionsAnswer(TypedDict):
    """GET HOOK_SESSIONS answer: this host's open sessions as the service sees them now."""

    end: list[SessionToEnd]
    active: list[SessionActive]
    time: int


class PingAnswer(TypedDict):
    """GET HOOK_PING answer: who the token belongs to, and the service clock."""

    host: str
    time: int
