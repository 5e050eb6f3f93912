"""jit-server: run the approval service and administer it (works on the database directly)."""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from jit_hooks.errors import JitError

ACTOR_PREFIX = "cli:"


class Env:
    """Lazily built settings + engine for one invocation."""

    def __init__(self, data_dir: str | None, database_url: str | None) -> None:
        from jit_hooks.server.settings import Settings

        self.settings = Settings.from_options(data_dir=data_dir, database_url=database_url)
        self.options = {"data_dir": data_dir, "database_url": database_url}
        self._engine = None
        self._schema_checked = False

    @property
    def engine(self):  # noqa: ANN201
        if self._engine is None:
            from jit_hooks.server.db import make_engine

            self._engine = make_engine(self.settings.database_url)
        return self._engine

    def now(self) -> int:
        return self.settings.clock()

    @property
    def actor(self) -> str:
        """cli:<the unix user running this>, from the uid: not $USER or $LOGNAME,
        which anyone sets and `su` keeps (the audit named root for jit-server)."""
        uid = os.geteuid()
        who = _user_name(uid) or str(uid)  # no passwd entry for the uid: still audit something
        return (ACTOR_PREFIX + who)[:64]

    def run(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Run one store function in a write transaction, after checking the schema."""
        if not self._schema_checked:
            check_schema(self.engine)
            self._schema_checked = True
        with self.engine.begin() as conn:
            return fn(conn, **kwargs)


def check_schema(engine: Any) -> None:
    """Refuse (one line, exit 1) a database this version can't use: not migrated to the
    newest revision, or stamped current yet lacking tables the code needs (a build whose
    migration of the same id made other tables), which would fail on the first
    statement that touches one of them. ``serve`` and every admin command ask this."""
    from jit_hooks.server.db import missing_tables, schema_is_current

    if not schema_is_current(engine):
        raise click.ClickException("database schema is not current: run `jit-server db upgrade`")
    missing = missing_tables(engine)
    if missing:
        raise click.ClickException(
            f"database lacks tables this version needs ({', '.join(missing)}) though stamped "
            "current (migrated by another build?): restore a backup from before that "
            "upgrade, then run `jit-server db upgrade`"
        )


pass_env = click.make_pass_decorator(Env)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _table(rows: list[dict], columns: list[str]) -> None:
    def cell(v: Any) -> str:
        if isinstance(v, dict):
            return ",".join(f"{k}={x}" for k, x in v.items())
        if isinstance(v, list):
            return ",".join(str(x) for x in v)
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print(rows: list[dict], columns: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows, columns)


def _private_stdout() -> None:
    """Before a secret goes to stdout: a regular file it is redirected to must be ours
    and is made 0600.

    `jit-server token create alice > alice.token` makes the file with the shell's
    umask (0644 on Debian): anyone on the machine could read the token. The chmod
    is a safety net only: whoever opened the file before keeps reading it, which
    umask 077 or a pipe avoids. A file of another user is refused even as root:
    its owner reads it whatever its mode. Called before any change, so a refusal
    leaves nothing half done.
    """
    try:
        fd = sys.stdout.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests, closed)
        return
    if not stat.S_ISREG(st.st_mode):
        return
    where = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "stdout"
    if st.st_uid != os.geteuid():
        owner = _owner(st.st_uid)
        raise click.ClickException(
            f"{where} (stdout) belongs to {owner}, who can read it whatever its mode: not "
            "writing a secret there (redirect to a new file of yours under umask 077, or a pipe)"
        )
    if not st.st_mode & 0o077:
        return
    try:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o600)
    except OSError as e:
        raise click.ClickException(
            f"{where} (stdout) is mode {stat.S_IMODE(st.st_mode):04o}, others may read it, and "
            f"cannot be made private ({e.strerror}): not writing a secret there"
        ) from None
    if _same_file(st, 2):
        return  # `> f 2>&1`: the notice would be the file's first line, read as the secret
    click.echo(
        f"{where}: was mode {stat.S_IMODE(st.st_mode):04o}, made 0600 (it holds a secret; "
        "anyone who opened it before still can read it: use umask 077 or a pipe)",
        err=True,
    )


def _same_file(st: os.stat_result, fd: int) -> bool:
    try:
        other = os.fstat(fd)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    envvar="JIT_DATA_DIR",
    default=None,
    help="Data directory (SQLite file DIR/jit.db). Default /var/lib/jit-server.",
)
@click.option(
    "--database-url", envvar="JIT_DATABASE_URL", default=None, help="SQLAlchemy URL instead."
)
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, database_url: str | None) -> None:
    """Approval service for just-in-time SSH access."""
    os.umask(0o077)  # database, WAL and exports are private
    ctx.obj = Env(data_dir, database_url)
    global _database_url
    _database_url = ctx.obj.settings.database_url


# The database this run uses, for main()'s error line (set by cli()).
_database_url: str | None = None


def _sqlite_access_cause(url: str | None) -> str | None:
    """Why this user cannot use the SQLite file of ``url``, naming file and user.

    SQLite itself only says "unable to open database file" or "attempt to write a
    readonly database": not which file, nor that it is a permission of the user
    running the command (root's jit.db, then the service user's command, or the
    other way round). It needs to read and write the file, its -wal/-shm files
    and to create them in its directory. None: no such cause found.
    """
    if not url or not url.startswith("sqlite:///"):
        return None
    db = Path(url.removeprefix("sqlite:///"))
    need = [
        (db, os.R_OK | os.W_OK, "read and write"),
        (db.parent, os.W_OK | os.X_OK, "create files in"),
    ]
    need += [
        (p, os.R_OK | os.W_OK, "read and write") for p in (Path(f"{db}-wal"), Path(f"{db}-shm"))
    ]
    for path, mode, what in need:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        except PermissionError:
            return f"user {_whoami()} cannot reach {path} (a directory above it is closed to it)"
        except OSError as e:  # ENOTDIR, ELOOP, ENAMETOOLONG...: the path, not a traceback
            return _path_error(path, e)
        if not os.access(path, mode):
            owner = _owner(st.st_uid)
            return (
                f"user {_whoami()} cannot {what} {path} (owner {owner}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}): run jit-server as {owner} "
                f"(`runuser -u {owner} -- jit-server ...`) or make it the service user's"
            )
    return None


def _path_error(path: Path, e: OSError) -> str:
    """One line naming ``path`` and the OS error that stopped this run there."""
    line = f"cannot use {path}: {e.strerror or e}"
    if isinstance(e, NotADirectoryError):
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if above is not None:  # the usual cause: --data-dir names a file
            line += f" ({above} is a file, not a directory)"
    return line


def _owner(uid: int) -> str:
    return _user_name(uid) or f"uid {uid}"


def _user_name(uid: int) -> str | None:
    """The passwd name of ``uid``, or None when it has no entry."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


# -- db / serve ------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_env
def db_upgrade(env: Env) -> None:
    """Create or migrate the schema to the newest version."""
    from jit_hooks.server.db import upgrade

    before = _revision(env.engine)
    upgrade(env.engine)
    after = _revision(env.engine)
    if before == after:
        click.echo(f"database already at revision {after}: nothing to do", err=True)
    else:
        click.echo(
            f"database migrated from {before or 'nothing (new database)'} to revision {after}",
            err=True,
        )


def _revision(engine) -> str | None:  # noqa: ANN001
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ",".join(heads) or None


@db.command("copy")
@click.option("--from", "source", required=True, metavar="URL", help="Database to copy from.")
@click.option("--to", "target", required=True, metavar="URL", help="Database to copy into.")
@click.option("--replace", is_flag=True, help="Overwrite a target that already holds data.")
def db_copy(source: str, target: str, replace: bool) -> None:
    """Copy every table to another database (e.g. SQLite -> PostgreSQL), in one transaction.

    The target is migrated first; the copied audit chain must verify there
    before the copy commits. Stop the service first: writes made after the
    copy started are not carried over.
    """
    from jit_hooks.server.dbcopy import copy_database

    def progress(table: str, rows: int) -> None:
        click.echo(f"{table}: {rows} rows", err=True)

    result = copy_database(source, target, replace=replace, progress=progress)
    total = sum(result.rows.values())
    click.echo(
        f"copied {total} rows in {len(result.rows)} tables; "
        f"audit chain OK on the target: {result.audit_events} events"
    )


@cli.command()
@click.option(
    "--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to listen on."
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--pam-service",
    envvar="JIT_PAM_SERVICE",
    default="login",
    show_default=True,
    help="PAM service that checks passwords for POST /api/v1/login.",
)
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--workers",
    envvar="JIT_WORKERS",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the listening socket (SQLite in WAL mode is safe "
    "across processes; about one per core).",
)
@click.option(
    "--db-pool-size",
    envvar="JIT_DB_POOL_SIZE",
    type=click.IntRange(1, 500),
    default=None,
    help="PostgreSQL connections per worker process, also the number of transactions it "
    "runs at once [default: 10]. SQLite always uses one.",
)
@pass_env
def serve(
    env: Env,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    pam_service: str,
    log_level: str,
    workers: int,
    db_pool_size: int | None,
) -> None:
    """Run the HTTP(S) service."""
    import dataclasses

    import uvicorn

    from jit_hooks.server.app import create_app
    from jit_hooks.server.workers import raise_nofile, uvicorn_options

    # Host streams hold a descriptor each: use the whole hard limit (workers inherit it).
    raise_nofile()
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    if bool(tls_cert) != bool(tls_key):
        raise click.BadParameter("give both --tls-cert and --tls-key", param_hint="--tls-cert")
    refuse_root_on_a_users_data_dir(env.settings.data_dir)
    if tls_cert is None and env.settings.data_dir is not None:
        from jit_hooks.server.init import tls_paths

        made_cert, made_key = tls_paths(env.settings.data_dir)
        if made_cert.is_file() and made_key.is_file():  # what `jit-server init` made
            tls_cert, tls_key = str(made_cert), str(made_key)
            click.echo(f"serving TLS with {made_cert} (from jit-server init)", err=True)
    check_schema(env.engine)
    env.engine.dispose()
    settings = env.settings
    if db_pool_size is not None:
        settings = dataclasses.replace(settings, db_pool_size=db_pool_size)
    app: Any
    if workers > 1:
        # Each worker is a fresh (spawned) process that builds its own app and
        # engine from the environment: see worker_app().
        ddir = env.settings.data_dir
        os.environ[_WORKER_ENV] = json.dumps(
            {"database_url": settings.database_url, "pam_service": pam_service,
             "data_dir": None if ddir is None else str(ddir),
             "db_pool_size": settings.db_pool_size}
        )  # fmt: skip
        app = f"{__name__}:worker_app"
    else:
        app = create_app(dataclasses.replace(settings, pam_service=pam_service))
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers,
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        **uvicorn_options(),  # httptools + uvloop, TCP_NODELAY (jit_hooks/server/workers.py)
    )


