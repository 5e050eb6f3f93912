"""TLS set-up for CLI tests: a self-signed certificate, and waiting for a service's
/healthz over HTTPS (made with the real `openssl` CLI; verified with the stdlib)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path


def self_signed(cert: Path, key: Path, *, cn: str, san: str | None = None) -> None:
    """A one-day P-256 self-signed certificate ``cert`` (its key ``key``): a CA or a server."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-days", "1", "-subj", f"/CN={cn}"]
        + (["-addext", f"subjectAltName={san}"] if san else [])
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def wait_healthy(proc: subprocess.Popen, port: int, cafile: Path) -> None:
    """Until https://127.0.0.1:port/healthz, verified with ``cafile``, answers ok.

    Fails if ``proc`` (the service) exits first or 30 s pass.
    """
    ctx = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2
            ) as r:
                assert json.loads(r.read()) == {"status": "ok"}
                return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
