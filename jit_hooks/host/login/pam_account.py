"""PAM account hook (pam_exec): allow the login only while an approval is active.

``account required pam_exec.so quiet stdout /usr/bin/jit-pam-account [--config PATH]
[--open-session]`` (one line)

Runs for every authentication method. sshd leaves SSH_AUTH_INFO_0 empty in the
account phase, so the key the AKC accepted is found through the connection id
(see connection.py); a login without a key (password) is decided by the login
account alone. Exit 0 allows; anything else denies, with one short line on
stdout that pam_exec shows the ssh user.

With ``--open-session`` (what ``jit-hooks enable`` writes) an allow also has the
service record the session of this connection, bound to the approval and its
owner: the PAM stack then runs no session-open hook, one process less on every
login. Its end is reported by the close_session hook, which runs after the
client is gone (pam_session.py), and by enforce for a connection that vanished.
"""

from __future__ import annotations

import time

from jit_hooks.host.login import answers, break_glass, connection, notices
from jit_hooks.host.login.answers import grant_too_long as answers_grant_too_long
from jit_hooks.host.login.answers import sanitize
from jit_hooks.host.login.client import HookClient
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.hook import Invocation, run
from jit_hooks.host.login.log import HookLog
from jit_hooks.protocol import (
    HOOK_ACCOUNT,
    HOOK_SESSION,
    LOGIN_RE,
    AccountQuery,
    DecisionAnswer,
    SessionQuery,
)

IDENT = "jit-pam-account"
OPEN_SESSION = "--open-session"


def pam_env(inv: Invocation | None = None) -> tuple[str, str | None, str | None, str | None]:
    """PAM_USER, PAM_RHOST, PAM_SERVICE (sanitised) and PAM_TYPE as pam_exec passes them.

    Read through pamenv: a name the login user duplicated in the PAM environment
    (~/.pam_environment) must not win over pam_exec's own value.
    """
    inv = inv or Invocation.from_process()
    env = inv.pam_items("PAM_USER", "PAM_RHOST", "PAM_SERVICE", "PAM_TYPE")
    login = env["PAM_USER"] or ""
    rhost = sanitize(env["PAM_RHOST"] or "", 253) or None
    service = sanitize(env["PAM_SERVICE"] or "", 64) or None
    return login, rhost, service, env["PAM_TYPE"]


def deny(inv: Invocation, log: HookLog, fields: dict, reason: str, message: str) -> int:
    log.warning(decision="deny", **fields, reason=reason)
    inv.write(f"jit: access denied: {sanitize(message)}\n")
    return 1


def conclude(
    inv: Invocation, log: HookLog, fields: dict, answer: DecisionAnswer, max_grant: int
) -> int:
    """Exit status for the service's decision: 0 to allow, else deny with its reason.

    An allow must say when the approval ends, and no later than ``max_grant`` from
    now: an allow without an end would be a grant without a bound.
    """
    fields["request"] = answer["request_id"]
    if answer["decision"] != "allow":
        return deny(inv, log, fields, "service_denied", answer["reason"] or "no active approval")
    if answer["expires_at"] is None:
        return deny(inv, log, fields, "bad_answer", "the service gave no end for the approval")
    if answers_grant_too_long(answer["expires_at"], max_grant):
        fields["expires"] = answer["expires_at"]
        return deny(inv, log, fields, "grant_too_long", "approval ends later than this host allows")
    cidrs = answer.get("from_cidrs")
    if cidrs:
        # A pinned grant: checked here for every login, key or not (passwords and
        # certificates never see the key line's from="...").
        fields["from"] = ",".join(cidrs)
        if not answers.rhost_allowed(fields.get("rhost"), cidrs):
            where = fields.get("rhost") or "an unknown address"
            return deny(
                inv, log, fields, "source-not-allowed",
                f"approval {answer['request_id']} does not allow logins from {where}",
            )  # fmt: skip
    log.info(decision="allow", **fields, expires=answer["expires_at"])
    return 0


def ask(
    config: HostConfig, path: str, query: AccountQuery | SessionQuery, fields: dict
) -> DecisionAnswer | None:
    """The service's decision on ``query``; None (and ``fields`` say why) if it answers another.

    The answer must echo the question (host, login, fingerprint, connection):
    an answer meant for another login or connection is never applied to this one.
    """
    raw = HookClient(config).request("POST", path, query)
    answer = answers.decision(raw)
    wrong = answers.mismatch(raw, query)
    if wrong is not None:
        fields.update(mismatch=wrong[0], answered=wrong[1])
        return None
    fields["host"] = raw["host"]
    return answer


