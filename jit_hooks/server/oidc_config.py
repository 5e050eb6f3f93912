"""OpenID Connect sign-in settings: DATA_DIR/oidc.toml (or $JIT_OIDC_CONFIG), read once at start."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from jit_hooks.errors import JitError

FILENAME = "oidc.toml"
ROLES = frozenset({"requester", "approver", "admin"})
# jit user names (store.NAME_RE is wider: it also names tokens); an IdP claim
# that does not match is refused, never cleaned up into some other name.
DEFAULT_USERNAME_REGEX = r"^[a-z_][a-z0-9_.-]{0,63}$"
DEFAULT_SCOPES = ("openid", "profile", "email", "groups")
DEFAULT_CLOCK_SKEW = 60
KNOWN_KEYS = {
    "issuer", "client_id", "client_secret_file", "ca_file", "scopes", "username_claim",
    "username_regex", "groups_claim", "group_roles", "create_users", "clock_skew",
    "redirect_uri", "timeout", "link_existing_users", "email_domains", "max_device_flows",
    "max_device_flows_per_client",
}  # fmt: skip


class OidcConfigError(JitError):
    """Raised when oidc.toml is unreadable or names something wrong; the message names the key."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)  # never printed, never logged
    ca_file: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    # "preferred_username", or "email" (its local part is the jit name).
    username_claim: str = "preferred_username"
    # With username_claim = "email": the only domains (lowercase) whose verified
    # addresses name jit users. Required then.
    email_domains: frozenset[str] = frozenset()
    username_regex: str = DEFAULT_USERNAME_REGEX
    groups_claim: str = "groups"
    group_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    # Unknown people are refused unless this is on; then they are created with
    # the roles their groups map to (and nothing if no group maps).
    create_users: bool = False
    # A jit user who exists before their first SSO sign-in is refused until an
    # admin links them (jit-server sso link); on, the first sign-in with their
    # name binds them (trusting the IdP never to hand that name to someone else).
    link_existing_users: bool = False
    clock_skew: int = DEFAULT_CLOCK_SKEW
    # The web page's callback, as the IdP has it registered; no web sign-in without it.
    redirect_uri: str | None = None
    # Seconds for each call to the IdP (it is off the hook path; a person waits).
    timeout: float = 10.0
    # `jit login --sso` sign-ins under way (unauthenticated; each costs an IdP
    # call and a row): at most this many in all, and from one client address.
    max_device_flows: int = 200
    max_device_flows_per_client: int = 5


def _secret(path: Path, where: str) -> str:
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as e:
        raise OidcConfigError(f"{where}: client_secret_file {path}: {e.strerror}") from None
    # The secret lets anyone sign people in as this client: owner (and group) only.
    if stat.S_IMODE(st.st_mode) & 0o027:
        raise OidcConfigError(
            f"{where}: client_secret_file {path} is mode {stat.S_IMODE(st.st_mode):o};"
            " it must not be readable by others or writable by the group (chmod 0600)"
        )
    secret = text.strip()
    if not secret or "\n" in secret:
        raise OidcConfigError(f"{where}: client_secret_file {path} must hold one line")
    return secret


