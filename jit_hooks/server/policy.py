"""Access policies: validation and matching (pure functions, no I/O)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jit_hooks.protocol import ALLOWED_KEY_OPTIONS, LOGIN_RE
from jit_hooks.server.errors import InvalidInput

ROLES = frozenset({"requester", "approver", "admin"})
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
LABEL_KEY_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._/-]{0,62}\Z")
LABEL_VALUE_RE = re.compile(r"\A[A-Za-z0-9._:/-]{0,63}\Z")
HOST_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")
MAX_DURATION_LIMIT = 7 * 24 * 3600
# A pending request nobody decided on expires after this long (per policy):
# approving a week-old request would grant a window nobody asked for now.
DEFAULT_PENDING_TTL = 24 * 3600
PENDING_TTL_LIMIT = 30 * 24 * 3600

_FIELDS = {
    "name",
    "hosts",
    "labels",
    "logins",
    "requesters",
    "approvers",
    "approvals_required",
    "max_duration",
    "reason_required",
    "auto_approve",
    "options",
    "pending_ttl",
    "max_extension",
    "extension_approvals",
    "require_from",
    "allowed_from",
    "from_min_prefix_v4",
    "from_min_prefix_v6",
}
# Source ranges one grant may be pinned to (each one becomes part of a key line).
MAX_FROM = 16
# Widest pinned range by default: a set like 0.0.0.0/1,128.0.0.0/1 pins nothing.
FROM_MIN_PREFIX_V4 = 8
FROM_MIN_PREFIX_V6 = 32


@dataclass(frozen=True)
class Principals:
    """Who: named users plus anyone holding one of the roles."""

    users: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    def includes(self, user: str, roles: Iterable[str]) -> bool:
        return user in self.users or bool(self.roles.intersection(roles))


@dataclass(frozen=True)
class Policy:
    name: str
    hosts: frozenset[str]
    labels: tuple[tuple[str, str], ...]  # sorted (key, value) pairs
    logins: frozenset[str]
    requesters: Principals
    approvers: Principals
    approvals_required: int
    max_duration: int
    reason_required: bool
    auto_approve: bool
    options: tuple[str, ...]
    pending_ttl: int = DEFAULT_PENDING_TTL
    # Total time `jit extend` may add to one grant (0: no extensions).
    max_extension: int = 0
    # Reviews an extension needs (0: approved at once, up to max_extension).
    extension_approvals: int = 1
    # Every request must pin its grant to source ranges (jit request --from).
    require_from: bool = False
    # If set, a request must pin its grant, each range inside one of these.
    allowed_from: tuple[str, ...] = ()
    # The widest range a request may pin to (prefix length, per address family).
    from_min_prefix_v4: int = FROM_MIN_PREFIX_V4
    from_min_prefix_v6: int = FROM_MIN_PREFIX_V6

    def to_dict(self) -> dict[str, Any]:
        """The canonical, JSON-ready form (what is stored and listed)."""
        return {
            "name": self.name,
            "hosts": sorted(self.hosts),
            "labels": dict(self.labels),
            "logins": sorted(self.logins),
            "requesters": {
                "users": sorted(self.requesters.users),
                "roles": sorted(self.requesters.roles),
            },
            "approvers": {
                "users": sorted(self.approvers.users),
                "roles": sorted(self.approvers.roles),
            },
            "approvals_required": self.approvals_required,
            "max_duration": self.max_duration,
            "reason_required": self.reason_required,
            "auto_approve": self.auto_approve,
            "options": list(self.options),
            "pending_ttl": self.pending_ttl,
            "max_extension": self.max_extension,
            "extension_approvals": self.extension_approvals,
            "require_from": self.require_from,
            "allowed_from": list(self.allowed_from),
            "from_min_prefix_v4": self.from_min_prefix_v4,
            "from_min_prefix_v6": self.from_min_prefix_v6,
        }


def _fail(name: str, field: str, msg: str) -> InvalidInput:
    return InvalidInput(f"policy {name!r}: {field}: {msg}", field=field)


def _str_list(name: str, field: str, value: Any, pattern: re.Pattern[str]) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(name, field, "must be a list of strings")
    for v in value:
        if not pattern.match(v):
            raise _fail(name, field, f"invalid entry {v[:64]!r}")
    return frozenset(value)


def _principals(name: str, field: str, value: Any) -> Principals:
    if value is None:
        return Principals()
    if not isinstance(value, Mapping) or set(value) - {"users", "roles"}:
        raise _fail(name, field, "must be a table with 'users' and/or 'roles'")
    users = _str_list(name, f"{field}.users", value.get("users"), NAME_RE)
    roles = _str_list(name, f"{field}.roles", value.get("roles"), NAME_RE)
    if roles - ROLES:
        raise _fail(name, f"{field}.roles", f"unknown role(s) {sorted(roles - ROLES)}")
    return Principals(users=users, roles=roles)


def _int(name: str, field: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, field, "must be an integer")
    if not lo <= value <= hi:
        raise _fail(name, field, f"must be between {lo} and {hi}")
    return value


def _bool(name: str, field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, field, "must be true or false")
    return value


def parse_policy(d: Any) -> Policy:
    """Validate one policy table (from TOML or stored JSON); raise InvalidInput naming the field."""
    if not isinstance(d, Mapping):
        raise InvalidInput("policy must be a table", field="policy")
    name = d.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput("policy name missing or invalid (letters, digits, . _ -)", field="name")
    unknown = set(d) - _FIELDS
    if unknown:
        raise _fail(name, sorted(unknown)[0], "unknown field")
    hosts = _str_list(name, "hosts", d.get("hosts"), HOST_RE)
    labels_raw = d.get("labels") or {}
    if not isinstance(labels_raw, Mapping):
        raise _fail(name, "labels", "must be a table of strings")
    for k, v in labels_raw.items():
        if not isinstance(k, str) or not LABEL_KEY_RE.match(k):
            raise _fail(name, "labels", f"invalid label key {str(k)[:64]!r}")
        if not isinstance(v, str) or not LABEL_VALUE_RE.match(v):
            raise _fail(name, f"labels.{k}", "must be a short string")
    if bool(hosts) == bool(labels_raw):
        raise _fail(name, "hosts", "give exactly one of 'hosts' or 'labels' (non-empty)")
    logins = _str_list(name, "logins", d.get("logins"), LOGIN_RE)
    if not logins:
        raise _fail(name, "logins", "must list at least one login account")
    auto = _bool(name, "auto_approve", d.get("auto_approve", False))
    options = d.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise _fail(name, "options", "must be a list of strings")
    bad = [o for o in options if o not in ALLOWED_KEY_OPTIONS]
    if bad:
        raise _fail(
            name,
            "options",
            f"not allowed: {bad[0][:64]!r} (allowed: {sorted(ALLOWED_KEY_OPTIONS)})",
        )
    return Policy(
        name=name,
        hosts=hosts,
        labels=tuple(sorted(labels_raw.items())),
        logins=logins,
        requesters=_principals(name, "requesters", d.get("requesters")),
        approvers=_principals(name, "approvers", d.get("approvers")),
        approvals_required=_int(
            name, "approvals_required", d.get("approvals_required", 1), 0 if auto else 1, 10
        ),
        max_duration=_int(name, "max_duration", d.get("max_duration", 3600), 1, MAX_DURATION_LIMIT),
        reason_required=_bool(name, "reason_required", d.get("reason_required", True)),
        auto_approve=auto,
        options=tuple(sorted(set(options))),
        pending_ttl=_int(
            name, "pending_ttl", d.get("pending_ttl", DEFAULT_PENDING_TTL), 60, PENDING_TTL_LIMIT
        ),
        max_extension=_int(name, "max_extension", d.get("max_extension", 0), 0, MAX_DURATION_LIMIT),
        extension_approvals=_int(
            name, "extension_approvals", d.get("extension_approvals", 0 if auto else 1), 0, 10
        ),
        require_from=_bool(name, "require_from", d.get("require_from", False)),
        allowed_from=_allowed_from(name, d.get("allowed_from")),
        from_min_prefix_v4=_int(
            name, "from_min_prefix_v4", d.get("from_min_prefix_v4", FROM_MIN_PREFIX_V4), 1, 32
        ),
        from_min_prefix_v6=_int(
            name, "from_min_prefix_v6", d.get("from_min_prefix_v6", FROM_MIN_PREFIX_V6), 1, 128
        ),
    )


def canonical_cidrs(value: Any, field: str = "from") -> tuple[str, ...]:
    """Validated, canonical, sorted, de-duplicated CIDRs; InvalidInput naming what is wrong.

    A bare address is a /32 (or /128); host bits are refused (``10.0.0.1/8`` is
    ambiguous: say ``10.0.0.0/8``). A /0 pins nothing and is refused too.
    """
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{field}: must be a list of CIDR strings", field=field)
    out: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for raw in value:
        text = raw.strip()
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise InvalidInput(
                f"{field}: {text[:64]!r} is not a network (e.g. 192.0.2.0/24 or 2001:db8::/32)",
                field=field,
            ) from None
        if net.prefixlen == 0:
            raise InvalidInput(f"{field}: {text[:64]!r} allows every address", field=field)
        out.add(net)
    if not out:
        raise InvalidInput(f"{field}: give at least one CIDR", field=field)
    if len(out) > MAX_FROM:
        raise InvalidInput(f"{field}: at most {MAX_FROM} CIDRs", field=field)
    return tuple(n.with_prefixlen for n in sorted(out, key=lambda n: (n.version, n)))


def _allowed_from(name: str, value: Any) -> tuple[str, ...]:
    if value is None or value == []:
        return ()
    try:
        return canonical_cidrs(value, "allowed_from")
    except InvalidInput as e:
        raise _fail(name, "allowed_from", e.detail.split(": ", 1)[-1]) from None


def check_from(policy: Policy, cidrs: tuple[str, ...]) -> None:
    """Raise InvalidInput if the policy needs ranges and has none, or they lie outside it.

    ``allowed_from`` implies a pin: an unpinned grant would let in every address,
    which is what an admin listing allowed ranges means to rule out. Ranges wider
    than the policy's minimum prefix are refused (a few halves of the address
    space satisfy any pin requirement while pinning nothing).
    """
    if policy.require_from and not cidrs:
        raise InvalidInput(
            f"from_cidrs: policy {policy.name!r} requires pinning the grant to source ranges "
            "(jit request --from CIDR)",
            field="from_cidrs",
        )
    if policy.allowed_from and not cidrs:
        raise InvalidInput(
            f"from_cidrs: policy {policy.name!r} allows only grants pinned inside its "
            f"allowed_from ({', '.join(policy.allowed_from)}): jit request --from CIDR",
            field="from_cidrs",
        )
    for c in cidrs:
        net = ipaddress.ip_network(c)
        least = policy.from_min_prefix_v4 if net.version == 4 else policy.from_min_prefix_v6
        if net.prefixlen < least:
            raise InvalidInput(
                f"from_cidrs: {c} is too wide (policy {policy.name!r} pins to /{least} "
                f"or narrower for IPv{net.version})",
                field="from_cidrs",
            )
    if cidrs and policy.allowed_from:
        allowed = [ipaddress.ip_network(a) for a in policy.allowed_from]
        for c in cidrs:
            net = ipaddress.ip_network(c)
            if not any(net.version == a.version and net.subnet_of(a) for a in allowed):  # type: ignore[arg-type]
                raise InvalidInput(
                    f"from_cidrs: {c} is outside the ranges policy {policy.name!r} allows "
                    f"({', '.join(policy.allowed_from)})",
                    field="from_cidrs",
                )


def matches_host(policy: Policy, host: str, labels: Mapping[str, str]) -> bool:
    """Does ``policy`` cover this host (by name, or every policy label present)?"""
    if policy.hosts:
        return host in policy.hosts
    return all(labels.get(k) == v for k, v in policy.labels)


def _rank(policy: Policy) -> tuple[int, int, str]:
    # Smaller sorts first = more specific: named host, then more labels, then name.
    return (0 if policy.hosts else 1, -len(policy.labels), policy.name)


def select_for_host(
    policies: Iterable[Policy], host: str, labels: Mapping[str, str]
) -> Policy | None:
    """The most specific policy covering the host, or None (no access)."""
    matching = [p for p in policies if matches_host(p, host, labels)]
    return min(matching, key=_rank, default=None)


def select_for_selector(policies: Iterable[Policy], selector: Mapping[str, str]) -> Policy | None:
    """The most specific label policy covering every host the selector can match."""
    matching = [
        p for p in policies if not p.hosts and all(selector.get(k) == v for k, v in p.labels)
    ]
    return min(matching, key=_rank, default=None)


def selector_hosts(
    policies: Iterable[Policy],
    policy: Policy,
    selector: Mapping[str, str],
    hosts: Iterable[tuple[str, Mapping[str, str]]],
) -> list[str]:
    """Hosts matched by the selector whose own winning policy is ``policy``.

    A host with a more specific policy of its own (say, a stricter one naming
    it) is left out: a label request never bypasses that policy.
    """
    policies = list(policies)
    out = []
    for name, labels in hosts:
        if all(labels.get(k) == v for k, v in selector.items()):
            best = select_for_host(policies, name, labels)
            if best is not None and best.name == policy.name:
                out.append(name)
    return sorted(out)
