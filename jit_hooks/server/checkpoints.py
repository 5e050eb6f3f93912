"""Signed checkpoints of the audit chain head, kept outside the database.

A hash chain alone proves nothing against whoever can rewrite the whole
database: cut the tail and move the head, or delete everything, and what is
left still chains. A checkpoint is the head (seq, hash, time) signed with an
Ed25519 key the service holds (``cryptography``), written where the database
admin should not reach (syslog shipped off-box, an append-only file on other
storage). ``verify`` then finds each checkpoint's (seq, hash) still in the
chain, or says which one is gone: truncation, rewrite and wipe are detected.
Design and operation: docs/server.md, "Audit log".
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import syslog
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import select

from jit_hooks.errors import JitError
from jit_hooks.server import audit
from jit_hooks.server.tables import audit_events

log = logging.getLogger(__name__)
VERSION = 1


class CheckpointError(JitError):
    """Raised when a key or checkpoint file cannot be read or used."""


# -- key -------------------------------------------------------------------------


def load_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The signing key at ``path``; made (0600, directory 0700) on first need.

    An existing key must be a regular file of this process's user that no group
    or other may read or write: anyone who can read it can forge checkpoints and
    archive manifests, anyone who can write it can swap in their own.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise CheckpointError(f"{path}: no audit signing key") from None
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_key(path, create=False)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        return key
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror} (a symlink is refused)") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        if st.st_uid != os.geteuid():
            raise CheckpointError(
                f"{path}: owned by uid {st.st_uid}, not the service's user (uid {os.geteuid()})"
            )
        if st.st_mode & 0o077:
            raise CheckpointError(
                f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others at the "
                "audit signing key: chmod 600"
            )
        data = fh.read()
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except ValueError as e:
        raise CheckpointError(f"{path}: not a PEM private key ({e})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return loaded


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file (`jit-server audit pubkey`) or a private key file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror}") from None
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError:
        return load_key(path, create=False).public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise CheckpointError(f"{path}: not an Ed25519 public key")
    return pub


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- signing ---------------------------------------------------------------------


def sign(key: Ed25519PrivateKey, body: dict) -> dict:
    """``body`` with ``key_id`` and an Ed25519 signature over its canonical JSON."""
    body = {**body, "key_id": key_id(key)}
    sig = key.sign(audit.canonical(body).encode())
    return {"signed": body, "sig": base64.b64encode(sig).decode()}


def check_signature(pub: Ed25519PublicKey | Sequence[Ed25519PublicKey], doc: Any) -> dict | None:
    """The signed body if ``doc`` carries a valid signature by ``pub`` (or one of them)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict):
        return None
    try:
        sig = base64.b64decode(doc.get("sig", ""), validate=True)
    except (ValueError, TypeError):
        return None
    message = audit.canonical(doc["signed"]).encode()
    for key in [pub] if isinstance(pub, Ed25519PublicKey) else pub:
        try:
            key.verify(sig, message)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return doc["signed"]
    return None


# -- making and exporting checkpoints --------------------------------------------


def make(conn: Any, key: Ed25519PrivateKey, *, now: int) -> dict:
    """A signed checkpoint of the current (folded) head."""
    seq, digest = audit.read_head(conn)
    return signed_head(key, seq, digest, now=now)


def signed_head(key: Ed25519PrivateKey, seq: int, digest: str, *, now: int) -> dict:
    return sign(key, {"v": VERSION, "type": "checkpoint", "seq": seq, "hash": digest, "at": now})


def export(doc: dict, *, file: Path | None, to_syslog: bool) -> str:
    """Append one checkpoint line to ``file`` (0600, O_APPEND) and send it to syslog."""
    line = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    if file is not None:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    if to_syslog:
        syslog.openlog("jit-server", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
        syslog.syslog(syslog.LOG_INFO, f"audit checkpoint {line}")
    return line


@dataclass
class Checkpointer:
    """When to emit: every ``every_events`` events, or ``every_seconds`` if the chain grew."""

    key_file: Path
    file: Path | None
    every_events: int
    every_seconds: int
    to_syslog: bool = True
    last_seq: int | None = None
    last_at: int = 0
    _key: Ed25519PrivateKey | None = None

    def due(self, seq: int, now: int) -> bool:
        if self.last_seq is None:
            return True  # one at start-up: the head as this leader found it
        grown = seq != self.last_seq
        return grown and (
            seq - self.last_seq >= self.every_events or now - self.last_at >= self.every_seconds
        )

    def emit(self, seq: int, digest: str, *, now: int) -> dict:
        """Sign and export a committed head (outside any transaction: it fsyncs a file)."""
        if self._key is None:
            self._key = load_key(self.key_file)
        doc = signed_head(self._key, seq, digest, now=now)
        export(doc, file=self.file, to_syslog=self.to_syslog)
        self.last_seq, self.last_at = seq, now
        return doc


# -- verifying against checkpoints -----------------------------------------------


def read_file(path: Path) -> list[Any]:
    """The JSON documents of a checkpoint file (one a line; blank lines skipped)."""
    out = []
    try:
        text = path.read_text()
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        # A syslog line carries the JSON after this marker.
        if not line.startswith("{") and "audit checkpoint {" in line:
            line = line[line.index("audit checkpoint {") + len("audit checkpoint ") :]
        try:
            out.append(json.loads(line))
        except ValueError:
            raise CheckpointError(f"{path}:{n}: not a JSON checkpoint line") from None
    return out


def check(
    conn: Any,
    chain: audit.VerifyResult,
    docs: Iterable[Any],
    pub: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    *,
    archived: dict[int, str] | None = None,
) -> list[str]:
    """Problems found checking ``docs`` against the verified database chain (and archives).

    ``archived`` maps seq -> hash for events in the archives given to verify.
    """
    problems: list[str] = []
    archived = archived or {}
    for n, doc in enumerate(docs, 1):
        body = check_signature(pub, doc)
        if body is None or body.get("type") != "checkpoint":
            problems.append(f"checkpoint {n}: bad signature (or not signed by this key)")
            continue
        seq, digest, at = body.get("seq"), body.get("hash"), body.get("at")
        where = f"checkpoint {n} (seq {seq}, at {at})"
        if not isinstance(seq, int) or not isinstance(digest, str):
            problems.append(f"{where}: malformed")
            continue
        if seq == 0:
            if digest != audit.GENESIS:
                problems.append(f"{where}: malformed (seq 0 is the empty chain)")
            continue
        if seq > chain.last_seq:
            problems.append(
                f"{where}: the chain ends at seq {chain.last_seq}: events after it were "
                "cut off or the log was wiped"
            )
            continue
        if seq < chain.first_seq:
            # Only a signed archive vouches for events no longer in the database; the
            # marker row's start hash is database data (a wipe can plant one).
            found: str | None = archived.get(seq)
            if found is None:
                problems.append(
                    f"{where}: older than the database's chain start (seq {chain.first_seq}): "
                    "possible tampering unless the archive(s) holding it, given with "
                    "--archive, show it"
                )
                continue
        else:
            found = conn.execute(
                select(audit_events.c.hash).where(audit_events.c.seq == seq)
            ).scalar()
        if found != digest:
            problems.append(f"{where}: the chain's event {seq} has another hash: rewritten")
    return problems
