"""`jit-server audit ...`: verify, export, fold, checkpoint, pubkey, archive."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from jit_hooks.server.cli import Env

# ctx.obj is the Env `jit-server` made; pass_obj rather than cli.pass_env, whose
# isinstance lookup fails under `python -m jit_hooks.server.cli` (two module copies).
pass_env = click.pass_obj
file_arg = click.Path(dir_okay=False, path_type=Path)
existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def _settings(env: Env) -> Any:
    from jit_hooks.server.audit_settings import AuditSettings

    return AuditSettings.from_env(env.settings.data_dir)


def _fold(env: Env) -> int:
    """Fold before reading the chain (waits for the service's fold if one runs)."""
    from jit_hooks.server import fold

    env.run(lambda conn: None)  # the schema check
    return fold.fold_now(env.engine, now=env.now(), window=_settings(env).miss_window)


def _not_root_elsewhere(env: Env, command: str) -> None:
    """Before anything is written: root on another user's data dir would make the
    signing key root's 0600, which the service (as that user) then cannot read."""
    from jit_hooks.server.cli import refuse_root_on_a_users_data_dir

    refuse_root_on_a_users_data_dir(env.settings.data_dir, command)


def _private_key(env: Env) -> Any:
    from jit_hooks.server.checkpoints import load_key

    path = _settings(env).key_file
    if path is None:
        raise click.ClickException("no audit key: set --data-dir or JIT_AUDIT_KEY")
    return load_key(path)


def _public_keys(env: Env, pubkeys: tuple[Path, ...]) -> list[Any]:
    from jit_hooks.server.checkpoints import load_public

    if pubkeys:
        return [load_public(p) for p in pubkeys]
    path = _settings(env).key_file
    if path is None or not path.exists():
        raise click.ClickException("give --pubkey (the output of `jit-server audit pubkey`)")
    return [load_public(path)]


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log, its signed checkpoints and archives."""


@audit_group.command("verify")
@click.option(
    "--checkpoints",
    "checkpoint_files",
    multiple=True,
    type=existing_file,
    help="Signed checkpoints (JSONL file or syslog lines); every one must still be in the "
    "chain. Repeatable.",
)
@click.option(
    "--archive",
    "archive_files",
    multiple=True,
    type=existing_file,
    help="Archives written by `audit archive`, to check the chain from its first event. "
    "Repeatable.",
)
@click.option(
    "--pubkey",
    "pubkeys",
    multiple=True,
    type=existing_file,
    help="Public key(s) of the signers (`jit-server audit pubkey`); repeatable (one per "
    "replica key). Default: this data dir's key.",
)
@click.option("--no-fold", is_flag=True, help="Read only: do not fold pending events first.")
@pass_env
def audit_verify(
    env: Env,
    checkpoint_files: tuple[Path, ...],
    archive_files: tuple[Path, ...],
    pubkeys: tuple[Path, ...],
    no_fold: bool,
) -> None:
    """Check the whole chain (and checkpoints, archives); exit 1 naming each problem."""
    from jit_hooks.server import archive, audit, checkpoints

    if not no_fold:
        try:
            _fold(env)
        except audit.ChainError:
            pass  # the walk below reports it
    if checkpoint_files or archive_files or pubkeys:
        pub = _public_keys(env, pubkeys)
    else:
        # Needed only if the chain starts after an archive (its signed manifest).
        try:
            pub = _public_keys(env, pubkeys)
        except (click.ClickException, checkpoints.CheckpointError):
            pub = None
    manifests, archived = [], {}
    problems: list[str] = []
    for f in archive_files:
        try:
            m, hashes = archive.read(f, pub)
        except archive.ArchiveError as e:
            problems.append(str(e))
            continue
        manifests.append(m)
        archived.update(hashes)
    docs = [d for f in checkpoint_files for d in checkpoints.read_file(f)]

    def check(conn: Any) -> tuple[audit.VerifyResult, list[str], dict[str, tuple[int, int]]]:
        result = audit.verify(conn, now=env.now())
        found = [] if result.ok else [str(result.problem)]
        if archive_files and result.ok:
            found += archive.check_continuity(manifests, result)
        elif result.ok:
            found += archive.check_marker(conn, result, pub)
        if docs and pub is not None:
            found += checkpoints.check(conn, result, docs, pub, archived=archived)
        return result, found, audit.open_rows(conn)

    result, found, unfolded = env.run(check)
    problems += found
    # Counted rows of open windows: evidence not in the chain yet (docs/server.md).
    for table, (rows, calls) in unfolded.items():
        click.echo(f"open (not yet in the chain): {table} {rows} rows counting {calls} calls")
    if problems:
        for p in problems:
            click.echo(f"jit-server: audit chain BROKEN: {p}", err=True)
        sys.exit(1)
    extra = ""
    if docs:
        extra += f", {len(docs)} checkpoints match"
    if manifests:
        extra += f", {sum(m['events'] for m in manifests)} archived events in {len(manifests)} "
        extra += "archives join it"
    click.echo(f"audit chain OK: {result.count} events (seq {result.first_seq}-"
               f"{result.last_seq}){extra}")  # fmt: skip
    if result.first_seq > 1 and not manifests:
        click.echo(
            f"note: the database's chain starts at seq {result.first_seq} (older events "
            "were archived; pass --archive to check them too)",
            err=True,
        )


@audit_group.command("export")
@click.option(
    "--output",
    "-o",
    type=file_arg,
    default=None,
    help="Write JSON lines here instead of stdout.",
)
@click.option("--after-id", type=click.IntRange(min=0), default=0, show_default=True)
@pass_env
def audit_export(env: Env, output: Path | None, after_id: int) -> None:
    """Export events as JSON lines (folded first)."""
    from jit_hooks.server import audit

    _fold(env)

    def dump(conn, fh) -> int:  # noqa: ANN001
        n = 0
        for row in audit.iter_events(conn, after_id=after_id):
            fh.write(json.dumps(audit.event_dict(row), sort_keys=True) + "\n")
            n += 1
        return n

    if output is None:
        env.run(dump, fh=sys.stdout)
        return
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w") as fh:
        n = env.run(dump, fh=fh)
    os.replace(tmp, output)
    click.echo(f"exported {n} events to {output}", err=True)


@audit_group.command("fold")
@pass_env
def audit_fold(env: Env) -> None:
    """Chain pending events now (the service does this every half second)."""
    click.echo(f"folded {_fold(env)} events", err=True)


@audit_group.command("checkpoint")
@pass_env
def audit_checkpoint(env: Env) -> None:
    """Fold, then sign and export a checkpoint of the head now (also printed on stdout)."""
    from jit_hooks.server import checkpoints

    _not_root_elsewhere(env, "audit checkpoint")
    _fold(env)
    key, s = _private_key(env), _settings(env)
    doc = env.run(lambda conn: checkpoints.make(conn, key, now=env.now()))
    click.echo(checkpoints.export(doc, file=s.checkpoint_file, to_syslog=s.syslog))


@audit_group.command("pubkey")
@pass_env
def audit_pubkey(env: Env) -> None:
    """Print the checkpoint signing key's public half (PEM); made on first need."""
    from jit_hooks.server import checkpoints

    _not_root_elsewhere(env, "audit pubkey")
    click.echo(checkpoints.public_pem(_private_key(env)), nl=False)


def _date(value: str) -> int:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "expected a date (2026-01-31) or date and time (2026-01-31T12:00)",
            param_hint="--before",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


@audit_group.command("archive")
@click.option("--before", required=True, help="Archive events made before this date (UTC).")
@click.option("--out", "out", required=True, type=file_arg, help="The archive file (gzip).")
@pass_env
def audit_archive(env: Env, before: str, out: Path) -> None:
    """Move old events to a signed, compressed archive and out of the database."""
    from jit_hooks.server import archive

    ts = _date(before)
    if out.exists():
        raise click.ClickException(f"{out}: exists; archives are never overwritten")
    _not_root_elsewhere(env, "audit archive ...")
    _fold(env)
    key = _private_key(env)
    try:
        manifest = env.run(lambda conn: archive.write(conn, key, before=ts, out=out, now=env.now()))
    except archive.ArchiveError as e:
        raise click.ClickException(str(e)) from None
    except BaseException:
        archive.discard(out)  # the transaction did not commit: no file names its events
        raise
    if manifest is None:
        click.echo("nothing to archive", err=True)
        return
    try:
        archive.publish(out)
    except archive.ArchiveError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"archived {manifest['events']} events (seq {manifest['first_seq']}-"
        f"{manifest['last_seq']}) to {out}; keep it with the checkpoints",
        err=True,
    )
