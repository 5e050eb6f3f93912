"""`jit-server init`: first run of a service, idempotent and never overwriting.

Creates what is missing, keeps what exists (and says so):

* the data directory, 0700;
* DATA/ca/ca.key (0600, only init reads it) and DATA/tls/ca.pem, a private CA,
  unless the admin brings their own certificate (--cert/--key);
* DATA/tls/server.pem + server.key: the certificate `jit-server serve` uses
  when given no --tls-cert (SANs from --name/--ip);
* the database schema;
* the first admin and a one-time token for them (printed once, stored hashed).

Files the service reads take the owner of a data directory that already
existed (the package makes /var/lib/jit-server for its system user), so root
can run init; the CA key stays with whoever ran init.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from jit_hooks.errors import JitError
from jit_hooks.server import pki
from jit_hooks.server.policy import NAME_RE
from jit_hooks.server.settings import Settings

INIT_TOKEN_TTL = 24 * 3600
DEFAULT_PORT = 8443


def tls_paths(data_dir: Path) -> tuple[Path, Path]:
    """Where init puts the server certificate and key (serve's default TLS)."""
    return data_dir / "tls" / "server.pem", data_dir / "tls" / "server.key"


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # --check only
    admin_token: str | None = None
    ca_file: Path | None = None
    url: str = ""


@dataclass(frozen=True)
class Request:
    names: list[str]
    ips: list[str]
    cert: Path | None
    key: Path | None
    admin: str
    check: bool = False


def _mkdir(path: Path, rep: Report, what: str, check: bool) -> bool:
    """Make ``path`` 0700 if missing; refuse one others may read. True if it exists now."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        if check:
            rep.missing.append(f"{what} {path}")
            return False
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)
        rep.created.append(f"{what} {path} (0700)")
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise JitError(f"{path} exists and is not a directory")
    if st.st_mode & 0o077:
        raise JitError(
            f"{path} is mode {stat.S_IMODE(st.st_mode):04o}, others may read it: "
            f"`chmod 700 {path}` first"
        )
    rep.kept.append(f"{what} {path}")
    return True


def run(settings: Settings, req: Request) -> Report:
    """Do (or with ``req.check`` only look at) every step; see the module docstring."""
    if settings.data_dir is None:
        raise JitError("init needs a data directory (--data-dir)")
    data = settings.data_dir
    rep = Report()
    names = pki.parse_names(req.names, req.ips) if (req.names or req.ips) else None
    if (req.cert is None) != (req.key is None):
        raise JitError("give both --cert and --key, or neither")
    if not NAME_RE.match(req.admin):
        raise JitError(f"--admin {req.admin[:80]!r}: letters, digits, '.', '_' or '-', at most 64")
    own_pair = None
    if req.cert is not None and req.key is not None:
        own_pair = pki.check_pair(req.cert, req.key)  # before anything is written
    if not req.check and own_pair is None and names is None and not tls_paths(data)[0].exists():
        raise JitError(
            "give the names clients use for the service: --name NAME and/or --ip IP "
            "(or your own certificate: --cert FILE --key FILE)"
        )
    pre_existing = data.exists()
    if not _mkdir(data, rep, "data directory", req.check):
        _check_rest(settings, req, rep)
        return rep
    owner = data.stat() if pre_existing else None
    tls_dir = data / "tls"
    server_pem, server_key = tls_paths(data)
    ca_pem = tls_dir / "ca.pem"
    have_tls = _mkdir(tls_dir, rep, "TLS directory", req.check)

    if server_pem.exists() or server_key.exists():
        if not (server_pem.exists() and server_key.exists()):
            raise JitError(f"only one of {server_pem} and {server_key} exists: fix by hand")
        rep.kept.append(f"server certificate {server_pem} (not replaced)")
        rep.ca_file = ca_pem if ca_pem.exists() else None
    elif req.check or not have_tls:
        rep.missing.append(f"server certificate {server_pem}")
    elif own_pair is not None:
        cert_pem, key_pem, sans = own_pair
        pki.write_new(server_key, key_pem, 0o600)
        pki.write_new(server_pem, cert_pem, 0o644)
        rep.created.append(f"server certificate {server_pem} from {req.cert} ({sans})")
    else:
        if names is None:
            raise JitError(
                "give the names clients use for the service: --name NAME and/or --ip IP "
                "(or your own certificate: --cert FILE --key FILE)"
            )
        ca_dir = data / "ca"
        _mkdir(ca_dir, rep, "CA directory", False)
        ca_key = ca_dir / "ca.key"
        ca_fd = _open_ca_dir(ca_dir)
        try:
            have_key = _exists_at(ca_fd, "ca.key")
            if have_key and ca_pem.exists():
                rep.kept.append(f"CA {ca_pem}")
                cert_pem_ca, key_pem_ca = ca_pem.read_bytes(), _read_at(ca_fd, "ca.key")
            elif have_key or ca_pem.exists():
                raise JitError(f"only one of {ca_pem} and {ca_key} exists: fix by hand")
            else:
                cert_pem_ca, key_pem_ca = pki.make_ca(
                    f"jit-server private CA ({(names.dns or names.ips)[0]})"[:64]
                )
                pki.write_new(Path("ca.key"), key_pem_ca, 0o600, dir_fd=ca_fd)
                pki.write_new(ca_pem, cert_pem_ca, 0o644)
                rep.created.append(f"private CA {ca_pem} (key {ca_key}, 0600, stays here)")
        finally:
            os.close(ca_fd)
        cert_pem, key_pem = pki.make_server_cert(cert_pem_ca, key_pem_ca, names)
        pki.write_new(server_key, key_pem, 0o600)
        pki.write_new(server_pem, cert_pem, 0o644)
        rep.created.append(f"server certificate {server_pem} ({names.describe()})")
        rep.ca_file = ca_pem
    if names is not None:
        rep.url = f"https://{(names.dns or names.ips)[0]}:{DEFAULT_PORT}"
    _check_rest(settings, req, rep)
    if owner is not None and os.geteuid() == 0 and owner.st_uid != 0 and not req.check:
        _give(owner.st_uid, owner.st_gid, settings, data, tls_dir, server_pem, server_key, ca_pem)
    return rep


def _check_rest(settings: Settings, req: Request, rep: Report) -> None:
    """The database schema and the first admin."""
    from jit_hooks.server.db import make_engine, schema_is_current, upgrade

    sqlite_file = _sqlite_file(settings)
    if req.check and sqlite_file is not None and not sqlite_file.exists():
        rep.missing += ["database schema", "an admin user"]
        return
    engine = make_engine(settings.database_url)  # makes a SQLite file's directory
    try:
        if req.check:
            if schema_is_current(engine):
                rep.kept.append("database schema (current)")
            else:
                rep.missing.append("database schema")
                rep.missing.append("an admin user")
                return
        else:
            before = schema_is_current(engine)
            upgrade(engine)
            (rep.kept if before else rep.created).append(
                "database schema" + (" (current)" if before else "")
            )
        admins = _admins(engine)
        if admins:
            rep.kept.append(f"admin user(s): {', '.join(admins)}")
        elif req.check:
            rep.missing.append("an admin user")
        else:
            rep.admin_token = _first_admin(engine, settings, req.admin)
            rep.created.append(f"admin user {req.admin} (one-time token below, valid 24 h)")
    finally:
        engine.dispose()


def _admins(engine) -> list[str]:  # noqa: ANN001
    from sqlalchemy import select

    from jit_hooks.server.tables import users

    q = select(users.c.name, users.c.roles).where(
        users.c.disabled.is_(False), users.c.removed_at.is_(None)
    )
    with engine.connect() as conn:
        return sorted(r.name for r in conn.execute(q) if "admin" in r.roles.split())


def _first_admin(engine, settings: Settings, name: str) -> str:  # noqa: ANN001
    from jit_hooks.server import admin_ops, store

    now = settings.clock()
    with engine.begin() as conn:
        store.add_user(conn, name=name, roles=["admin", "approver"], actor="cli:init", now=now)
        return admin_ops.create_named_token(
            conn, name=name, label="init", ttl=INIT_TOKEN_TTL, actor="cli:init", now=now
        )


def _sqlite_file(settings: Settings) -> Path | None:
    if settings.database_url.startswith("sqlite:///"):
        return Path(settings.database_url.removeprefix("sqlite:///"))
    return None


def _open_ca_dir(ca_dir: Path) -> int:
    """DATA/ca as a directory fd, refused unless it belongs to whoever runs init.

    The data directory may belong to the service user, who can rename DATA/ca while
    init runs; the fd pins the directory that was checked, so the CA key is read and
    written there and nowhere else.
    """
    try:
        fd = os.open(ca_dir, _DIR_FLAGS)
    except OSError as e:
        raise JitError(f"{ca_dir}: not a plain directory ({e.strerror})") from e
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise JitError(
            f"{ca_dir} belongs to uid {st.st_uid}, not to uid {os.geteuid()} running init: "
            f"the CA key must stay out of the service's reach (`chown -R root: {ca_dir}`)"
        )
    return fd


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read()


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _give(uid: int, gid: int, settings: Settings, data: Path, *paths: Path) -> None:
    """Hand what the service reads to the data directory's owner (not the CA key).

    That owner can swap anything inside the data directory for a symlink while init
    runs (DATA/tls -> a root-only directory), and root's chown would follow it. So each
    path is walked from the data directory one component at a time without following
    symlinks and chowned through its fd; a symlink on the way stops init.
    """
    db = _sqlite_file(settings)
    db_files = [] if db is None else [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    for p in (*paths, *db_files):
        try:
            parts = p.relative_to(data).parts
            anchor = data
        except ValueError:  # a SQLite file outside the data directory
            parts = Path(os.path.abspath(p)).parts[1:]
            anchor = Path("/")
        fd = _open_beneath(anchor, parts, p)
        if fd is None:
            continue
        try:
            st = os.fstat(fd)
            if not (stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)):
                raise JitError(f"{p} is not a plain file or directory: not handing it over")
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)


def _open_beneath(anchor: Path, parts: tuple[str, ...], shown: Path) -> int | None:
    """An fd for anchor/parts reached without following a symlink; None if missing."""
    fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = (
                (os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK) if last else _DIR_FLAGS
            )
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as e:  # ELOOP/ENOTDIR: a symlink where a directory or file was
                raise JitError(
                    f"{shown}: {part!r} is a symlink or not a directory ({e.strerror}); "
                    "something changed the data directory while init ran: check it"
                ) from e
            os.close(fd)
            fd = nxt
        return os.dup(fd)
    finally:
        os.close(fd)
