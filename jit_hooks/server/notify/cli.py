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
    from sqlalchemy import func, select

    from jit_hooks.server.notify import outbox
    from jit_hooks.server.tables import notify_outbox

    def work(conn, **_):  # noqa: ANN001, ANN003, ANN202
        depth, age = outbox.stats(conn, now=env.now())
        failed = conn.execute(
            select(func.count()).where(notify_outbox.c.failed_at.is_not(None))
        ).scalar()
        delivered = conn.execute(
            select(func.count()).where(notify_outbox.c.delivered_at.is_not(None))
        ).scalar()
        return {"undelivered": depth, "oldest_seconds": age, "failed": failed,
                "delivered": delivered}  # fmt: skip

    out = env.run(work)
    if as_json:
        click.echo(json.dumps(out))
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")
