"""What every hook entry point shares: --config, config loading, fail-closed edges."""

from __future__ import annotations

import sys
from collections.abc import Callable

from jit_hooks.errors import ConfigError, JitError, ServiceError
from jit_hooks.host import paths
from jit_hooks.host.config import HostConfig, load_config
from jit_hooks.host.log import HookLog

# The body of a hook: (config, log, positional args, log fields it fills in) -> exit status.
Body = Callable[[HostConfig, HookLog, list[str], dict], int]


def split_config_arg(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--config PATH`` / ``--config=PATH`` out of argv.

    Hooks never take the config path from $JIT_HOOKS_CONFIG: sshd gives the AKC no
    environment, and pam_exec gives the PAM hooks one the login user can add to
    (~/.pam_environment), which must not choose the config (service URL, token file).
    """
    path, rest, it = None, [], iter(argv)
    for arg in it:
        if arg == "--config":
            path = next(it, None)
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return path, rest


def run(ident: str, body: Body, argv: list[str] | None, *, user_message: bool) -> int:
    """Run ``body``; any failure denies: logs one line and returns 1.

    ``user_message``: print one short denial line on stdout (PAM hooks, whose
    stdout pam_exec shows the ssh user). The AKC's stdout is for key lines only.
    """
    config_path, args = split_config_arg(sys.argv[1:] if argv is None else argv)
    log = HookLog(ident, paths.SYSLOG_SOCKET)
    fields: dict = {}

    def deny(reason: str, **extra: object) -> int:
        log.warning(decision="deny", **fields, reason=reason, **extra)
        if user_message:
            print("jit: access denied: approval service unavailable or host misconfigured")
        return 1

    try:
        config = load_config(config_path or paths.CONFIG_PATH)
    except ConfigError as e:
        return deny("config", error=str(e))
    log = HookLog(ident, config.syslog_socket)
    try:
        return body(config, log, args, fields)
    except ServiceError as e:
        return deny(e.reason, url=e.url)
    except ConfigError as e:
        return deny("config", error=str(e))
    except JitError as e:
        return deny("error", error=str(e))
    except Exception as e:  # fail closed on our own bugs too, and say what broke
        return deny("internal", error=type(e).__name__)