def refuse_root_on_a_users_data_dir(data_dir: Path | None, command: str = "serve") -> None:
    """``command`` (serve, or an audit command that makes the signing key), as root,
    on a data directory that belongs to another user: refused before writing.

    They make files there (the audit signing key and checkpoints, SQLite's WAL
    files), 0600 to whoever runs them: root's, the service started later as its own
    user (the package's unit) could not read them (its audit folding then failed
    on every round). init, run as root, hands such a directory's files to its owner.
    """
    if data_dir is None or os.geteuid() != 0:
        return
    try:
        st = data_dir.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise click.ClickException(_path_error(data_dir, e)) from None
    if st.st_uid == 0:
        return
    owner = _owner(st.st_uid)
    if command == "serve":
        raise click.ClickException(
            f"{data_dir} belongs to {owner}: run the service as {owner} "
            f"(`systemctl start jit-server`, or `runuser -u {owner} -- jit-server serve ...`); "
            "as root, the files it makes there would be root's and unreadable to the service"
        )
    raise click.ClickException(
        f"{data_dir} belongs to {owner}: run `runuser -u {owner} -- jit-server {command}`; "
        "as root, the audit signing key it makes there would be root's and unreadable to "
        "the service"
    )


def _data_dir_owner(data_dir: Path | None) -> str | None:
    """The data directory's owner when it is not whoever runs this (init as root)."""
    try:
        uid = data_dir.stat().st_uid if data_dir is not None else os.geteuid()
    except OSError:
        return None
    return None if uid == os.geteuid() else _owner(uid)


