"""Render a notification and send it on one channel: Slack webhook, signed JSON webhook, SMTP.

Each send is one blocking attempt bounded by the channel's timeout; the
worker runs it in its own threads, never on the event loop. Errors come back
as a short text that names no secret (the worker stores and logs it).
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from jit_hooks.server.notify import signing
from jit_hooks.server.notify.config import Channel, NotifyConfig

USER_AGENT = "jit-hooks-notify/1"

_TITLES = {
    "request.created": "{requester} asks for {target} as {login}",
    "request.reviewed": "request #{id} for {target} reviewed ({decision} by {actor})",
    "request.approved": "request #{id} for {target} as {login} approved",
    "request.denied": "request #{id} for {target} as {login} denied by {actor}",
    "request.expiring": "access #{id} to {target} as {login} ends soon",
    "request.expired": "access #{id} to {target} as {login} has ended",
    "request.revoked": "access #{id} to {target} as {login} revoked by {actor}",
    "request.pending_expired": "request #{id} for {target} expired before anyone decided",
    "request.extension_requested": "{requester} asks to extend access #{id} to {target}",
    "request.extended": "access #{id} to {target} as {login} extended",
    "request.extension_denied": "extension of access #{id} to {target} denied by {actor}",
    "request.dropped": "{requester} gave back access #{id} to {target} as {login}",
    "break_glass.used": "break-glass login as {login} on {host}",
    "test": "test message from jit-server ({channel})",
}


def _tls(ch: Channel) -> ssl.SSLContext:
    # Certificates and host names are always checked; ca_file only says whom to trust.
    return ssl.create_default_context(cafile=ch.ca_file)


class SendError(Exception):
    """Raised when one delivery attempt fails (the text is safe to store and log)."""


def _target(req: dict[str, Any] | None) -> str:
    if not req:
        return "-"
    if req.get("host"):
        return str(req["host"])
    sel = req.get("selector") or {}
    return "hosts " + ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def title(payload: dict[str, Any], channel: str = "") -> str:
    req = payload.get("request") or {}
    details = payload.get("details") or {}
    fields = {
        "id": req.get("id", "-"),
        "requester": req.get("requester", "-"),
        "login": req.get("login", details.get("login", "-")),
        "target": _target(req),
        "actor": payload.get("actor") or "-",
        "decision": details.get("decision", "-"),
        "host": details.get("host", "-"),
        "channel": channel,
    }
    return _TITLES.get(payload["event"], payload["event"]).format(**fields)


def body_text(payload: dict[str, Any], url: str | None) -> str:
    req = payload.get("request") or {}
    lines = [title(payload)]
    if req:
        lines.append(f"reason: {req.get('reason', '')}")
        lines.append(
            f"duration: {req.get('duration_seconds', 0) // 60} min, policy {req.get('policy')}"
        )
    if payload.get("recipients"):
        lines.append("for: " + ", ".join(payload["recipients"]))
    if url:
        lines.append(f"review: {url}")
    lines.append(f"notification id: {payload['id']}")
    return "\n".join(lines)


def _url(cfg: NotifyConfig, payload: dict[str, Any]) -> str | None:
    req = payload.get("request")
    return cfg.request_url(req["id"]) if req else None


def slack_message(payload: dict[str, Any], url: str | None) -> dict[str, Any]:
    """Slack's incoming-webhook shape: ``text`` (fallback) plus Block Kit blocks."""
    text = title(payload)
    req = payload.get("request") or {}
    blocks: list[dict[str, Any]] = [
        # plain_text: a reason typed by a requester is never read as Slack markup.
        {"type": "section", "text": {"type": "plain_text", "text": text[:2900]}}
    ]
    if req.get("reason"):
        blocks.append(
            {"type": "section", "text": {"type": "plain_text", "text": "Reason: " + req["reason"]}}
        )
    if url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": f"Open request #{req['id']}"},
                        "url": url,
                    }
                ],
            }
        )
    return {"text": text + (f" <{url}>" if url else ""), "blocks": blocks}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a 3xx: the signed body or Slack secret URL's POST must not be replayed
    to wherever the receiver points (an internal address), nor a redirect counted delivered."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post(ch: Channel, body: bytes, headers: dict[str, str]) -> None:
    req = urllib.request.Request(ch.url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("User-Agent", USER_AGENT)
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        # The timeout bounds connect and each read; a receiver that hangs
        # costs one worker thread for this long, never an API call.
        opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=_tls(ch))
        )
        with opener.open(req, timeout=ch.timeout) as r:
            r.read(4096)
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            raise SendError(f"HTTP {e.code}: redirect refused") from None
        raise SendError(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise SendError(f"unreachable: {type(e.reason).__name__}") from None
    except TimeoutError:
        raise SendError("timeout") from None
    except OSError as e:
        raise SendError(f"network error: {type(e).__name__}") from None


def send(
    ch: Channel, cfg: NotifyConfig, payload: dict[str, Any], *, now: int | None = None
) -> None:
    """One attempt; raises SendError."""
    url = _url(cfg, payload)
    if ch.kind == "slack":
        _post(ch, json.dumps(slack_message(payload, url)).encode(), {})
    elif ch.kind == "webhook":
        assert ch.secret is not None
        doc = dict(payload, url=url, text=title(payload))
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        t = int(time.time()) if now is None else now
        _post(
            ch,
            body,
            {
                signing.HEADER: signing.sign(ch.secret.value, body, t),
                "X-Jit-Delivery": payload["id"],
                "X-Jit-Event": payload["event"],
            },
        )
    else:
        _mail(ch, payload, url)


def _mail(ch: Channel, payload: dict[str, Any], url: str | None) -> None:
    to = list(ch.to)
    if ch.user_domain:
        to += [f"{n}@{ch.user_domain}" for n in payload.get("recipients", [])]
    if not to:
        return  # nobody to tell on this channel (e.g. no approver has an address)
    msg = EmailMessage()
    msg["Subject"] = "[jit] " + title(payload, ch.name)
    msg["From"] = ch.sender
    msg["To"] = ", ".join(to)
    # Stable across retries: a mail system that saw it already can drop the copy.
    msg["Message-ID"] = f"<{payload['id']}@jit-hooks>"
    msg["X-Jit-Delivery"] = payload["id"]
    msg.set_content(body_text(payload, url))
    try:
        with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout) as s:
            if ch.starttls:
                s.starttls(context=_tls(ch))
            if ch.username and ch.secret is not None:
                s.login(ch.username, ch.secret.value)
            s.send_message(msg)
    except smtplib.SMTPResponseException as e:
        raise SendError(f"SMTP {e.smtp_code}") from None
    except smtplib.SMTPException as e:
        raise SendError(f"SMTP error: {type(e).__name__}") from None
    except TimeoutError:
        raise SendError("timeout") from None
    except OSError as e:
        raise SendError(f"network error: {type(e).__name__}") from None


def test_payload(ch: Channel, now: int) -> dict[str, Any]:
    return {
        "id": f"test-{now}",
        "event": "test",
        "at": now,
        "actor": None,
        "recipients": [],
        "request": None,
        "details": {"channel": ch.name},
    }
