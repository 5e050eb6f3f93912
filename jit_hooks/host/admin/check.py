"""`jit-hooks check`: run the real hook bodies for one login and key, report what sshd would get.

No second implementation of the hook flow: the AuthorizedKeysCommand body runs
with the offered key (as sshd's %u %f %t %k), records the key it accepted under
this process's connection id exactly as for sshd's monitor, and the PAM account
body then finds that record and asks the service, as on a real login. Their log
lines go to syslog like any hook's (with ``via=check``) and are also kept here
to explain the outcome. The service audits these calls like any hook call.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field

from jit_hooks import sshkeys
from jit_hooks.errors import ConfigError, JitError, ServiceError
from jit_hooks.host.login import authorized_keys, connection, pam_account
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.hook import Invocation
from jit_hooks.host.login.log import HookLog

# What the PAM account hook sees as PAM_SERVICE (the audit shows it).
PAM_SERVICE = "jit-hooks-check"


class _Recorder(HookLog):
    """A hook's log that also keeps each line's fields (the last one explains the outcome)."""

    def __init__(self, ident: str, socket_path: str):
        super().__init__(ident, socket_path)
        self.lines: list[dict[str, object]] = []

    def line(self, severity: int, **fields: object) -> str:
        fields["via"] = "check"
        self.lines.append(fields)
        return super().line(severity, **fields)

    @property
    def last(self) -> dict[str, object]:
        return self.lines[-1] if self.lines else {}


@dataclass
class Step:
    """One hook body's outcome: exit status, stdout, its last log line's fields."""

    status: int
    out: str
    fields: dict[str, object] = field(default_factory=dict)
    error: ServiceError | None = None  # the service did not answer (the hook denies)


def _run(ident: str, body, config: HostConfig, args: list[str], inv: Invocation) -> Step:  # noqa: ANN001
    log = _Recorder(ident, config.syslog_socket)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = body(config, log, args, {}, inv)
    except ServiceError as e:
        return Step(1, out.getvalue(), log.last, e)
    except (ConfigError, JitError) as e:
        return Step(1, out.getvalue(), {"decision": "deny", "reason": "error", "error": str(e)})
    return Step(status, out.getvalue(), log.last)


@dataclass
class CheckResult:
    key: Step  # the AuthorizedKeysCommand: out is the key line sshd would get
    account: Step | None  # the PAM account hook (None if the key step did not answer)

    @property
    def allowed(self) -> bool:
        return bool(self.key.out) and self.account is not None and self.account.status == 0


def check(config: HostConfig, login: str, offered: sshkeys.PublicKey) -> CheckResult:
    """The key hook and the account hook for ``login`` offering ``offered``, as on a login."""
    pid = os.getpid()
    conn = connection.connection_id(pid)
    # The hooks' bodies, as the hook programs and jit-hooksd run them.
    akc = Invocation(
        [login, offered.fingerprint, offered.key_type, offered.blob], ppid=pid, via="check"
    )
    try:
        key = _run(authorized_keys.IDENT, authorized_keys._main, config, akc.argv, akc)
        if key.error is not None:
            return CheckResult(key, None)
        environ = [("PAM_USER", login), ("PAM_TYPE", "account"), ("PAM_SERVICE", PAM_SERVICE)]
        pam = Invocation([], environ=environ, ppid=pid, via="check")
        return CheckResult(key, _run(pam_account.IDENT, pam_account._main, config, [], pam))
    finally:
        # The record names this process, which no sshd will ever be: drop it now.
        with contextlib.suppress(OSError, ValueError):
            os.unlink(connection._record_path(config.state_dir, conn))