def _str(raw: dict, key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise OidcConfigError(f"{where}: {key} must be a non-empty string")
    return value


def parse(raw: dict, where: str, base: Path) -> OidcConfig:
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise OidcConfigError(f"{where}: unknown key {unknown[0]!r}")
    issuer = _str(raw, "issuer", where).rstrip("/")
    if not issuer.startswith("https://"):
        raise OidcConfigError(f"{where}: issuer must be an https:// URL")
    secret_file = Path(_str(raw, "client_secret_file", where))
    if not secret_file.is_absolute():
        secret_file = base / secret_file
    ca_file = raw.get("ca_file")
    if ca_file is not None:
        ca_file = _str(raw, "ca_file", where)
        if not os.path.isfile(ca_file):
            raise OidcConfigError(f"{where}: ca_file {ca_file} is not a file")
    scopes = raw.get("scopes", list(DEFAULT_SCOPES))
    if not (isinstance(scopes, list) and all(isinstance(s, str) and s for s in scopes)):
        raise OidcConfigError(f"{where}: scopes must be a list of strings")
    if "openid" not in scopes:
        raise OidcConfigError(f"{where}: scopes must include 'openid'")
    username_claim = _str(raw, "username_claim", where, "preferred_username")
    domains = raw.get("email_domains", [])
    if not (isinstance(domains, list) and all(isinstance(d, str) and d for d in domains)):
        raise OidcConfigError(f"{where}: email_domains must be a list of domain names")
    if username_claim == "email" and not domains:
        raise OidcConfigError(
            f'{where}: username_claim = "email" needs email_domains, the domains whose'
            ' addresses name jit users (e.g. email_domains = ["example.org"])'
        )
    regex = _str(raw, "username_regex", where, DEFAULT_USERNAME_REGEX)
    try:
        re.compile(regex)
    except re.error as e:
        raise OidcConfigError(f"{where}: username_regex: {e}") from None
    group_roles: dict[str, frozenset[str]] = {}
    mapping = raw.get("group_roles", {})
    if not isinstance(mapping, dict):
        raise OidcConfigError(f'{where}: group_roles must be a table of group = "roles"')
    for group, roles in mapping.items():
        names = roles.split() if isinstance(roles, str) else None
        if not names or not set(names) <= ROLES:
            raise OidcConfigError(
                f"{where}: group_roles.{group} must be space-separated roles from"
                f" {', '.join(sorted(ROLES))}"
            )
        group_roles[group] = frozenset(names)
    create = raw.get("create_users", False)
    skew = raw.get("clock_skew", DEFAULT_CLOCK_SKEW)
    timeout = raw.get("timeout", 10.0)
    if not isinstance(create, bool):
        raise OidcConfigError(f"{where}: create_users must be true or false")
    link_existing = raw.get("link_existing_users", False)
    if not isinstance(link_existing, bool):
        raise OidcConfigError(f"{where}: link_existing_users must be true or false")
    if not isinstance(skew, int) or isinstance(skew, bool) or not 0 <= skew <= 600:
        raise OidcConfigError(f"{where}: clock_skew must be seconds from 0 to 600")
    if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise OidcConfigError(f"{where}: timeout must be seconds, above 0 and at most 60")
    caps = {}
    for key, default in (("max_device_flows", 200), ("max_device_flows_per_client", 5)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100000:
            raise OidcConfigError(f"{where}: {key} must be a number from 1 to 100000")
        caps[key] = value
    redirect = raw.get("redirect_uri")
    if redirect is not None:
        redirect = _str(raw, "redirect_uri", where)
        if not redirect.endswith("/ui/sso/callback"):
            raise OidcConfigError(f"{where}: redirect_uri must end with /ui/sso/callback")
    return OidcConfig(
        issuer=issuer,
        client_id=_str(raw, "client_id", where),
        client_secret=_secret(secret_file, where),
        ca_file=ca_file,
        scopes=tuple(scopes),
        username_claim=username_claim,
        email_domains=frozenset(d.lower() for d in domains),
        username_regex=regex,
        groups_claim=_str(raw, "groups_claim", where, "groups"),
        group_roles=group_roles,
        create_users=create,
        link_existing_users=link_existing,
        clock_skew=skew,
        redirect_uri=redirect,
        timeout=float(timeout),
        max_device_flows=caps["max_device_flows"],
        max_device_flows_per_client=caps["max_device_flows_per_client"],
    )


def load(data_dir: Path | None) -> OidcConfig | None:
    """The SSO settings, or None when SSO is not configured (no file)."""
    named = os.environ.get("JIT_OIDC_CONFIG")
    path = Path(named) if named else (data_dir / FILENAME if data_dir else None)
    if path is None or (not named and not path.exists()):
        return None
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise OidcConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise OidcConfigError(f"{path}: {e}") from None
    return parse(raw, str(path), path.parent)
