"""Unit tests: webhook signatures, retry backoff, channel config (no service needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from jit_hooks.server.notify import config, outbox, signing

SECRET = "s3cret-for-units"


def test_signature_round_trip_and_every_tamper_is_refused() -> None:
    body = b'{"event":"request.created","id":"abc"}'
    header = signing.sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert signing.verify(SECRET, header, body, now=1_700_000_010) == 1_700_000_000
    with pytest.raises(signing.BadSignature, match="does not match"):
        signing.verify(SECRET, header, body + b" ", now=1_700_000_010)
    with pytest.raises(signing.BadSignature, match="does not match"):
        signing.verify("other", header, body, now=1_700_000_010)
    # The timestamp is inside the MAC: moving it forward breaks the signature.
    forged = header.replace("t=1700000000", "t=1700000500")
    with pytest.raises(signing.BadSignature, match="does not match"):
        signing.verify(SECRET, forged, body, now=1_700_000_500)
    # A genuine but old delivery is a replay.
    with pytest.raises(signing.BadSignature, match="replay window"):
        signing.verify(SECRET, header, body, now=1_700_000_000 + signing.TOLERANCE + 1)
    for bad in ("", "v1=abc", "t=x,v1=abc", "t=1700000000", "garbage"):
        with pytest.raises(signing.BadSignature):
            signing.verify(SECRET, bad, body, now=1_700_000_000)


def test_signature_matches_the_documented_recipe() -> None:
    import hashlib
    import hmac

    body, t = b"{}", 1234567890
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert signing.sign(SECRET, body, t) == f"t={t},v1={expected}"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        step = min(60.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(50):
            d = outbox.backoff(attempt, base=2.0, cap=60.0, rng=rng)
            assert step / 2 <= d <= step
    draws = {round(outbox.backoff(3, base=2.0, cap=60.0, rng=rng), 6) for _ in range(20)}
    assert len(draws) > 1  # jittered: rows that failed together do not retry together


def test_idempotency_id_is_stable_and_distinct() -> None:
    a = outbox.idempotency_id("request.created", 5, "", "hook")
    assert a == outbox.idempotency_id("request.created", 5, "", "hook")
    others = {
        outbox.idempotency_id("request.created", 6, "", "hook"),
        outbox.idempotency_id("request.created", 5, "", "mail"),
        outbox.idempotency_id("request.reviewed", 5, "bob", "hook"),
        outbox.idempotency_id("request.reviewed", 5, "carol", "hook"),
    }
    assert a not in others and len(others) == 4


def _parse(tmp_path: Path, text: str) -> config.NotifyConfig:
    f = tmp_path / "notify.toml"
    f.write_text(text)
    return config.load(tmp_path)


def test_config_secrets_stay_out_of_reprs(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-a-file-secret\n")
    cfg = _parse(
        tmp_path,
        """
        [channels.hook]
        type = "webhook"
        url = "https://example.test/hook"
        secret_file = "%s"
        [channels.mail]
        type = "smtp"
        host = "mail.example.test"
        from = "jit@example.test"
        to = ["ops@example.test"]
        username = "jit"
        secret = "inline-smtp-password"
        """
        % (tmp_path / "key"),
    )
    assert cfg.channels["hook"].secret is not None
    assert cfg.channels["hook"].secret.value == "from-a-file-secret"
    text = repr(cfg) + str(cfg.channels["mail"])
    assert "from-a-file-secret" not in text and "inline-smtp-password" not in text
    assert cfg.default == ("hook", "mail")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[channels.h]\ntype = "webhook"\nurl = "https://x.test"', "needs secret"),
        ('[channels.h]\ntype = "pager"', "type: must be one of"),
        ('[channels.h]\ntype = "slack"\nurl = "ftp://x"', "url: must be an http"),
        ('[channels.h]\ntype = "slack"\nurl = "https://x"\nevents = ["nope"]', "events"),
        ('default = ["ghost"]', "unknown channel 'ghost'"),
        ('[policy.web]\nchannels = ["ghost"]', "unknown channel 'ghost'"),
        ("colour = 1", "colour: unknown key"),
        ("[retry]\nbase_seconds = -1", "base_seconds"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.NotifyConfigError, match=message) as e:
        _parse(tmp_path, text)
    assert str(tmp_path / "notify.toml") in str(e.value)


def test_per_policy_channels_and_event_filters(tmp_path: Path) -> None:
    cfg = _parse(
        tmp_path,
        """
        default = ["chat"]
        public_url = "https://jit.example.test/"
        [channels.chat]
        type = "slack"
        url = "https://chat.example.test/x"
        events = ["request.created"]
        [channels.sec]
        type = "slack"
        url = "https://sec.example.test/x"
        [policy.db-prod]
        channels = ["sec", "chat"]
        """,
    )
    assert [c.name for c in cfg.channels_for("web", "request.created")] == ["chat"]
    assert [c.name for c in cfg.channels_for("web", "request.approved")] == []
    assert [c.name for c in cfg.channels_for("db-prod", "request.created")] == ["sec", "chat"]
    assert [c.name for c in cfg.channels_for(None, "break_glass.used")] == []
    assert cfg.request_url(12) == "https://jit.example.test/ui/requests/12"


def test_a_bad_config_stops_the_service_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "notify.toml").write_text('[channels.h]\ntype = "slack"\nurl = "ftp://x"\n')
    base = [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(tmp_path)]
    env = {**os.environ, "JIT_DATABASE_URL": ""}
    expected = f"jit-server: error: {tmp_path / 'notify.toml'}: channels.h.url: must be an http"
    r = subprocess.run([*base, "notify", "channels"], capture_output=True, text=True, env=env,
                       timeout=60)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith(expected), r.stderr
    assert subprocess.run([*base, "db", "upgrade"], env=env, timeout=120).returncode == 0
    r = subprocess.run([*base, "serve", "--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, env=env, timeout=120)  # fmt: skip
    assert r.returncode != 0 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr
