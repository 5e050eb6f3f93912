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


def staging_path(out: Path) -> Path:
    """Where ``write`` puts the archive until the caller's transaction commits."""
    return out.with_name(out.name + ".tmp")


def write(conn: Any, key: Any, *, before: int, out: Path, now: int) -> dict | None:
    """Archive the folded events at the start of the chain made before ``before``.

    Stops at the first event at or after ``before`` (chain order), so the
    archive is always a prefix of the database's chain. Returns the manifest,
    or None if there is nothing to archive. Call inside a write transaction,
    after a fold. The file is left at ``staging_path(out)``: the caller calls
    :func:`publish` after the commit (or :func:`discard` if it failed), so no
    archive file names events the database still holds.
    """
    first, prev_hash = audit.chain_start(conn)
    digest = hashlib.sha256()
    file_digest = hashlib.sha256()
    last_seq, last_hash, n = first - 1, prev_hash, 0
    tmp = staging_path(out)
    # O_EXCL|O_NOFOLLOW: a file or symlink planted at the name is refused, never followed.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise ArchiveError(f"{tmp}: exists (left by a failed archive?): remove it first") from None
    except OSError as e:
        raise ArchiveError(f"{tmp}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _Tee(raw, file_digest)
            with gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0) as gz:  # type: ignore[arg-type]
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
                signed = checkpoints.sign(key, manifest)
                if n:
                    gz.write((json.dumps(signed, sort_keys=True) + "\n").encode())
            raw.flush()
            os.fsync(raw.fileno())
        if not n:
            tmp.unlink()
            return None
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
                digest=file_digest.hexdigest(),
                manifest=json.dumps(signed, sort_keys=True, separators=(",", ":")),
            )
        )
    except BaseException:
        discard(out)
        raise
    return manifest


def publish(out: Path) -> None:
    """Move a committed archive into place; never over an existing file."""
    tmp = staging_path(out)
    try:
        os.link(tmp, out)  # fails if ``out`` exists, unlike rename
    except OSError as e:
        raise ArchiveError(
            f"{out}: {e.strerror}; the archive is committed and kept at {tmp}"
        ) from None
    tmp.unlink()


def discard(out: Path) -> None:
    """Remove the staging file of an archive whose transaction did not commit."""
    try:
        staging_path(out).unlink()
    except FileNotFoundError:
        pass


class _Tee:
    """A binary file that also hashes what is written to it (the archive file's digest)."""

    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw, self.digest = raw, digest

    def write(self, b: bytes) -> int:
        self.digest.update(b)
        return self.raw.write(b)

    def flush(self) -> None:
        self.raw.flush()


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


def check_marker(conn: Any, chain: audit.VerifyResult, pub: Any) -> list[str]:
    """Problems with the newest archive marker, which says where the database's chain starts.

    The marker is a database row: whoever can delete the events can write one.
    It counts only through the manifest the service signed when it archived.
    """
    if chain.first_seq == 1:
        return []
    m = newest_marker(conn)
    signed = None
    if m is not None and m.manifest and pub is not None:
        try:
            signed = checkpoints.check_signature(pub, json.loads(m.manifest))
        except ValueError:
            signed = None
    if signed is None or signed.get("type") != "archive":
        why = "no public key to check one: give --pubkey" if pub is None else "events deleted?"
        return [
            f"the database's chain starts at seq {chain.first_seq}: archive marker not backed "
            f"by a signed manifest ({why}); or give the archives with --archive"
        ]
    if signed.get("last_seq") != chain.first_seq - 1 or signed.get("last_hash") != chain.start_hash:
        return [
            f"the database's chain starts at seq {chain.first_seq} with another hash than the "
            f"signed archive manifest (seq {signed.get('last_seq')}): tampered"
        ]
    return []


def newest_marker(conn: Any) -> Any:
    return conn.execute(
        select(audit_archives).order_by(audit_archives.c.last_seq.desc()).limit(1)
    ).first()