_WORKER_ENV = "JIT_SERVER_WORKER_SETTINGS"


def worker_app():  # noqa: ANN201
    """The app of one `serve --workers N` worker process (uvicorn calls this factory)."""
    from jit_hooks.server.app import create_app
    from jit_hooks.server.settings import Settings, user_token_ttl_from_env

    opts = json.loads(os.environ[_WORKER_ENV])
    return create_app(
        Settings(
            database_url=opts["database_url"],
            data_dir=None if opts["data_dir"] is None else Path(opts["data_dir"]),
            pam_service=opts["pam_service"],
            db_pool_size=opts["db_pool_size"],
            user_token_ttl=user_token_ttl_from_env(),
        )
    )


# -- init ------------------------------------------------------------------------


@cli.command("init")
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME[,NAME..]",
    help="DNS name(s) clients use for the service (certificate SANs).",
)
@click.option(
    "--ip",
    "ips",
    multiple=True,
    metavar="IP[,IP..]",
    help="IP address(es) clients use (certificate SANs).",
)
@click.option(
    "--cert",
    type=click.Path(path_type=Path),
    default=None,
    help="Your own server certificate (PEM) instead of a private CA.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    default=None,
    help="The key of --cert (PEM, unencrypted).",
)
@click.option(
    "--admin",
    "admin_name",
    default="admin",
    show_default=True,
    help="Name of the first admin (made only if there is no admin yet).",
)
@click.option("--data-dir", "init_data_dir", default=None, help="Same as jit-server --data-dir.")
@click.option(
    "--database-url", "init_db_url", default=None, help="Same as jit-server --database-url."
)
@click.option(
    "--check", is_flag=True, help="Change nothing: exit 0 if everything init makes exists, else 1."
)
@click.pass_context
def init_cmd(
    ctx: click.Context,
    names: tuple[str, ...],
    ips: tuple[str, ...],
    cert: Path | None,
    key: Path | None,
    admin_name: str,
    init_data_dir: str | None,
    init_db_url: str | None,
    check: bool,
) -> None:
    """First run: data dir, private CA + server certificate, schema, first admin.

    Makes what is missing and never replaces what exists; a run that finds
    everything in place changes nothing and exits 1 ("already initialised"),
    `--check` exits 0 then. The admin's one-time token is printed once on
    stdout; the next steps go to stderr.
    """
    from jit_hooks.server import init as init_mod
    from jit_hooks.server.settings import Settings

    env: Env = ctx.obj
    settings = env.settings
    if init_data_dir or init_db_url:
        settings = Settings.from_options(
            data_dir=init_data_dir or env.options["data_dir"],
            database_url=init_db_url or env.options["database_url"],
        )
    req = init_mod.Request(list(names), list(ips), cert, key, admin_name, check)
    if not check:
        _private_stdout()  # the first admin's token
    rep = init_mod.run(settings, req)
    for line in rep.kept:
        click.echo(f"exists: {line}", err=True)
    for line in rep.created:
        click.echo(f"created: {line}", err=True)
    for line in rep.missing:
        click.echo(f"missing: {line}", err=True)
    if check:
        if rep.missing:
            sys.exit(1)  # not click's Exit: standalone_mode=False would return it
        click.echo("initialised: everything init makes exists", err=True)
        return
    if not rep.created:
        raise click.ClickException(
            "already initialised: nothing changed (see the lines above; `init --check` exits 0)"
        )
    if rep.admin_token:
        click.echo(rep.admin_token)
    _next_steps(settings, rep, admin_name)


