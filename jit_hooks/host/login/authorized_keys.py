"""sshd AuthorizedKeysCommand: print the offered key only while its owner holds an approval.

sshd runs ``jit-authorized-keys [--config PATH] %u %f %t %k`` as the
AuthorizedKeysCommandUser. stdout carries nothing but the one key line, rebuilt
here from validated parts (type, blob, our own options)::

    expiry-time="20261125183000Z",no-agent-forwarding ssh-ed25519 AAAA... jit-request-7

Any failure prints nothing and exits 1 (sshd then refuses the key), and so
does an answer whose echo of the question (host, login, fingerprint,
connection) differs from what was asked; "no approval" prints nothing and
exits 0. Each run logs one line.
"""

from __future__ import annotations

import time

from jit_hooks import sshkeys
from jit_hooks.errors import BadResponse, KeyParseError
from jit_hooks.host.login import answers, connection
from jit_hooks.host.login.client import HookClient
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.hook import Invocation, run
from jit_hooks.host.login.log import HookLog
from jit_hooks.protocol import (
    FINGERPRINT_RE,
    HOOK_AUTHORIZED_KEYS,
    LOGIN_RE,
    AuthorizedKey,
    AuthorizedKeysQuery,
)

IDENT = "jit-authorized-keys"
USAGE = "usage: jit-authorized-keys [--config PATH] LOGIN FINGERPRINT KEY_TYPE KEY"
# Past the client's own budget: only a stuck TLS handshake ever reaches this.
HARD_DEADLINE_MARGIN = 0.5
# How old a record of this connection's accepted key may be to be reprinted
# without asking the service (sshd's two runs per login are milliseconds apart).
REUSE_SECONDS = 10


def offered_key(login: str, fingerprint: str, key_type: str, blob: str) -> sshkeys.PublicKey:
    """Validate sshd's %u %f %t %k; raise KeyParseError naming what is wrong."""
    if not LOGIN_RE.match(login):
        raise KeyParseError("login is not a valid user name")
    if not FINGERPRINT_RE.match(fingerprint):
        raise KeyParseError("fingerprint is not SHA256:...")
    key = sshkeys.parse_blob(key_type, blob)
    if key.fingerprint != fingerprint:
        raise KeyParseError("fingerprint does not match the key")
    return key


def select(
    entries: list[object], offered: sshkeys.PublicKey, now: int
) -> tuple[AuthorizedKey | None, list[str]]:
    """The entry for exactly the offered key, valid now; plus why others were dropped."""
    chosen: AuthorizedKey | None = None
    dropped: list[str] = []
    for item in entries:
        why = answers.check_key(item)
        if why is None:
            key = answers.as_key(item)  # type: ignore[arg-type]
            if key["fingerprint"] != offered.fingerprint or key["key_type"] != offered.key_type:
                why = "other_key"
            elif sshkeys.fingerprint(key["key"]) != offered.fingerprint:
                why = "fingerprint_mismatch"
            elif key["expires_at"] <= now:
                why = "expired"
        if why is not None:
            dropped.append(why)
        elif chosen is None or key["expires_at"] > chosen["expires_at"]:
            chosen = key
    return chosen, dropped


