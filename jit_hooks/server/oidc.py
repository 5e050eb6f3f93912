"""OpenID Connect client for sign-in: discovery, device grant, auth code + PKCE, ID token checks.

Blocking (requests); routes call it through asyncio.to_thread. The ID token's
signature is checked with ``cryptography`` against the provider's JWKS, for
the asymmetric algorithms only (RS256, ES256): "none" and HMAC algorithms,
whose key would be our client secret, are refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from jit_hooks.errors import JitError
from jit_hooks.server.oidc_config import OidcConfig

log = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ALGORITHMS = ("RS256", "ES256")
# Discovery and keys are fetched again after this long (key rotation), and the
# keys at once when a token names a key id we do not have.
CACHE_SECONDS = 300
MAX_ANSWER = 256 * 1024


class SsoError(JitError):
    """Raised when a sign-in through the IdP fails; ``reason`` is a short code for audit and API."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


class Pending(SsoError):
    """Raised while the person has not finished the device sign-in (or asked us to slow down)."""


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64e(hashlib.sha256(verifier.encode()).digest())


def _public_key(jwk: dict) -> Any:
    kty = jwk.get("kty")
    if kty == "RSA":
        n = int.from_bytes(_b64d(jwk["n"]), "big")
        e = int.from_bytes(_b64d(jwk["e"]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and jwk.get("crv") == "P-256":
        x = int.from_bytes(_b64d(jwk["x"]), "big")
        y = int.from_bytes(_b64d(jwk["y"]), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raise ValueError("unsupported key type")


def _verify(alg: str, key: Any, signed: bytes, sig: bytes) -> None:
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
        key.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(sig) == 64:
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    else:
        raise InvalidSignature


def validate_id_token(
    token: str,
    *,
    keys: list[dict],
    issuer: str,
    client_id: str,
    now: int,
    skew: int,
    nonce: str | None = None,
) -> dict:
    """The ID token's claims if its signature, iss, aud, azp, exp, iat (and nonce) hold.

    SsoError(reason="bad_id_token") names the first check that failed.
    """

    def bad(why: str) -> SsoError:
        return SsoError("bad_id_token", f"ID token refused: {why}")

    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise bad("not a signed JWT")
    try:
        header = json.loads(_b64d(parts[0]))
        claims = json.loads(_b64d(parts[1]))
        sig = _b64d(parts[2])
    except (ValueError, TypeError):
        raise bad("not a signed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise bad("not a signed JWT")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise bad(f"algorithm {str(alg)[:20]!r} not accepted")
    kid = header.get("kid")
    candidates = [
        k for k in keys if (kid is None or k.get("kid") == kid) and k.get("use", "sig") == "sig"
    ]
    signed = f"{parts[0]}.{parts[1]}".encode()
    for jwk in candidates:
        try:
            _verify(alg, _public_key(jwk), signed, sig)
            break
        except (InvalidSignature, ValueError, KeyError, TypeError):
            continue
    else:
        raise bad("signature does not verify with the provider's keys")
    if claims.get("iss") != issuer:
        raise bad("issuer mismatch")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if client_id not in auds:
        raise bad("audience mismatch")
    # OIDC Core 3.1.3.7: with several audiences azp must be us; an azp that names
    # another client is refused whatever the aud (a token issued to that client).
    if (len(auds) > 1 or "azp" in claims) and claims.get("azp") != client_id:
        raise bad("authorized party mismatch")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise bad("exp or iat missing")
    if now >= exp + skew:
        raise bad("expired")
    if iat > now + skew:
        raise bad("issued in the future")
    if nonce is not None and not (
        isinstance(claims.get("nonce"), str) and secrets.compare_digest(claims["nonce"], nonce)
    ):
        raise bad("nonce mismatch")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise bad("no subject")
    return claims


@dataclass
class DeviceStart:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class OidcClient:
    """The service as an OAuth client of one IdP (one per app; thread-safe caches)."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy or netrc from the service's environment
        self.http.headers["User-Agent"] = "jit-server"
        self._lock = threading.Lock()
        self._meta: dict | None = None
        self._meta_at = 0.0
        self._keys: list[dict] = []
        self._keys_at = 0.0

    # -- HTTP ------------------------------------------------------------------

    def _json(self, method: str, url: str, **kw: Any) -> tuple[int, dict]:
        try:
            r = self.http.request(
                method,
                url,
                timeout=self.config.timeout,
                verify=self.config.ca_file or True,
                allow_redirects=False,
                **kw,
            )
        except requests.RequestException as e:
            log.warning("sso: identity provider unreachable: %s", type(e).__name__)
            raise SsoError("idp_unreachable", "the identity provider cannot be reached") from None
        body: Any = None
        if len(r.content) <= MAX_ANSWER:
            try:
                body = r.json()
            except ValueError:
                body = None
        if not isinstance(body, dict):
            log.warning("sso: identity provider answered %s without a JSON object", r.status_code)
            raise SsoError("idp_error", "the identity provider gave an unusable answer")
        return r.status_code, body

    def _client_auth(self) -> tuple[str, str]:
        # client_secret_basic: the secret goes in the Authorization header, never a URL.
        return (self.config.client_id, self.config.client_secret)

    def metadata(self) -> dict:
        with self._lock:
            if self._meta is not None and time.monotonic() - self._meta_at < CACHE_SECONDS:
                return self._meta
        url = self.config.issuer + "/.well-known/openid-configuration"
        status, meta = self._json("GET", url)
        if status != 200 or meta.get("issuer") != self.config.issuer:
            log.warning("sso: discovery at %s: status %s or issuer mismatch", url, status)
            raise SsoError("idp_error", "the identity provider's discovery document is wrong")
        for key in ("token_endpoint", "jwks_uri"):
            if not str(meta.get(key, "")).startswith("https://"):
                raise SsoError("idp_error", f"the identity provider's {key} is not https")
        with self._lock:
            self._meta, self._meta_at = meta, time.monotonic()
        return meta

    def keys(self, *, refresh: bool = False) -> list[dict]:
        with self._lock:
            fresh = time.monotonic() - self._keys_at < CACHE_SECONDS
            if self._keys and fresh and not refresh:
                return self._keys
        status, body = self._json("GET", self.metadata()["jwks_uri"])
        found = body.get("keys")
        if status != 200 or not isinstance(found, list):
            raise SsoError("idp_error", "the identity provider's keys cannot be read")
        keys = [k for k in found if isinstance(k, dict)]
        with self._lock:
            self._keys, self._keys_at = keys, time.monotonic()
        return keys

    # -- flows -----------------------------------------------------------------

    def start_device(self) -> DeviceStart:
        endpoint = str(self.metadata().get("device_authorization_endpoint") or "")
        if not endpoint.startswith("https://"):
            raise SsoError("sso_unavailable", "the identity provider has no device sign-in")
        status, body = self._json(
            "POST",
            endpoint,
            data={"client_id": self.config.client_id, "scope": " ".join(self.config.scopes)},
            auth=self._client_auth(),
        )
        try:
            if status != 200:
                raise KeyError
            return DeviceStart(
                device_code=str(body["device_code"]),
                user_code=str(body["user_code"]),
                verification_uri=str(body["verification_uri"]),
                verification_uri_complete=(
                    str(body["verification_uri_complete"])
                    if body.get("verification_uri_complete")
                    else None
                ),
                expires_in=int(body["expires_in"]),
                interval=max(int(body.get("interval", 5)), 1),
            )
        except (KeyError, ValueError, TypeError):
            log.warning("sso: device authorization refused: %s", str(body.get("error"))[:60])
            raise SsoError(
                "idp_error", "the identity provider refused to start a sign-in"
            ) from None

    def poll_device(self, device_code: str, *, now: int) -> dict:
        """The validated ID token claims once the person finished; Pending before."""
        body = self._token({"grant_type": DEVICE_GRANT, "device_code": device_code})
        return self._id_claims(body, now=now, nonce=None)

    def auth_url(self, *, state: str, nonce: str, challenge: str) -> str:
        meta = self.metadata()
        endpoint = str(meta.get("authorization_endpoint") or "")
        if not endpoint.startswith("https://") or not self.config.redirect_uri:
            raise SsoError("sso_unavailable", "web sign-in through the identity provider is off")
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}?{query}"

    def finish_code(self, code: str, *, verifier: str, nonce: str, now: int) -> dict:
        body = self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.config.redirect_uri or "",
                "code_verifier": verifier,
            }
        )
        return self._id_claims(body, now=now, nonce=nonce)

    def _token(self, form: dict[str, str]) -> dict:
        status, body = self._json(
            "POST", self.metadata()["token_endpoint"], data=form, auth=self._client_auth()
        )
        if status == 200:
            return body
        error = str(body.get("error", ""))
        if error in ("authorization_pending", "slow_down"):
            raise Pending(error, "waiting for the sign-in at the identity provider")
        if error == "expired_token":
            raise SsoError("expired", "the sign-in code expired; start again")
        if error == "access_denied":
            raise SsoError("denied", "the sign-in was denied at the identity provider")
        log.warning("sso: token endpoint answered %s error=%s", status, error[:60])
        raise SsoError("idp_error", "the identity provider refused the sign-in")

    def _id_claims(self, body: dict, *, now: int, nonce: str | None) -> dict:
        token = body.get("id_token")
        if not isinstance(token, str):
            raise SsoError("bad_id_token", "the identity provider sent no ID token")
        c = self.config

        def check(keys: list[dict]) -> dict:
            return validate_id_token(
                token,
                keys=keys,
                issuer=c.issuer,
                client_id=c.client_id,
                now=now,
                skew=c.clock_skew,
                nonce=nonce,
            )

        try:
            return check(self.keys())
        except SsoError as e:
            if "signature" not in e.detail:
                raise
        # Perhaps the IdP rotated its keys since we fetched them: once more, fresh.
        return check(self.keys(refresh=True))