def _next_steps(settings: Any, rep: Any, admin_name: str) -> None:
    url = rep.url or "https://SERVICE-NAME:8443"
    ddir = settings.data_dir
    ca = rep.ca_file or "the CA certificate that issued your server certificate"
    ca_opt = f" --ca-file {rep.ca_file}" if rep.ca_file else " --ca-file CA.pem"
    by_hand = f"jit-server --data-dir {ddir} serve --listen 0.0.0.0:8443"
    owner = _data_dir_owner(ddir)
    if owner is not None:  # the package's /var/lib/jit-server: the service runs as its owner
        by_hand = f"runuser -u {owner} -- {by_hand}"
    steps = [
        "next steps:",
        f"  1. run the service: {by_hand}",
        "     (packaged: systemctl enable --now jit-server)",
    ]
    if rep.admin_token:
        steps.append(
            f"  2. sign in as {admin_name} with the token printed above (valid 24 h, shown once):"
        )
        steps.append(f"     jit login --url {url}{ca_opt} --token-stdin")
    steps += [
        "  3. add people and a policy: jit-server user add NAME --role requester; "
        "jit-server policy add FILE",
        "  4. enroll each host: jit-server host add HOST --label env=prod (prints its token),",
        f"     copy {ca} to the host as /etc/jit-hooks/ca.pem, then on the host:",
        f"     jit-hooks enroll --url {url} --ca-file /etc/jit-hooks/ca.pem "
        "--host-name HOST < token-file",
        "  5. first request: jit request HOST --login LOGIN --duration 1h --reason '...'",
    ]
    for line in steps:
        click.echo(line, err=True)


