"""PAM session hook (pam_exec, type=open_session / close_session).

``session required pam_exec.so quiet stdout type=open_session /usr/bin/jit-pam-session``
``session optional pam_exec.so quiet type=close_session /usr/bin/jit-pam-session``

At open, sshd exposes the accepted key in SSH_AUTH_INFO_0 (``publickey TYPE
BLOB``, with ExposeAuthInfo yes): the hook re-checks that the key's owner holds
an active approval and has the service record the live session; a failure makes
sshd refuse the session (no command, shell or forwarding). At close it reports
the end of the session and always exits 0.
"""

from __future__ import annotations

from typing import Literal

from jit_hooks import sshkeys
from jit_hooks.errors import JitError, KeyParseError
from jit_hooks.host.login import break_glass
from jit_hooks.host.login.answers import sanitize
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.hook import Invocation, run
from jit_hooks.host.login.log import HookLog
from jit_hooks.host.login.pam_account import ask, conclude, deny, pam_env
from jit_hooks.protocol import HOOK_SESSION, LOGIN_RE, SessionQuery

IDENT = "jit-pam-session"


def auth_key(auth_info: str) -> sshkeys.PublicKey | None:
    """The last ``publickey TYPE BLOB`` line of SSH_AUTH_INFO_0, validated; None if none."""
    key = None
    for line in auth_info.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "publickey":
            try:
                key = sshkeys.parse_blob(parts[1], parts[2])
            except KeyParseError:
                key = None  # e.g. a certificate type: decided by login, like a password
    return key


def _main(config: HostConfig, log: HookLog, args: list[str], fields: dict, inv: Invocation) -> int:
    login, rhost, _service, pam_type = pam_env(inv)
    event: Literal["open", "close"] | None = (
        "open" if pam_type == "open_session" else "close" if pam_type == "close_session" else None
    )
    fields.update(event=event, login=sanitize(login, 32), rhost=rhost)
    if event is None:
        return deny(inv, log, fields, "wrong_pam_type", "hook misconfigured")
    if not LOGIN_RE.match(login):
        return deny(inv, log, fields, "bad_login", "invalid login name")
    conn = inv.connection_id()
    fields["connection"] = conn
    if break_glass.is_break_glass(config, login):
        if event == "close":
            log.alert(decision="close", **fields, reason="break_glass")
            return 0
        return break_glass.allow(
            config, log, login=login, rhost=rhost, conn=conn, stage="session", inv=inv
        )
    # SSH_AUTH_INFO_0 comes from the PAM environment, which pam_env user_readenv=1
    # lets the login user overwrite; pamenv can't tell, the order of the PAM file
    # does: `jit-hooks enable` runs this hook before pam_env (see wiring.py).
    key = auth_key(inv.getenv("SSH_AUTH_INFO_0") or "")
    fields["fingerprint"] = key.fingerprint if key else None
    query = SessionQuery(
        event=event,
        host=config.host_name,
        login=login,
        rhost=rhost,
        connection=conn,
        key_type=key.key_type if key else None,
        key=key.blob if key else None,
        fingerprint=key.fingerprint if key else None,
    )
    if event == "close":
        # A session that ends can't be refused; report it, and never fail.
        def unreported(error: object) -> int:
            log.warning(decision="close", **fields, reported="no", error=error)
            return 0

        try:
            with inv.deadline(config.total_timeout + 0.5, lambda: unreported("timeout")):
                answer = ask(config, HOOK_SESSION, query, fields)
        except JitError as e:
            return unreported(getattr(e, "reason", e))
        if answer is None:
            return unreported("mismatch")
        log.info(decision="close", **fields, reported="yes")
        return 0
    with inv.deadline(config.total_timeout + 0.5):
        answer = ask(config, HOOK_SESSION, query, fields)
    if answer is None:
        return deny(inv, log, fields, "mismatch", "the service answered another question")
    return conclude(inv, log, fields, answer, config.max_grant)


def main(argv: list[str] | None = None, *, inv: Invocation | None = None) -> int:
    return run(IDENT, _main, argv, user_message=True, inv=inv)


if __name__ == "__main__":
    raise SystemExit(main())
