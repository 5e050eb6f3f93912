"""What every hook entry point shares: --config, config loading, fail-closed edges.

A hook body never reads process globals (sys.argv, os.environ, the parent pid,
sys.stdout) itself: it gets one ``Invocation`` that carries them. The hook
process builds it from itself (``Invocation.from_process``); the resident helper
(daemon.py) builds it from a client's request, so both run the same code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from jit_hooks.errors import ConfigError, JitError, ServiceError
from jit_hooks.host import paths
from jit_hooks.host.login import connection, pamenv
from jit_hooks.host.login.config import HostConfig, load_config
from jit_hooks.host.login.log import HookLog

USER_DENIAL = "jit: access denied: approval service unavailable or host misconfigured"


class Supervisor(Protocol):
    """What the helper (daemon.py's per-request ``Run``) offers the body it runs.

    The helper runs bodies in threads, where signals can't interrupt a call: it
    watches the deadline the body declares and answers for the body when it passes;
    from then on the body is not live (its output and log lines are ignored).
    """

    default_expiry: Callable[[], int] | None

    def live(self) -> bool: ...

    def write(self, text: str) -> None: ...

    def deadline(
        self, seconds: float, on_expiry: Callable[[], int] | None
    ) -> AbstractContextManager[None]: ...


class Invocation:
    """One hook run's inputs and output.

    ``argv``: the arguments after the program name. ``environ``: NAME=value entries
    in the order the hook process got them (``None``: this process's own, read
    through pamenv only when asked). ``ppid``: sshd's per-connection monitor (the
    hook's parent). ``via``: a log field naming who ran the body ("hooksd",
    "fallback"), None in a plain hook process. ``supervisor``: the helper's
    per-request object when the helper runs the body (stdout goes to it), else None.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        environ: list[tuple[str, str]] | None = None,
        ppid: int | None = None,
        via: str | None = None,
        supervisor: Supervisor | None = None,
    ):
        self.argv = list(argv)
        self.environ = environ
        self.ppid = ppid
        self.via = via
        self.supervisor = supervisor

    @classmethod
    def from_process(cls, argv: list[str] | None = None) -> Invocation:
        """This process: its argv, environment, parent and stdout (today's hook process)."""
        return cls(sys.argv[1:] if argv is None else argv)

    def pam_items(self, *names: str) -> dict[str, str | None]:
        """PAM_* items as pam_exec set them (last duplicate wins), see pamenv."""
        if self.environ is None:
            return pamenv.pam_items(*names)
        return pamenv.last_values(self.environ, names)

    def getenv(self, name: str) -> str | None:
        """A variable as os.environ of the hook process would give it (first duplicate)."""
        if self.environ is None:
            return os.environ.get(name)
        return pamenv.first_value(self.environ, name)

    def connection_id(self) -> str:
        """The connection id of the hook's parent, sshd's per-connection monitor."""
        return connection.connection_id(self.ppid)

    def write(self, text: str) -> None:
        """Stdout of the hook (key lines, the PAM user message)."""
        if self.supervisor is not None:
            self.supervisor.write(text)
            return
        sys.stdout.write(text)
        sys.stdout.flush()

    def live(self) -> bool:
        """False in the body once the helper answered for it (its output is ignored)."""
        return self.supervisor is None or self.supervisor.live()

    def check_live(self) -> None:
        """Raise if the helper already answered for this run (don't act on it any more)."""
        if not self.live():
            raise JitError("answered already: hard deadline reached")

    @contextmanager
    def deadline(
        self, seconds: float, on_expiry: Callable[[], int] | None = None
    ) -> Iterator[None]:
        """Bound a service call by ``seconds`` in all.

        In the hook process this is client.hard_deadline (a SIGALRM backstop). In
        the helper the supervisor answers for the body when the deadline passes
        (``on_expiry``: the exit status the body gives when the call times out,
        logging as it does; by default the deny of ``run``) and cuts the body's
        service connection.
        """
        if self.supervisor is None:
            from jit_hooks.host.login.client import hard_deadline

            with hard_deadline(seconds):
                yield
            return
        with self.supervisor.deadline(seconds, on_expiry):
            yield


class _Log(HookLog):
    """HookLog of one invocation: adds ``via``, and falls silent once the helper answered."""

    def __init__(self, ident: str, socket_path: str, inv: Invocation):
        super().__init__(ident, socket_path)
        self.inv = inv

    def line(self, severity: int, **fields: object) -> str:
        if not self.inv.live():
            return ""
        if self.inv.via:
            fields["via"] = self.inv.via
        return super().line(severity, **fields)


def _hook_log(ident: str, socket_path: str, inv: Invocation) -> HookLog:
    return HookLog(ident, socket_path) if inv.via is None else _Log(ident, socket_path, inv)


# The body of a hook: (config, log, positional args, log fields it fills in, invocation)
# -> exit status.
Body = Callable[[HostConfig, HookLog, list[str], dict, Invocation], int]


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


def run(
    ident: str,
    body: Body,
    argv: list[str] | None,
    *,
    user_message: bool,
    inv: Invocation | None = None,
) -> int:
    """Run ``body``; any failure denies: logs one line and returns 1.

    ``user_message``: print one short denial line on stdout (PAM hooks, whose
    stdout pam_exec shows the ssh user). The AKC's stdout is for key lines only.
    ``inv``: the invocation (default: this process, with ``argv`` if given).
    """
    if inv is None:
        inv = Invocation.from_process(argv)
    config_path, args = split_config_arg(inv.argv)
    log = _hook_log(ident, paths.SYSLOG_SOCKET, inv)
    fields: dict = {}

    def deny(reason: str, **extra: object) -> int:
        log.warning(decision="deny", **fields, reason=reason, **extra)
        if user_message:
            inv.write(USER_DENIAL + "\n")
        return 1

    try:
        config = load_config(config_path or paths.CONFIG_PATH)
    except ConfigError as e:
        loaded = getattr(e, "config", None)  # the config file passed: log where it says
        if loaded is not None:
            log = _hook_log(ident, loaded.syslog_socket, inv)
        return deny("config", error=str(e))
    log = _hook_log(ident, config.syslog_socket, inv)
    if inv.supervisor is not None:
        inv.supervisor.default_expiry = lambda: deny("timeout")  # as hard_deadline's timeout
    try:
        return body(config, log, args, fields, inv)
    except ServiceError as e:
        return deny(e.reason, url=e.url)
    except ConfigError as e:
        return deny("config", error=str(e))
    except JitError as e:
        return deny("error", error=str(e))
    except Exception as e:  # fail closed on our own bugs too, and say what broke
        return deny("internal", error=type(e).__name__)