def expiry_time(expires_at: int) -> str:
    """sshd's expiry-time value, UTC with seconds: OpenSSH 9.2 parses the 'Z' suffix."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(expires_at))


def render(key: AuthorizedKey, offered: sshkeys.PublicKey) -> str:
    """One authorized_keys line from validated parts only (never the service's text)."""
    options = [f'expiry-time="{expiry_time(key["expires_at"])}"']
    if key.get("from_cidrs"):
        # Checked canonical networks only (answers.check_cidrs): no quote, comma or space inside.
        options.append(f'from="{",".join(key["from_cidrs"] or [])}"')
    options += sorted(set(key["options"]))
    comment = f"jit-request-{key['request_id']}"
    return f"{','.join(options)} {offered.key_type} {offered.blob} {comment}\n"


def respond(
    answer: object, offered: sshkeys.PublicKey, now: int, asked: AuthorizedKeysQuery
) -> tuple[str, dict]:
    """Pure core (golden-tested): service answer to ``asked`` -> stdout text and log fields."""
    entries = answers.authorized_keys(answer)
    wrong = answers.mismatch(answer, asked)
    if wrong is not None:
        # An answer to another question (another login, host, key or connection):
        # none of its keys may be printed, whatever they look like.
        return "", {
            "decision": "deny",
            "reason": "mismatch",
            "mismatch": wrong[0],
            "answered": wrong[1],
        }
    key, dropped = select(entries, offered, now)
    if key is None:
        reason = "dropped" if dropped else "no_approval"
        return "", {"decision": "deny", "reason": reason, "dropped": ",".join(dropped) or None}
    host = answer.get("host") if isinstance(answer, dict) else None  # checked by mismatch
    fields: dict = {"decision": "allow", "host": host, "request": key["request_id"]}
    fields["expires"] = key["expires_at"]
    fields["options"] = sorted(set(key["options"]))
    if key.get("from_cidrs"):
        fields["from"] = key["from_cidrs"]
    fields["dropped"] = ",".join(dropped) or None
    return render(key, offered), fields


def _reuse(config: HostConfig, conn: str, login: str, offered: sshkeys.PublicKey) -> str | None:
    """The line this connection's first AKC run printed for the same key, if seconds old.

    sshd runs the AKC twice per key login (query, then signature check) within
    milliseconds; the second run reprints the first answer instead of asking
    the service again. It weakens nothing: the PAM account hook asks the
    service right after, on every login.
    """
    record = connection.accepted_key(config.state_dir, conn, max_age=REUSE_SECONDS)
    if (
        record is None
        or record["login"] != login
        or record["fingerprint"] != offered.fingerprint
        or record["key_type"] != offered.key_type
        or record["expires_at"] <= time.time()
    ):
        return None
    try:
        from_cidrs = answers.check_cidrs(record.get("from_cidrs"))
    except BadResponse:
        return None
    key = AuthorizedKey(
        key_type=offered.key_type,
        key=offered.blob,
        fingerprint=offered.fingerprint,
        expires_at=record["expires_at"],
        options=record["options"],
        request_id=record["request_id"],
        from_cidrs=from_cidrs,
    )
    return render(key, offered)


def _main(config: HostConfig, log: HookLog, args: list[str], fields: dict, inv: Invocation) -> int:
    if len(args) != 4:
        log.warning(decision="deny", reason="usage", usage=USAGE)
        return 2
    login, fingerprint, key_type, blob = args
    fields.update(login=login, fingerprint=fingerprint)
    try:
        offered = offered_key(login, fingerprint, key_type, blob)
    except KeyParseError as e:
        log.warning(decision="deny", **fields, reason="bad_input", error=str(e))
        return 1
    conn = inv.connection_id()
    fields["connection"] = conn
    if login in config.break_glass:
        # Break-glass keys come from the account's own AuthorizedKeysFile.
        log.alert(decision="skip", **fields, reason="break_glass")
        return 0
    # Records there decide which key the account hook asks about: ConfigError denies.
    connection.check_state_dir(config.state_dir)
    reused = _reuse(config, conn, login, offered)
    if reused is not None:
        inv.write(reused)
        log.info(decision="allow", **fields, reused="yes")
        return 0
    query = AuthorizedKeysQuery(
        host=config.host_name,
        login=login,
        fingerprint=fingerprint,
        key_type=key_type,
        key=offered.blob,
        connection=conn,
    )
    with inv.deadline(config.total_timeout + HARD_DEADLINE_MARGIN):
        answer = HookClient(config).request("POST", HOOK_AUTHORIZED_KEYS, query)
    now = int(time.time())
    text, outcome = respond(answer, offered, now, query)
    if text and answers.grant_too_long(outcome["expires"], config.max_grant, now):
        # Never print (or record) a key line for an approval ending past the host's bound.
        log.warning(
            decision="deny",
            **fields,
            reason="grant_too_long",
            request=outcome["request"],
            expires=outcome["expires"],
            max_grant=config.max_grant,
        )
        return 1
    if text:
        # Without this record the account hook could not tell which key got
        # in, so failing to write it denies the key.
        inv.check_live()  # the helper may have denied already (hard deadline)
        try:
            connection.purge_stale(config.state_dir)
            connection.record_accepted(
                config.state_dir,
                conn,
                login=login,
                key_type=offered.key_type,
                fingerprint=offered.fingerprint,
                request_id=outcome["request"],
                expires_at=outcome["expires"],
                options=outcome["options"],
                from_cidrs=outcome.get("from"),
            )
        except OSError as e:
            log.warning(decision="deny", **fields, reason="state", error=e.strerror)
            return 1
        inv.write(text)
    decision = outcome.pop("decision")
    if decision == "deny" and outcome["reason"] == "mismatch":
        log.warning(decision=decision, **fields, **outcome)
        return 1
    if "options" in outcome:
        outcome["options"] = ",".join(outcome["options"]) or None
    if outcome.get("from"):
        outcome["from"] = ",".join(outcome["from"])
    log.info(decision=decision, **fields, **outcome)
    return 0


def main(argv: list[str] | None = None, *, inv: Invocation | None = None) -> int:
    return run(IDENT, _main, argv, user_message=False, inv=inv)


if __name__ == "__main__":
    raise SystemExit(main())
