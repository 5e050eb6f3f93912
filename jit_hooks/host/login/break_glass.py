"""Break-glass accounts: bypass the service, log loudly, report when the service answers."""

from __future__ import annotations

from jit_hooks.errors import ConfigError, ServiceError
from jit_hooks.host.login.client import HookClient, hard_deadline
from jit_hooks.host.login.config import HostConfig
from jit_hooks.host.login.log import HookLog
from jit_hooks.protocol import BreakGlassQuery

# Reporting is best effort and must not make an emergency login wait for a
# sick service: a short budget, whatever the configured one.
REPORT_BUDGET = 2.0


def is_break_glass(config: HostConfig, login: str) -> bool:
    return login in config.break_glass


def allow(
    config: HostConfig,
    log: HookLog,
    *,
    login: str,
    rhost: str | None,
    conn: str | None,
    stage: str,
    inv=None,  # noqa: ANN001 - hook.Invocation (the resident helper's deadline); None: SIGALRM
) -> int:
    """Log the use at ALERT, try to report it to the service's audit, and allow (0)."""
    fields = {"login": login, "rhost": rhost, "connection": conn, "stage": stage}
    log.alert(decision="allow", reason="break_glass", **fields)
    budget = min(REPORT_BUDGET, config.total_timeout)

    def unreported(error: str) -> int:
        log.alert(event="break_glass_report", reported="no", error=error, **fields)
        return 0

    deadline = (
        hard_deadline(budget + 0.5)
        if inv is None
        else inv.deadline(budget + 0.5, lambda: unreported("timeout"))
    )
    try:
        with deadline:
            HookClient(config, budget=budget).break_glass(
                BreakGlassQuery(login=login, rhost=rhost, connection=conn, stage=stage)
            )
    except (ServiceError, ConfigError) as e:
        return unreported(getattr(e, "reason", "config"))
    else:
        log.info(event="break_glass_report", reported="yes", **fields)
    return 0