# -- users / tokens -----------------------------------------------------------------


@cli.group()
def user() -> None:
    """People who request and approve access."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["requester", "approver", "admin"]),
    help="Repeatable.",
)
@pass_env
def user_add(env: Env, name: str, roles: tuple[str, ...]) -> None:
    """Add a user with one or more roles."""
    from jit_hooks.server import admin_ops, store

    def add(conn):  # noqa: ANN001, ANN202
        gone = admin_ops.removed_at(conn, name=name)
        if gone is not None:
            raise click.ClickException(
                f"user {name!r} was removed on {admin_ops.iso(gone)}; a removed name is not "
                "reused (history points at it): pick another name"
            )
        return store.add_user(conn, name=name, roles=list(roles), actor=env.actor, now=env.now())

    u = env.run(add)
    click.echo(f"added user {u['name']} ({', '.join(u['roles'])})", err=True)


@user.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Also removed users.")
@json_option
@pass_env
def user_list(env: Env, include_removed: bool, as_json: bool) -> None:
    """List users (removed ones only with --all)."""
    from jit_hooks.server import admin_ops

    cols = ["id", "name", "roles", "disabled"] + (["removed_at"] if include_removed else [])
    _print(env.run(admin_ops.list_users, include_removed=include_removed), cols, as_json)


@user.command("set-roles")
@click.argument("name")
@click.argument("roles", metavar="ROLE[,ROLE..]")
@pass_env
def user_set_roles(env: Env, name: str, roles: str) -> None:
    """Replace NAME's roles, e.g. `requester,approver` (requester, approver, admin)."""
    from jit_hooks.server import admin_ops

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    u = env.run(admin_ops.set_roles, name=name, roles=wanted, actor=env.actor, now=env.now())
    click.echo(f"user {name} now has roles {', '.join(u['roles'])}", err=True)


@user.command("disable")
@click.argument("name")
@pass_env
def user_disable(env: Env, name: str) -> None:
    """Disable a user: their tokens answer 401 and their approvals grant nothing, at once.

    `user enable` undoes it (tokens not expired and approvals still in their
    window work again).
    """
    from jit_hooks.server import admin_ops

    env.run(admin_ops.disable_user, name=name, actor=env.actor, now=env.now())
    click.echo(f"disabled user {name}", err=True)


@user.command("enable")
@click.argument("name")
@pass_env
def user_enable(env: Env, name: str) -> None:
    """Enable a disabled user again."""
    from jit_hooks.server import admin_ops

    env.run(admin_ops.enable_user, name=name, actor=env.actor, now=env.now())
    click.echo(f"enabled user {name}", err=True)


@user.command("remove")
@click.argument("name")
@pass_env
def user_remove(env: Env, name: str) -> None:
    """Remove a user for good: tokens revoked, SSH keys deleted, access ended.

    Their requests, reviews, sessions and audit events stay (history keeps the
    name, which is never given to anyone else).
    """
    from jit_hooks.server import admin_ops

    r = env.run(admin_ops.remove_user, name=name, actor=env.actor, now=env.now())
    click.echo(
        f"removed user {name} ({r['tokens_revoked']} tokens revoked, "
        f"{r['keys_removed']} keys deleted; history kept)",
        err=True,
    )


