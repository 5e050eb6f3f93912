"""Audit retention: old folded events move to a signed, compressed archive file.

An archive is gzip'd JSON lines: one event per line (as the API shows it) and
a last line, the signed manifest: first/last seq, the prev_hash of the first
event, the hash of the last, the event count and the sha256 of the event
lines. The events leave the database in the same transaction that records an
``audit_archives`` marker, so the database's chain then starts after it, and
``verify --archive`` proves the archives and the database form one chain.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from jit_hooks.errors import JitError
from jit_hooks.server import audit, checkpoints
from jit_hooks.server.tables import audit_archives, audit_events


class ArchiveError(JitError):
    """Raised when an archive cannot be written, read, or does not check out."""


def _line(row: Any) -> bytes:
    return (
        json.dumps(audit.event_dict(row), sort_keys=True, separators=(",", ":")) + "\n"
    ).encode()


def write(conn: Any, key: Any, *, before: int, out: Path, now: int) -> dict | None:
    """Archive the folded events at the start of the chain made before ``before``.

    Stops at the first event at or after ``before`` (chain order), so the
    archive is always a prefix of the database's chain. Returns the manifest,
    or None if there is nothing to archive. Call inside a write transaction,
    after a fold.
    """
    first, prev_hash = audit.chain_start(conn)
    digest = hashlib.sha256()
    last_seq, last_hash, n = first - 1, prev_hash, 0
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for row in audit.iter_chain(conn, after_seq=first - 1):
            if row.at >= before or row.seq != last_seq + 1:
                break
            line = _line(row)
            gz.write(line)
            digest.update(line)
            last_seq, last_hash, n = row.seq, row.hash, n + 1
        manifest = {
            "v": 1,
            "type": "archive",
            "first_seq": first,
            "last_seq": last_seq,
            "prev_hash": prev_hash,
            "last_hash": last_hash,
            "events": n,
            "before": before,
            "created_at": now,
            "events_sha256": digest.hexdigest(),
        }
        if n:
            gz.write((json.dumps(checkpoints.sign(key, manifest), sort_keys=True) + "\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    if not n:
        tmp.unlink()
        return None
    os.replace(tmp, out)
    file_digest = hashlib.sha256(out.read_bytes()).hexdigest()
    conn.execute(
        delete(audit_events).where(audit_events.c.seq >= first, audit_events.c.seq <= last_seq)
    )
    conn.execute(
        insert(audit_archives).values(
            first_seq=first,
            last_seq=last_seq,
            prev_hash=prev_hash,
            last_hash=last_hash,
            events=n,
            at=now,
            file=str(out)[:500],
            digest=file_digest,
        )
    )
    return manifest


def read(path: Path, pub: Any) -> tuple[dict, dict[int, str]]:
    """(manifest, seq -> hash) of an archive whose signature and chain check out."""
    try:
        with gzip.open(path, "rb") as gz:
            lines = gz.read().splitlines(keepends=True)
    except (OSError, EOFError) as e:
        raise ArchiveError(f"{path}: not a readable archive ({e})") from None
    if not lines:
        raise ArchiveError(f"{path}: empty archive")
    try:
        doc = json.loads(lines[-1])
    except ValueError:
        raise ArchiveError(f"{path}: no manifest line") from None
    manifest = checkpoints.check_signature(pub, doc)
    if manifest is None or manifest.get("type") != "archive":
        raise ArchiveError(f"{path}: manifest signature is not valid for this key")
    digest = hashlib.sha256()
    hashes: dict[int, str] = {}
    seq, prev = manifest["first_seq"] - 1, manifest["prev_hash"]
    for raw_line in lines[:-1]:
        digest.update(raw_line)
        try:
            row = _Row(json.loads(raw_line))
            ok = row.seq == seq + 1 and row.prev_hash == prev and audit.row_hash(row) == row.hash
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ArchiveError(f"{path}: event after seq {seq} does not chain (tampered)")
        seq, prev = row.seq, row.hash
        hashes[seq] = prev
    if (
        digest.hexdigest() != manifest["events_sha256"]
        or seq != manifest["last_seq"]
        or prev != manifest["last_hash"]
        or len(hashes) != manifest["events"]
    ):
        raise ArchiveError(f"{path}: events do not match the signed manifest (tampered)")
    return manifest, hashes


class _Row:
    """An archived event line with the attributes audit.row_hash reads."""

    def __init__(self, e: dict) -> None:
        self.seq, self.at, self.kind = e["seq"], e["at"], e["kind"]
        self.actor, self.host = e["actor"], e["host"]
        self.data = audit.canonical(e["data"])
        self.prev_hash, self.hash = e["prev_hash"], e["hash"]


def check_continuity(manifests: list[dict], chain: audit.VerifyResult) -> list[str]:
    """Problems joining the archives (from seq 1) to each other and to the database chain."""
    problems = []
    seq, prev = 0, audit.GENESIS
    for m in sorted(manifests, key=lambda m: m["first_seq"]):
        if m["first_seq"] != seq + 1 or m["prev_hash"] != prev:
            problems.append(
                f"archive of seq {m['first_seq']}-{m['last_seq']} does not follow seq {seq} "
                "(an archive is missing or does not belong to this chain)"
            )
        seq, prev = m["last_seq"], m["last_hash"]
    if chain.first_seq != seq + 1 or chain.start_hash != prev:
        problems.append(
            f"the database's chain starts at seq {chain.first_seq}, the archives end at "
            f"seq {seq}: they do not join"
        )
    return problems


def newest_marker(conn: Any) -> Any:
    return conn.execute(
        select(audit_archives).order_by(audit_archives.c.last_seq.desc()).limit(1)
    ).first()
