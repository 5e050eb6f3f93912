"""`jit login --sso`: the device sign-in, run by jit-server against the IdP (RFC 8628)."""

from __future__ import annotations

import time
from typing import Any

import click

from jit_hooks.cli.api_client import ApiError, Client, CliError, clean
from jit_hooks.protocol import API_PREFIX

# Never ask faster than this, whatever the service says (RFC 8628 default: 5 s).
MIN_INTERVAL = 1
# What a refusal means, in the service's error codes (docs/api.md).
REFUSED = {
    "expired": "the sign-in code expired before it was used; run `jit login --sso` again",
    "denied": "the sign-in was denied at the identity provider",
    "unknown_user": "your account is not a jit user; ask a jit admin to add you",
    "no_role": "none of your identity provider groups gives a role in jit; ask a jit admin",
    "disabled": "your jit user is disabled",
    "last_admin": "you are the last jit admin and your groups no longer give admin",
    "identity_mismatch": "that jit user belongs to another identity provider account",
    "bad_username": "the identity provider gave no user name jit accepts",
    "unverified_email": "the identity provider has not verified your email address",
    "email_domain": "your email address's domain is not one jit accepts",
    "bad_id_token": "the identity provider's ID token was refused by jit-server",
    "sso_unavailable": "SSO sign-in is not configured on this jit-server",
}


def _refused(e: ApiError) -> CliError:
    text = REFUSED.get(e.error or "", None) or e.detail or str(e)
    return CliError(f"SSO sign-in refused: {clean(text)}")


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def device_login(client: Client, *, sleep=time.sleep) -> tuple[str, dict]:  # noqa: ANN001
    """Print where to sign in, wait for it, return (token, user)."""
    try:
        start = client.call("POST", f"{API_PREFIX}/login/sso/device")
    except ApiError as e:
        raise _refused(e) from None
    if not isinstance(start, dict) or not isinstance(start.get("handle"), str):
        raise CliError("unexpected answer from the service (no sign-in handle)")
    uri = clean(start.get("verification_uri", ""), 500)
    code = clean(start.get("user_code", ""), 40)
    complete = start.get("verification_uri_complete")
    click.echo(f"To sign in, open {uri} and enter the code {code}", err=True)
    if isinstance(complete, str) and complete:
        click.echo(f"(or open {clean(complete, 600)})", err=True)
    interval = max(_int(start.get("interval"), 5), MIN_INTERVAL)
    deadline = time.monotonic() + max(_int(start.get("expires_in"), 600), 1)
    while True:
        sleep(interval)
        try:
            answer = client.call(
                "POST", f"{API_PREFIX}/login/sso/device/token", body={"handle": start["handle"]}
            )
        except ApiError as e:
            raise _refused(e) from None
        if not isinstance(answer, dict):
            raise CliError("unexpected answer from the service")
        if answer.get("status") == "pending":
            interval += max(_int(answer.get("slow_down"), 0), 0)
            if time.monotonic() > deadline:
                raise CliError(f"SSO sign-in refused: {REFUSED['expired']}")
            continue
        token, user = answer.get("token"), answer.get("user")
        if answer.get("status") != "ok" or not isinstance(token, str) or not isinstance(user, dict):
            raise CliError("unexpected answer from the service (no token)")
        return token, user
