"""SQLAlchemy Core tables (the schema the Alembic migrations build)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("roles", String(200), nullable=False),  # space-separated, sorted
    Column("disabled", Boolean, nullable=False),
    Column("created_at", Integer, nullable=False),
    # Set by `jit-server user remove`: the row stays for the history that points
    # at it (requests, reviews, sessions); a removed user is also disabled.
    Column("removed_at", Integer, nullable=True),
)

hosts = Table(
    "hosts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(253), nullable=False, unique=True),
    Column("labels", Text, nullable=False),  # canonical JSON object str -> str
    Column("removed", Boolean, nullable=False),
    Column("created_at", Integer, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex
    Column("kind", String(8), nullable=False),  # "user" | "host"
    Column("user_id", Integer, ForeignKey("users.id"), nullable=True),
    Column("host_id", Integer, ForeignKey("hosts.id"), nullable=True),
    Column("created_at", Integer, nullable=False),
    Column("revoked_at", Integer, nullable=True),
    # User tokens only: a label for `jit tokens list`, and when it was last used
    # (to the minute; host tokens are never written to on the hook path).
    Column("name", String(64), nullable=False, server_default=""),
    Column("last_used_at", Integer, nullable=True),
    # Refused from this time on (auth.py); NULL never expires. Interactive
    # sign-ins get settings.user_token_ttl, a rotated host token the grace.
    Column("expires_at", Integer, nullable=True),
    # Web sessions (kind "session") started with an API token: that token, so the
    # session ends when it is revoked or expires (ui/session.py). Migration 0013.
    Column("source_token_id", Integer, nullable=True),
)

keys = Table(
    "keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("key_type", String(64), nullable=False),
    Column("blob", Text, nullable=False),
    Column("fingerprint", String(60), nullable=False, unique=True),
    Column("comment", String(100), nullable=False),
    Column("created_at", Integer, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("spec", Text, nullable=False),  # canonical JSON of the validated policy
    Column("created_at", Integer, nullable=False),
    Column("updated_at", Integer, nullable=False),
)

requests = Table(
    "requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("requester_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("host_id", Integer, ForeignKey("hosts.id"), nullable=True),
    Column("selector", Text, nullable=True),  # JSON object, or NULL for a host request
    Column("login", String(33), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("duration_seconds", Integer, nullable=False),
    Column("start", Integer, nullable=True),
    Column("state", String(16), nullable=False),
    Column("policy_name", String(64), nullable=False),
    Column("policy_spec", Text, nullable=False),  # snapshot taken at request time
    Column("approvals_required", Integer, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("starts_at", Integer, nullable=True),
    Column("ends_at", Integer, nullable=True),
    Column("decided_at", Integer, nullable=True),
    Column("closed_at", Integer, nullable=True),  # revoked / cancelled / dropped at
    # Source ranges the grant is pinned to (canonical CIDRs, comma-separated), or NULL.
    Column("from_cidrs", Text, nullable=True),
    # Approved extensions so far (ends_at already includes them): checked against
    # the policy's max_extension.
    Column("extended_seconds", Integer, nullable=False, server_default="0"),
    Index("ix_requests_active", "requester_id", "login", "state", "ends_at"),
    # Logins without a key (account hook): only the live approvals for the login.
    Index("ix_requests_login_active", "login", "state", "ends_at"),
    Index("ix_requests_state", "state"),
)

# Hosts a request covers, resolved when the request is made (one row for a host
# request, one per matching host for a selector): hook lookups stay one query.
request_hosts = Table(
    "request_hosts",
    metadata,
    Column("request_id", Integer, ForeignKey("requests.id"), primary_key=True),
    Column("host_id", Integer, ForeignKey("hosts.id"), primary_key=True),
    Index("ix_request_hosts_host", "host_id", "request_id"),
)

reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("requests.id"), nullable=False),
    Column("reviewer_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("decision", String(8), nullable=False),  # "approve" | "deny"
    Column("comment", String(500), nullable=False),
    Column("at", Integer, nullable=False),
    UniqueConstraint("request_id", "reviewer_id", name="uq_reviews_request_reviewer"),
)

# An approved grant's request for more time (jit extend): same request, later ends_at.
extensions = Table(
    "extensions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("requests.id"), nullable=False),
    Column("seconds", Integer, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("state", String(16), nullable=False),  # pending | approved | denied | cancelled
    Column("approvals_required", Integer, nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("decided_at", Integer, nullable=True),
    Index("ix_extensions_request", "request_id", "state"),
    Index("ix_extensions_state", "state"),
)

extension_reviews = Table(
    "extension_reviews",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("extension_id", Integer, ForeignKey("extensions.id"), nullable=False),
    Column("reviewer_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("decision", String(8), nullable=False),
    Column("comment", String(500), nullable=False),
    Column("at", Integer, nullable=False),
    UniqueConstraint("extension_id", "reviewer_id", name="uq_extension_reviews_reviewer"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("host_id", Integer, ForeignKey("hosts.id"), nullable=False),
    Column("login", String(33), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=True),
    Column("request_id", Integer, ForeignKey("requests.id"), nullable=True),
    Column("connection", String(40), nullable=False),
    Column("rhost", String(255), nullable=True),
    Column("fingerprint", String(60), nullable=True),  # the key the session logged in with
    Column("opened_at", Integer, nullable=False),
    Column("closed_at", Integer, nullable=True),
    Index("ix_sessions_host_connection", "host_id", "connection"),
    Index("ix_sessions_request", "request_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Integer, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(64), nullable=True),
    Column("host", String(253), nullable=True),
    Column("data", Text, nullable=False),  # canonical JSON
    # Chain position and hashes, set by the fold (server/fold.py); NULL until then.
    Column("seq", Integer, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ux_audit_events_seq", "seq", unique=True),
    # The stream hub's poll for session-ending kinds (server/stream.py, migration 0009).
    Index("ix_audit_events_kind_id", "kind", "id"),
)

# The seq and hash of the newest folded event (row 1, made by migration 0004),
# kept next to the chain so that cutting events off the end is detected too.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("last_id", Integer, nullable=False),  # the last folded seq
    Column("hash", String(64), nullable=False),
)

# One row per `jit-server audit archive`: where the database's chain now starts
# (last_seq + 1, chained from last_hash) and which file holds what came before.
audit_archives = Table(
    "audit_archives",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("events", Integer, nullable=False),
    Column("at", Integer, nullable=False),
    Column("file", String(500), nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 of the archive file
    # The archive's signed manifest (JSON): verify trusts the marker only through it.
    Column("manifest", Text, nullable=True),
)

# Break-glass reports recorded, once per (host, report id): a host's spool may
# deliver one again, and the key outlives the audit events (archiving).
break_glass_reports = Table(
    "break_glass_reports",
    metadata,
    Column("host_id", Integer, primary_key=True),
    Column("report_id", String(32), primary_key=True),
    Column("at", Integer, nullable=False),
)

# Unauthenticated AKC misses of one (host, login, fingerprint) in one time window:
# the first writes an event, the rest only count here; the fold writes one
# event with the count when the window closes (server/fold.py). On PostgreSQL
# insert-only (migration 0015): one row per miss, never updated, so a storm of
# denied asks shares no row lock; SQLite bumps one row per window. A new name
# (was audit_misses, a counter per window) so 0014-era code fails on it rather
# than deleting these rows as counters of 1 (migration 0015).
audit_miss_rows = Table(
    "audit_miss_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(253), nullable=False),
    Column("login", String(33), nullable=False),
    Column("fingerprint", String(100), nullable=False),
    Column("window_start", Integer, nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_at", Integer, nullable=False),
    Column("last_at", Integer, nullable=False),
    Column("reason", String(200), nullable=False),
    # This row's miss also wrote an event (the window's first, as far as it could see).
    Column("evented", Boolean, nullable=False),
    Index("ix_audit_miss_rows_window", "window_start"),
    Index("ix_audit_miss_rows_key", "host", "login", "fingerprint", "window_start"),
)

# Authorized-keys allows of one (host, login, fingerprint, approval) in one window:
# the key stage only says the key may log in (anyone holding the public key can
# make sshd ask), so it is audited like a miss: the first writes an event, the
# rest are recorded here and the fold writes one event with their count
# (server/fold.py). The login decision itself is the account/session hook's
# event. Insert-only (migration 0012): one row per allow, never updated, so
# concurrent logins with one key share no row lock. ``evented``: this row's
# allow also wrote an event.
audit_key_allows = Table(
    "audit_key_allows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(253), nullable=False),
    Column("login", String(33), nullable=False),
    Column("fingerprint", String(100), nullable=False),
    Column("window_start", Integer, nullable=False),
    Column("request_id", Integer, nullable=False),
    Column("actor", String(64), nullable=True),
    Column("count", Integer, nullable=False),
    Column("first_at", Integer, nullable=False),
    Column("last_at", Integer, nullable=False),
    Column("evented", Boolean, nullable=False),
    Index("ix_audit_key_allows_window", "window_start"),
    Index("ix_audit_key_allows_key", "host", "login", "fingerprint", "window_start", "request_id"),
)

# Notifications waiting for delivery, written in the transaction of the change
# they announce (server/notify/). ``id`` is the idempotency id receivers see:
# derived from the event, so a sweep that runs twice writes one row.
notify_outbox = Table(
    "notify_outbox",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("event", String(32), nullable=False),
    Column("request_id", Integer, nullable=True),
    Column("channel", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON
    Column("created_at", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", Integer, nullable=False),  # due (or claimed until) this time
    Column("delivered_at", Integer, nullable=True),
    Column("failed_at", Integer, nullable=True),  # gave up after max attempts
    Column("last_error", String(200), nullable=True),
    Index("ix_notify_outbox_due", "delivered_at", "failed_at", "next_at"),
    Index("ix_notify_outbox_request", "request_id", "event"),
)

# Sign-ins through the identity provider that are under way (oidc_signin.py),
# so any replica can finish them. ``key_hash`` is the sha256 of what the
# client holds (the CLI's device handle, the browser's sign-in cookie);
# ``secret`` is what only the service may send the IdP (the device code, the
# PKCE verifier). Rows go once used, or once past expires_at.
sso_flows = Table(
    "sso_flows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(8), nullable=False),  # "device" | "web"
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("secret", Text, nullable=False),
    Column("nonce", String(64), nullable=True),
    Column("created_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),
    # Device flows (migration 0014): who started it (capped per client), and the
    # pace the poll must keep (an early poll is answered slow_down, not sent on).
    Column("client", String(64), nullable=True),
    Column("poll_interval", Integer, nullable=True),
    Column("next_poll_at", Integer, nullable=True),
)

# Which IdP subject a jit user signs in as (oidc_signin.py). Names can change
# or be re-used at an IdP; ``sub`` cannot: the first SSO sign-in binds a user
# to its (issuer, sub), and a different subject claiming that name is refused.
sso_identities = Table(
    "sso_identities",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("issuer", String(255), nullable=False),
    Column("sub", String(255), nullable=False),
    Column("created_at", Integer, nullable=False),
    UniqueConstraint("issuer", "sub", name="uq_sso_identities_subject"),
    UniqueConstraint("user_id", "issuer", name="uq_sso_identities_user"),
)
