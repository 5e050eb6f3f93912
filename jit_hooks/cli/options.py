"""Options shared by every `jit` command, defined once (pip-tools style)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from jit_hooks.cli import userconfig
from jit_hooks.cli.api_client import Client, CliError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """Where to reach the service and how to talk; filled by the option callbacks."""

    config_path: Path | None = None
    url: str | None = None
    token: str | None = None
    ca_file: str | None = None
    ca_file_from_flag: bool = False
    verbose: int = 0
    quiet: bool = False

    def client(self, *, auth: bool = True) -> Client:
        if not self.url:
            raise CliError("no service URL: pass --url, set JIT_URL, or run `jit login --url URL`")
        if not self.url.startswith(("https://", "http://")):
            raise CliError(f"service URL must start with https:// or http://, not {self.url!r}")
        if auth and not self.token:
            raise CliError("not logged in: run `jit login` (or set JIT_TOKEN)")
        return Client(self.url, self.token if auth else None, self.ca_file)


def settings(ctx: click.Context | None = None) -> Settings:
    ctx = ctx or click.get_current_context()
    return ctx.ensure_object(Settings)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Eager, so it runs before the other options look at default_map: the file
    # supplies defaults, environment variables and flags override them.
    path = Path(value).expanduser() if value else userconfig.default_path()
    s = settings(ctx)
    s.config_path = path
    data = userconfig.load(path)
    if data.get("token") and userconfig.too_open(path):
        click.echo(
            f"jit: warning: {path} holds a token and is readable by others; run: chmod 600 {path}",
            err=True,
        )
    ctx.default_map = {**data, **(ctx.default_map or {})}


def _store(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if isinstance(value, str) and not value:
            value = None
        setattr(settings(ctx), attr, value)
        if attr == "ca_file":
            source = ctx.get_parameter_source(param.name or "")
            settings(ctx).ca_file_from_flag = source in (
                click.core.ParameterSource.COMMANDLINE,
                click.core.ParameterSource.ENVIRONMENT,
            )
            if value:
                settings(ctx).ca_file = str(Path(value).expanduser())
        if attr in ("verbose", "quiet"):
            _setup_logging(settings(ctx))

    return callback


def _setup_logging(s: Settings) -> None:
    level = logging.WARNING
    if s.verbose >= 1:
        level = logging.DEBUG if s.verbose >= 2 else logging.INFO
    elif s.quiet:
        level = logging.ERROR
    # -vv adds urllib3's connection lines. Neither logs headers (that would be
    # http.client's debuglevel, never set): the Authorization header stays secret.
    names = ["jit_hooks", "urllib3"] if s.verbose >= 2 else ["jit_hooks"]
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(getattr(h, "jit_cli", False) for h in logger.handlers):
            handler = logging.StreamHandler()  # stderr: stdout stays clean for data
            handler.setFormatter(logging.Formatter("jit: %(message)s"))
            handler.jit_cli = True  # type: ignore[attr-defined]
            logger.addHandler(handler)


def api_options(f: F) -> F:
    """--config, --url, --token, --ca-file, -v, -q: every command that talks to the service."""
    decorators = [
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            envvar="JIT_CONFIG",
            is_eager=True,
            expose_value=False,
            callback=_load_config,
            help="Config file (TOML: url, token, ca_file). "
            "[default: ~/.config/jit/config.toml; env JIT_CONFIG]",
        ),
        click.option(
            "--url",
            envvar="JIT_URL",
            metavar="URL",
            expose_value=False,
            callback=_store("url"),
            help="Approval service URL, e.g. https://jit.example.org:8443 [env JIT_URL]",
        ),
        click.option(
            "--token",
            envvar="JIT_TOKEN",
            metavar="TOKEN",
            expose_value=False,
            callback=_store("token"),
            help="API token (prefer `jit login`: flags show in `ps`) [env JIT_TOKEN]",
        ),
        click.option(
            "--ca-file",
            envvar="JIT_CA_FILE",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_store("ca_file"),
            help="CA bundle to verify the service's TLS certificate [env JIT_CA_FILE]",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_store("verbose"),
            help="Show HTTP calls on stderr (-vv: more).",
        ),
        click.option(
            "-q",
            "--quiet",
            is_flag=True,
            expose_value=False,
            callback=_store("quiet"),
            help="Print only data and errors.",
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table (for scripts)."
)


def info(message: str) -> None:
    """A status line on stderr, unless -q."""
    if not settings().quiet:
        click.echo(message, err=True)


# -- parameter types ---------------------------------------------------------

_DURATION_RE = re.compile(r"\A(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")


def parse_duration(text: str) -> int:
    """'90m', '2h', '1h30m', '1d', '45s' or bare seconds '3600' -> seconds (> 0)."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        m = _DURATION_RE.match(text)
        if not text or not m or not any(m.groups()):
            raise ValueError(f"{text!r} is not a duration (try 90m, 2h, 1h30m or 3600)")
        d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise ValueError("duration must be more than 0")
    return seconds


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def parse_start(text: str, now: float) -> int:
    """'+30m' (from now) or ISO 8601 ('2026-11-25T18:00', naive = local time) -> unix s."""
    text = text.strip()
    if text.startswith("+"):
        return int(now) + parse_duration(text[1:])
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither +DURATION (e.g. +30m) nor an ISO 8601 time "
            "(e.g. 2026-11-25T18:00 or 2026-11-25T18:00+01:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # naive: the user's local time
    return int(dt.timestamp())


class StartTime(click.ParamType):
    name = "time"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        import time

        if isinstance(value, int):
            return value
        try:
            ts = parse_start(str(value), time.time())
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if ts < time.time() - 60:
            self.fail(f"{value!r} is in the past", param, ctx)
        return ts


class Selector(click.ParamType):
    """k=v label, as used in host labels and policies."""

    name = "k=v"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key.strip() or not val.strip():
            self.fail(f"{value!r} is not a label selector of the form key=value", param, ctx)
        return key.strip(), val.strip()


# How often --wait and --watch ask the service again (seconds).
POLL_SECONDS = 2.0


def wait_limits(f: F) -> F:
    """--timeout and the hidden --interval of a command that waits for a decision."""
    f = click.option(
        "--interval",
        type=click.FloatRange(0.1, 3600),
        default=POLL_SECONDS,
        show_default=True,
        hidden=True,
        help="Seconds between two checks of the request.",
    )(f)
    return click.option(
        "--timeout",
        type=Duration(),
        default="1h",
        show_default=True,
        help="With --wait: give up waiting after this long (the request stays pending).",
    )(f)