@cli.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--name", "label", default="cli", show_default=True, help="A label for the token.")
@click.option(
    "--expires",
    default="90d",
    show_default=True,
    metavar="DURATION|never",
    help="Lifetime: 90d, 12h, 30m, 45s; `never` for a token that never expires.",
)
@pass_env
def token_create(env: Env, user_name: str, label: str, expires: str) -> None:
    """Create a user API token and print it (shown once)."""
    from jit_hooks.server import admin_ops

    ttl = None if expires == "never" else admin_ops.parse_duration(expires, what="--expires")
    _private_stdout()
    click.echo(
        env.run(
            admin_ops.create_named_token,
            name=user_name,
            label=label,
            ttl=ttl,
            actor=env.actor,
            now=env.now(),
        )
    )


@token.command("list")
@click.argument("user_name", metavar="[USER]", required=False)
@json_option
@pass_env
def token_list(env: Env, user_name: str | None, as_json: bool) -> None:
    """List unrevoked user tokens, of USER or everyone; times in ISO 8601 UTC. No secrets."""
    from jit_hooks.server import admin_ops

    _print(
        env.run(admin_ops.token_rows, user=user_name, now=env.now()),
        ["id", "user", "name", "created_at", "last_used_at", "expires_at", "state"],
        as_json,
    )


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=click.IntRange(min=1, max=2**31 - 1))
@pass_env
def token_revoke(env: Env, token_id: int) -> None:
    """Revoke user token ID (see `token list`): it answers 401 at once."""
    from jit_hooks.server import store

    t = env.run(
        store.revoke_user_token,
        token_id=token_id,
        owner_id=None,
        actor=env.actor,
        now=env.now(),
        via="cli",
    )
    click.echo(f"revoked token {token_id} ({t['name']}) of user {t['user']}", err=True)


# -- hosts ---------------------------------------------------------------------


@cli.group()
def host() -> None:
    """Target hosts and their tokens."""


@host.command("add")
@click.argument("name")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable.")
@pass_env
def host_add(env: Env, name: str, labels: tuple[str, ...]) -> None:
    """Register a host and print its token (shown once)."""
    from jit_hooks.server import store

    parsed = store.parse_labels(list(labels))
    _private_stdout()
    click.echo(env.run(store.add_host, name=name, labels=parsed, actor=env.actor, now=env.now()))


@host.command("list")
@json_option
@pass_env
def host_list(env: Env, as_json: bool) -> None:
    """List hosts."""
    from jit_hooks.server import store

    _print(env.run(store.list_hosts), ["id", "name", "labels"], as_json)


@host.command("set-labels")
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE..]")
@pass_env
def host_set_labels(env: Env, name: str, labels: tuple[str, ...]) -> None:
    """Replace all of a host's labels (none given: no labels).

    Selector requests already made keep the hosts they matched when made.
    """
    from jit_hooks.server import admin_ops, store

    parsed = store.parse_labels(list(labels))
    env.run(admin_ops.set_host_labels, name=name, labels=parsed, actor=env.actor, now=env.now())
    shown = ",".join(f"{k}={v}" for k, v in parsed.items()) or "(none)"
    click.echo(f"host {name} labels: {shown}", err=True)


@host.command("remove")
@click.argument("name")
@pass_env
def host_remove(env: Env, name: str) -> None:
    """Remove a host (its token stops working at once)."""
    from jit_hooks.server import store

    env.run(store.remove_host, name=name, actor=env.actor, now=env.now())
    click.echo(f"removed host {name}", err=True)


@host.command("rotate-token")
@click.argument("name")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="How long the old token keeps working (0: refused at once).",
)
@pass_env
def host_rotate(env: Env, name: str, grace: str) -> None:
    """Give a host a new token (printed once); the old one works until the grace ends.

    Install the new token on the host (`jit-hooks enroll`) within the grace:
    no login is refused in between.
    """
    from jit_hooks.server import admin_ops

    seconds = admin_ops.parse_duration(grace, what="--grace")
    _private_stdout()
    now = env.now()
    token = env.run(admin_ops.rotate_host_token, name=name, grace=seconds, actor=env.actor, now=now)
    click.echo(token)
    until = "refused now" if seconds == 0 else f"valid until {admin_ops.iso(now + seconds)}"
    click.echo(f"host {name}: new token issued; the old one is {until}", err=True)


# -- policies ------------------------------------------------------------------


@cli.group()
def policy() -> None:
    """Access policies (TOML)."""


