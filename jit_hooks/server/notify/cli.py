"""`jit-server notify ...`: list channels, send a test message, show the outbox."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import click

from jit_hooks.errors import JitError


class NotifyTestFailed(JitError):
    """Raised when `jit-server notify test` could not deliver its message."""


def _config(env):  # noqa: ANN001, ANN202
    from jit_hooks.server.notify import config

    return config.load(env.settings.data_dir)


@click.group("notify")
def notify_group() -> None:
    """Notification channels and the outbox (docs/server.md, Notifications)."""


@notify_group.command("channels")
@click.pass_obj
def channels_cmd(env) -> None:  # noqa: ANN001
    """List the configured channels (never their secrets)."""
    cfg = _config(env)
    if not cfg.channels:
        click.echo("no notification channels configured", err=True)
        return
    for ch in cfg.channels.values():
        where = urlsplit(ch.url).netloc if ch.url else f"{ch.host}:{ch.port}"
        default = "default" if ch.name in cfg.default else ""
        click.echo(f"{ch.name}\t{ch.kind}\t{where}\t{default}".rstrip())


@notify_group.command("test")
@click.argument("channel")
@click.pass_obj
def test_cmd(env, channel: str) -> None:  # noqa: ANN001
    """Send a test message on CHANNEL now (not through the outbox)."""
    from jit_hooks.server.notify import channels

    cfg = _config(env)
    ch = cfg.channels.get(channel)
    if ch is None:
        known = ", ".join(sorted(cfg.channels)) or "none configured"
        raise click.ClickException(f"unknown channel {channel!r} (channels: {known})")
    try:
        channels.send(ch, cfg, channels.test_payload(ch, env.now()))
    except channels.SendError as e:
        raise NotifyTestFailed(f"channel {channel} ({ch.kind}): {e}") from None
    click.echo(f"sent a test message on {channel} ({ch.kind})")


@notify_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status_cmd(env, as_json: bool) -> None:  # noqa: ANN001
    """Undelivered and given-up notifications."""
    from sqlalchemy import case, func, select

    from jit_hooks.server.tables import notify_outbox

    t = notify_outbox.c
    pending = (t.delivered_at.is_(None)) & (t.failed_at.is_(None))

    def work(conn, **_):  # noqa: ANN001, ANN003, ANN202
        # One statement: under READ COMMITTED (PostgreSQL) separate SELECTs could see a
        # row both undelivered and, a moment later, given up.
        depth, oldest, failed, delivered = conn.execute(
            select(
                func.count(case((pending, 1))),
                func.min(case((pending, t.created_at))),
                func.count(t.failed_at),
                func.count(t.delivered_at),
            )
        ).one()
        age = 0 if oldest is None else max(0, env.now() - int(oldest))
        return {"undelivered": int(depth), "oldest_seconds": age, "failed": int(failed),
                "delivered": int(delivered)}  # fmt: skip

    out = env.run(work)
    if as_json:
        click.echo(json.dumps(out))
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")
