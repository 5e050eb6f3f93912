"""ID token checks on real tokens from the real provider: wrong audience, issuer, keys, expiry."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jit_hooks.server.oidc import DEVICE_GRANT, OidcClient, SsoError, validate_id_token
from jit_hooks.server.oidc_config import OidcConfig
from tests.oidc_provider import CLIENT_ID, Person, Provider, start_provider
from tests.sso.conftest import ACCOUNTS, needs_provider

pytestmark = needs_provider


@pytest.fixture(scope="module")
def providers(tmp_path_factory) -> Iterator[tuple[Provider, Provider]]:
    tmp = tmp_path_factory.mktemp("idps")
    a = start_provider(tmp / "a", accounts=ACCOUNTS, redirect_uris=[])
    try:
        b = start_provider(tmp / "b", accounts=ACCOUNTS, redirect_uris=[])
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def client_for(p: Provider, **kw) -> OidcClient:  # noqa: ANN003
    return OidcClient(
        OidcConfig(
            issuer=p.issuer,
            client_id=CLIENT_ID,
            client_secret=p.client_secret,
            ca_file=p.ca_file,
            **kw,
        )
    )


@pytest.fixture(scope="module")
def id_token(providers) -> str:  # noqa: ANN001
    """A real ID token for alice from provider A, through the device grant."""
    a, _ = providers
    client = client_for(a)
    started = client.start_device()
    Person(a.issuer, a.ca_file, "alice").enter_device_code(
        started.verification_uri, started.user_code
    )
    body = client._token({"grant_type": DEVICE_GRANT, "device_code": started.device_code})
    return body["id_token"]


def check(token: str, p: Provider, keys_from: Provider | None = None, **kw) -> dict:  # noqa: ANN003
    args = {"issuer": p.issuer, "client_id": CLIENT_ID, "now": int(time.time()), "skew": 60}
    args.update(kw)
    return validate_id_token(token, keys=client_for(keys_from or p).keys(), **args)


def test_good_token_passes(providers, id_token: str) -> None:  # noqa: ANN001
    claims = check(id_token, providers[0])
    assert claims["sub"] == "alice" and claims["groups"] == ["sre", "staff"]


@pytest.mark.parametrize(
    "change, why",
    [
        ({"client_id": "someone-else"}, "audience mismatch"),
        ({"issuer": "https://127.0.0.1:1"}, "issuer mismatch"),
        ({"nonce": "not-this-one"}, "nonce mismatch"),
    ],
)
def test_wrong_expectations_refuse(providers, id_token: str, change: dict, why: str) -> None:  # noqa: ANN001
    with pytest.raises(SsoError, match=why):
        check(id_token, providers[0], **change)


def test_expired_token_refused(providers, id_token: str) -> None:  # noqa: ANN001
    exp = json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "=="))["exp"]
    # Within the allowed skew it still passes; one second past it, refused.
    check(id_token, providers[0], now=exp + 59)
    with pytest.raises(SsoError, match="expired"):
        check(id_token, providers[0], now=exp + 60)


def test_other_providers_keys_refuse(providers, id_token: str) -> None:  # noqa: ANN001
    # B's keys cannot vouch for A's token, even when B's issuer name were expected.
    a, b = providers
    with pytest.raises(SsoError, match="signature"):
        check(id_token, a, keys_from=b)


def _reencode(token: str, **changes) -> str:  # noqa: ANN003
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


def test_tampered_claims_refused(providers, id_token: str) -> None:  # noqa: ANN001
    with pytest.raises(SsoError, match="signature"):
        check(_reencode(id_token, preferred_username="root", groups=["admins"]), providers[0])


def test_unsigned_token_refused(providers, id_token: str) -> None:  # noqa: ANN001
    head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = id_token.split(".")[1]
    with pytest.raises(SsoError, match="algorithm 'none' not accepted"):
        check(f"{head}.{body}.", providers[0])


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    from jit_hooks.server.oidc_config import OidcConfigError, parse

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    raw = {
        "issuer": "https://idp.example.org",
        "client_id": "jit",
        "client_secret_file": str(secret),
    }
    with pytest.raises(OidcConfigError, match="must not be readable by others"):
        parse(raw, "oidc.toml", tmp_path)
    secret.chmod(0o600)
    config = parse(raw, "oidc.toml", tmp_path)
    assert config.client_secret == "s3cret" and "s3cret" not in repr(config)


def _es256(claims: dict) -> tuple[str, dict]:
    """A token signed by a key made here (the provider under test never sets a foreign
    azp, so this is the one ID token not issued by it); the key's JWK to check it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": "t", "use": "sig",
           "x": b64(pub.x.to_bytes(32, "big")), "y": b64(pub.y.to_bytes(32, "big"))}  # fmt: skip
    head = b64(json.dumps({"alg": "ES256", "kid": "t"}).encode())
    body = b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}", jwk


def test_a_foreign_azp_is_refused_even_with_one_audience() -> None:
    now = int(time.time())
    base = {"iss": "https://idp.test", "sub": "alice", "iat": now, "exp": now + 300}
    args = {"issuer": "https://idp.test", "client_id": "jit", "now": now, "skew": 60}
    for claims, ok in (
        ({"aud": "jit"}, True),
        ({"aud": "jit", "azp": "jit"}, True),
        ({"aud": "jit", "azp": "other-client"}, False),
        ({"aud": ["jit"], "azp": "other-client"}, False),
    ):
        token, jwk = _es256(base | claims)
        if ok:
            assert validate_id_token(token, keys=[jwk], **args)["sub"] == "alice"
        else:
            with pytest.raises(SsoError, match="authorized party mismatch"):
                validate_id_token(token, keys=[jwk], **args)