@policy.command("add")
@click.argument("file", metavar="FILE|-")
@pass_env
def policy_add(env: Env, file: str) -> None:
    """Add (or replace, by name) every [[policy]] in FILE (- reads stdin); all or nothing."""
    from jit_hooks.server import store
    from jit_hooks.server.policy import parse_policy

    text = _read_policy_source(file)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise click.ClickException(f"{file}: not valid TOML: {e}") from e
    entries = doc.get("policy")
    if not isinstance(entries, list) or not entries or set(doc) - {"policy"}:
        raise click.ClickException(
            f"{file}: expected one or more [[policy]] tables and nothing else"
        )
    parsed = [parse_policy(e) for e in entries]
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise click.ClickException(f"{file}: duplicate policy name")

    def put_all(conn) -> list[str]:  # noqa: ANN001
        return [store.put_policy(conn, policy=p, actor=env.actor, now=env.now()) for p in parsed]

    for p, what in zip(parsed, env.run(put_all), strict=True):
        click.echo(f"{what} policy {p.name}", err=True)


@policy.command("list")
@json_option
@pass_env
def policy_list(env: Env, as_json: bool) -> None:
    """List policies."""
    from jit_hooks.server import store

    _print(
        env.run(store.list_policies),
        ["name", "hosts", "labels", "logins", "approvals_required", "max_duration", "auto_approve"],
        as_json,
    )


@policy.command("remove")
@click.argument("name")
@pass_env
def policy_remove(env: Env, name: str) -> None:
    """Remove a policy (requests already made keep the policy they were made under)."""
    from jit_hooks.server import store

    env.run(store.remove_policy, name=name, actor=env.actor, now=env.now())
    click.echo(f"removed policy {name}", err=True)


def _read_policy_source(file: str) -> str:
    """FILE's text (or stdin's for -), with an error that names the real cause."""
    if file == "-":
        data = sys.stdin.buffer.read(1024 * 1024 + 1)
        where = "standard input"
    else:
        try:
            with open(file, "rb") as f:
                data = f.read(1024 * 1024 + 1)
        except FileNotFoundError:
            raise click.ClickException(f"{file}: no such file") from None
        except IsADirectoryError:
            raise click.ClickException(f"{file}: is a directory, expected a TOML file") from None
        except PermissionError:
            raise click.ClickException(
                f"{file}: permission denied for user {_whoami()} (the file or a directory "
                f"above it is not readable by this user): pipe it instead, "
                f"`jit-server policy add - < {file}`"
            ) from None
        where = file
    if len(data) > 1024 * 1024:
        raise click.ClickException(f"{where}: larger than 1 MiB, not a policy file")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{where}: not valid TOML: not UTF-8 ({e.reason})") from None


def _whoami() -> str:
    """Who this process runs as, by its uid (not $USER/$LOGNAME, which su may keep)."""
    uid = os.geteuid()
    name = _user_name(uid)
    return f"{name} (uid {uid})" if name else f"uid {uid}"


# -- audit: jit_hooks/server/audit_cli.py ---------------------------------------


def _add_audit_commands() -> None:
    from jit_hooks.server.audit_cli import audit_group

    cli.add_command(audit_group)
    from jit_hooks.server.notify.cli import notify_group

    cli.add_command(notify_group)
    from jit_hooks.server.report_cli import report_group

    cli.add_command(report_group)
    from jit_hooks.server.sso_cli import sso_group

    cli.add_command(sso_group)


def main() -> None:
    _add_audit_commands()
    try:
        cli(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("jit-server: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        if isinstance(e, click.UsageError) and e.ctx is not None:
            click.echo(e.ctx.get_usage(), err=True)
        click.echo(f"jit-server: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except JitError as e:
        click.echo(f"jit-server: error: {e}", err=True)
        sys.exit(1)
    except Exception as e:  # database unreachable, unreadable file...: one line, no trace
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(e, SQLAlchemyError | OSError):
            cause = _sqlite_access_cause(_database_url)
            # Any other OSError: the database's own path error, when it has one, is the
            # cause (mkdir of a data dir that is a file says only "File exists").
            if cause is not None:
                click.echo(f"jit-server: error: {cause}", err=True)
                sys.exit(1)
            click.echo(f"jit-server: error: {type(e).__name__}: {str(e).splitlines()[0]}", err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
