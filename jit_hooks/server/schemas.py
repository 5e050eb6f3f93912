"""Pydantic models of API bodies and answers (mirroring docs/api.md and protocol.py)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from jit_hooks.protocol import (
    CONNECTION_RE,
    FINGERPRINT_RE,
    HOST_NAME_RE,
    KEY_BLOB_RE,
    KEY_TYPES,
    LOGIN_RE,
    RequestState,
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _match(pattern, what: str):  # noqa: ANN001, ANN202
    def check(v: str | None) -> str | None:
        if v is not None and not pattern.match(v):
            raise ValueError(f"not a valid {what}")
        return v

    return check


Short = Annotated[StrictStr, Field(max_length=500)]
Text = Annotated[StrictStr, Field(max_length=255)]

# PAM_RHOST as sshd sets it: an address, or a DNS name with UseDNS. Anything else
# is host-supplied free text that would reach CSV cells and terminals (review H2).
_RHOST_RE = re.compile(r"\A[A-Za-z0-9.:%-]{1,253}\Z")
INVALID_RHOST = "invalid"


def rhost_ok(value: str) -> bool:
    """An IP address (IPv6 may carry a %zone) or a host name of [A-Za-z0-9.:-]."""
    # Checked first: ipaddress takes any text after an IPv6 '%' as its zone.
    if not _RHOST_RE.match(value) or value.startswith("-"):
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return "%" not in value


def _rhost(v: str | None) -> str | None:
    if v == "":
        return None  # no remote host (a local login): the same as none given
    if v is not None and not rhost_ok(v):
        raise ValueError("not an IP address or host name")
    return v


# -- people --------------------------------------------------------------------


class LoginIn(_In):
    username: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    password: Annotated[StrictStr, Field(max_length=1024)]


class UserOut(BaseModel):
    id: int
    name: str
    roles: list[str]
    disabled: bool


class LoginOut(BaseModel):
    token: str
    user: UserOut


class KeyIn(_In):
    public_key: Annotated[StrictStr, Field(min_length=1, max_length=16384)]


class KeyOut(BaseModel):
    id: int
    key_type: str
    fingerprint: str
    comment: str
    created_at: int


class KeyList(BaseModel):
    keys: list[KeyOut]


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: int
    last_used_at: int | None
    current: bool


class TokenList(BaseModel):
    tokens: list[TokenOut]


class RequestIn(_In):
    host: Annotated[StrictStr, Field(min_length=1, max_length=253)] | None = None
    selector: Annotated[dict[StrictStr, StrictStr], Field(min_length=1, max_length=16)] | None = (
        None
    )
    login: Annotated[StrictStr, Field(min_length=1, max_length=33)]
    reason: Short = ""
    duration_seconds: Annotated[StrictInt, Field(ge=1)]
    start: StrictInt | None = None
    # Source ranges to pin the grant to (checked and made canonical by policy.py).
    from_cidrs: (
        Annotated[list[Annotated[StrictStr, Field(max_length=64)]], Field(max_length=64)] | None
    ) = None

    @model_validator(mode="after")
    def _one_target(self) -> RequestIn:
        if (self.host is None) == (self.selector is None):
            raise ValueError("give exactly one of 'host' or 'selector'")
        return self


class ReviewIn(_In):
    comment: Short = ""


class ExtendIn(_In):
    duration_seconds: Annotated[StrictInt, Field(ge=1)]
    reason: Short = ""


class ReviewOut(BaseModel):
    reviewer: str
    decision: Literal["approve", "deny"]
    comment: str
    at: int


class ExtensionOut(BaseModel):
    id: int
    seconds: int
    reason: str
    state: Literal["pending", "approved", "denied", "cancelled"]
    approvals_required: int
    reviews: list[ReviewOut]
    created_at: int


class RequestOut(BaseModel):
    id: int
    requester: str
    host: str | None
    selector: dict[str, str] | None
    login: str
    reason: str
    duration_seconds: int
    state: RequestState
    policy: str
    approvals_required: int
    reviews: list[ReviewOut]
    created_at: int
    start: int | None
    starts_at: int | None
    ends_at: int | None
    decided_at: int | None
    from_cidrs: list[str] | None = None
    extended_seconds: int = 0
    extension: ExtensionOut | None = None  # pending, waiting for reviews


class RequestList(BaseModel):
    requests: list[RequestOut]


class UsageEntryOut(BaseModel):
    request_id: int
    requester: str
    target: str
    login: str
    state: str
    starts_at: int
    ends_at: int
    from_cidrs: list[str] | None
    used: bool
    sessions: int
    open_sessions: int
    hosts: list[str]
    sources: list[str]
    keys: list[str]  # fingerprints; "(no key)" for a key-less session
    total_seconds: int
    longest_seconds: int


class UsageSummaryOut(BaseModel):
    approvals: int
    used: int
    never_used: list[int]


class UsageOut(BaseModel):
    since: int | None
    generated_at: int
    truncated: bool
    approvals: list[UsageEntryOut]
    summary: UsageSummaryOut


class EventOut(BaseModel):
    id: int
    seq: int | None  # place in the hash chain; null (with the hashes) until folded
    at: int
    kind: str
    actor: str | None
    host: str | None
    data: dict[str, Any]
    prev_hash: str | None
    hash: str | None


class EventList(BaseModel):
    events: list[EventOut]


# -- hooks ---------------------------------------------------------------------


class AuthorizedKeysIn(_In):
    host: StrictStr | None = None
    login: StrictStr
    fingerprint: StrictStr
    key_type: StrictStr
    key: StrictStr
    connection: StrictStr | None = None

    _host = field_validator("host")(_match(HOST_NAME_RE, "host name"))
    _login = field_validator("login")(_match(LOGIN_RE, "login name"))
    _conn = field_validator("connection")(_match(CONNECTION_RE, "connection id"))
    _fp = field_validator("fingerprint")(_match(FINGERPRINT_RE, "SHA256 fingerprint"))
    _key = field_validator("key")(_match(KEY_BLOB_RE, "base64 key blob"))

    @field_validator("key_type")
    @classmethod
    def _kt(cls, v: str) -> str:
        if v not in KEY_TYPES:
            raise ValueError("unsupported key type")
        return v


class AuthorizedKeyOut(BaseModel):
    key_type: str
    key: str
    fingerprint: str
    expires_at: int
    options: list[str]
    request_id: int
    from_cidrs: list[str] | None = None  # the grant is pinned to these source ranges


class EchoOut(BaseModel):
    """The question, repeated in every hook answer (protocol.Echo): the host checks it."""

    host: str
    login: str
    fingerprint: str | None
    connection: str | None


class AuthorizedKeysOut(EchoOut):
    keys: list[AuthorizedKeyOut]


class AccountIn(_In):
    host: StrictStr | None = None
    login: StrictStr
    rhost: Text | None = None
    service: Annotated[StrictStr, Field(max_length=64)] | None = None
    connection: StrictStr | None = None
    fingerprint: StrictStr | None = None
    # Also record the sshd session of ``connection`` on an allow (the host's PAM
    # stack then has no session-open hook: one process less on every login).
    open_session: StrictBool = False

    _host = field_validator("host")(_match(HOST_NAME_RE, "host name"))
    _login = field_validator("login")(_match(LOGIN_RE, "login name"))
    _conn = field_validator("connection")(_match(CONNECTION_RE, "connection id"))
    _fp = field_validator("fingerprint")(_match(FINGERPRINT_RE, "SHA256 fingerprint"))
    _rhost = field_validator("rhost")(_rhost)

    @model_validator(mode="after")
    def _session_needs_connection(self) -> AccountIn:
        if self.open_session and self.connection is None:
            raise ValueError("open_session needs a connection id")
        return self


class DecisionOut(EchoOut):
    decision: Literal["allow", "deny"]
    reason: str
    request_id: int | None
    expires_at: int | None
    from_cidrs: list[str] | None = None  # an allow pinned to source ranges: the host checks


class SessionIn(_In):
    # abort: the host refused the login after the account call opened its session.
    event: Literal["open", "close", "abort"]
    host: StrictStr | None = None
    login: StrictStr
    rhost: Text | None = None
    connection: StrictStr
    key_type: StrictStr | None = None
    key: StrictStr | None = None
    fingerprint: StrictStr | None = None

    _host = field_validator("host")(_match(HOST_NAME_RE, "host name"))
    _login = field_validator("login")(_match(LOGIN_RE, "login name"))
    _conn = field_validator("connection")(_match(CONNECTION_RE, "connection id"))
    _fp = field_validator("fingerprint")(_match(FINGERPRINT_RE, "SHA256 fingerprint"))
    _key = field_validator("key")(_match(KEY_BLOB_RE, "base64 key blob"))
    _rhost = field_validator("rhost")(_rhost)

    @field_validator("key_type")
    @classmethod
    def _kt(cls, v: str | None) -> str | None:
        if v is not None and v not in KEY_TYPES:
            raise ValueError("unsupported key type")
        return v


class BreakGlassIn(_In):
    login: StrictStr
    rhost: Text | None = None
    connection: StrictStr | None = None
    stage: Annotated[StrictStr, Field(max_length=32)]
    # The host's id for this report: one audit event per id, however often delivered.
    report_id: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    # The login time on the host (a report spooled during an outage arrives late).
    at: Annotated[StrictInt, Field(ge=0, lt=10**12)] | None = None

    _login = field_validator("login")(_match(LOGIN_RE, "login name"))
    _conn = field_validator("connection")(_match(CONNECTION_RE, "connection id"))

    @field_validator("rhost")
    @classmethod
    def _rhost_or_invalid(cls, v: str | None) -> str | None:
        # Kept, not refused: a break-glass login already happened and must be recorded.
        return v if v is None or rhost_ok(v) else INVALID_RHOST


class BreakGlassOut(BaseModel):
    recorded: StrictBool
    host: str
    login: str
    connection: str | None
    # Echoed so the host can tie the answer to the report it sent.
    report_id: str | None = None
    stage: str | None = None


class SessionEndOut(BaseModel):
    connection: str
    login: str
    request_id: int | None
    reason: str
    fingerprint: str | None = None  # the session's key: the host's next-login notice


class SessionActiveOut(BaseModel):
    connection: str
    login: str
    request_id: int
    expires_at: int


class SessionsOut(BaseModel):
    host: str
    end: list[SessionEndOut]
    active: list[SessionActiveOut]
    time: int


class PingOut(BaseModel):
    host: str
    time: int


class HealthOut(BaseModel):
    status: str


class ErrorOut(BaseModel):
    """The body of every 4xx/5xx answer (see docs/api.md, "Errors")."""

    error: str
    detail: str
    field: str | None = None