def _main(config: HostConfig, log: HookLog, args: list[str], fields: dict, inv: Invocation) -> int:
    login, rhost, service, pam_type = pam_env(inv)
    fields.update(login=sanitize(login, 32), rhost=rhost)
    unknown = [a for a in args if a != OPEN_SESSION]
    if unknown:
        return deny(inv, log, fields, "bad_argument", "hook misconfigured")
    open_session = OPEN_SESSION in args
    if (pam_type or "account") != "account":
        return deny(inv, log, fields, "wrong_pam_type", "hook misconfigured")
    if not LOGIN_RE.match(login):
        return deny(inv, log, fields, "bad_login", "invalid login name")
    conn = inv.connection_id()
    fields["connection"] = conn
    if break_glass.is_break_glass(config, login):
        return break_glass.allow(
            config, log, login=login, rhost=rhost, conn=conn, stage="account", inv=inv
        )
    connection.check_state_dir(config.state_dir)  # ConfigError: deny reason=config
    record = connection.accepted_key(config.state_dir, conn)
    fingerprint = None
    if record is not None:
        if record["login"] != login:
            return deny(inv, log, fields, "key_record_mismatch", "login does not match the key")
        fingerprint = record["fingerprint"]
    fields["fingerprint"] = fingerprint
    query = AccountQuery(
        host=config.host_name,
        login=login,
        rhost=rhost,
        service=service,
        connection=conn,
        fingerprint=fingerprint,
    )
    if open_session:
        query["open_session"] = True
        fields["session"] = "open"
    with inv.deadline(config.total_timeout + 0.5):
        answer = ask(config, HOOK_ACCOUNT, query, fields)
    if answer is None:
        return deny(inv, log, fields, "mismatch", "the service answered another question")
    status = conclude(inv, log, fields, answer, config.max_grant)
    if status == 0:
        show_notice(config, log, inv, login, fingerprint)
        try:
            warn_ending(config, inv, login, answer)
        except Exception as e:  # noqa: BLE001 - a notice never decides a login
            log.warning(login=sanitize(login, 32), notice="error", error=type(e).__name__)
    if status != 0 and open_session and answer["decision"] == "allow":
        try:
            with inv.deadline(config.total_timeout + 0.5, lambda: status):
                abort_session(config, query)
        except Exception as e:  # noqa: BLE001 - the login is denied already, whatever failed
            log.warning(**fields, session="abort_failed", error=type(e).__name__)
    return status


def show_notice(
    config: HostConfig, log: HookLog, inv: Invocation, login: str, fingerprint: str | None
) -> None:
    """Print, once, why this login's last session without a terminal was ended, if that
    session used the same key (notices.py).

    Never changes the decision: any failure here is logged and the login goes on.
    """
    if fingerprint is None or not inv.live():
        # No key (a notice is bound to one), or the helper answered for this run
        # already: the notice stays for the next login with its key.
        return
    try:
        notice = notices.take(config.spool_dir, login, fingerprint)
        if notice is None:
            return
        inv.write(notices.text(notice, config.host_name) + "\n")
    except Exception as e:  # noqa: BLE001 - a notice never decides a login
        log.warning(login=sanitize(login, 32), notice="error", error=type(e).__name__)
        return
    log.info(
        login=sanitize(login, 32), notice="shown", request=notice["request_id"],
        why=notice["reason"],
    )  # fmt: skip


def warn_ending(config: HostConfig, inv: Invocation, login: str, answer: DecisionAnswer) -> None:
    """A login starting within the largest warning mark of its approval's end is told when
    access ends and how to extend (a session without a terminal gets no later warning)."""
    expires_at, rid = answer["expires_at"], answer["request_id"]
    if expires_at is None or rid is None or not config.warn_before:
        return
    now = int(time.time())
    if 0 < expires_at - now <= max(config.warn_before):
        inv.write(
            notices.ending_text(
                login=login, host=config.host_name, request_id=rid, expires_at=expires_at,
                now=now,
            )
            + "\n"
        )  # fmt: skip


def abort_session(config: HostConfig, query: AccountQuery) -> None:
    """Tell the service this host refused the login whose session its allow recorded.

    Otherwise the refused login stays an open, used session (the usage report)
    until enforce notices the connection is gone. Best effort: the login is
    denied either way, and a failure only leaves that session to enforce.
    """
    abort = SessionQuery(
        event="abort",
        host=query["host"],
        login=query["login"],
        rhost=query["rhost"],
        connection=query["connection"] or "",
        key_type=None,
        key=None,
        fingerprint=query["fingerprint"],
    )
    HookClient(config).request("POST", HOOK_SESSION, abort)


def main(argv: list[str] | None = None, *, inv: Invocation | None = None) -> int:
    return run(IDENT, _main, argv, user_message=True, inv=inv)


if __name__ == "__main__":
    raise SystemExit(main())
