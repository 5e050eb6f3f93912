"""`jit-server sso link`: bind an existing jit user to their identity provider account."""

from __future__ import annotations

import click

from jit_hooks.server.cli import Env

pass_env = click.pass_obj  # ctx.obj is the Env (see audit_cli.py for why not cli.pass_env)


@click.group("sso")
def sso_group() -> None:
    """OpenID Connect sign-in (DATA_DIR/oidc.toml)."""


@sso_group.command("link")
@click.argument("name")
@click.option(
    "--subject",
    required=True,
    help="The account's `sub` claim at the identity provider (a refused sign-in's"
    " message and its login.failed audit event show it).",
)
@pass_env
def sso_link(env: Env, name: str, subject: str) -> None:
    """Let NAME, a jit user made before SSO, sign in through the IdP account SUBJECT.

    Until then their SSO sign-in is refused (not_linked): a name at the IdP alone
    is not proof of who someone is in jit. Audited (user.sso_bound, via admin).
    """
    from jit_hooks.server import oidc_config, oidc_signin

    config = oidc_config.load(env.settings.data_dir)
    if config is None:
        raise click.ClickException("SSO is not configured (no oidc.toml in the data directory)")
    env.run(
        oidc_signin.link,
        name=name,
        issuer=config.issuer,
        sub=subject,
        actor=env.actor,
        now=env.now(),
    )
    click.echo(f"linked user {name} to subject {subject!r} at {config.issuer}", err=True)
