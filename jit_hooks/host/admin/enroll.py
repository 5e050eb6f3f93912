"""`jit-hooks enroll`: write the host config and token with the owners and modes the hooks need.

Everything is validated first (the config text as the hooks will parse it, the
token as they will read it, the CA file); only then is anything written, each
file atomically.
"""

from __future__ import annotations

import os
import tomllib

from jit_hooks.errors import ConfigError, JitError
from jit_hooks.host import paths
from jit_hooks.host.admin import filetx, preflight, tomlwrite
from jit_hooks.host.admin.layout import Layout
from jit_hooks.host.login import config as host_config
from jit_hooks.host.login.config import HostConfig, load_config, parse_config

MAX_CA_BYTES = 1024 * 1024


class EnrollError(JitError):
    """Raised when enroll refuses its input; nothing has been written."""


def enroll(
    layout: Layout,
    *,
    urls: list[str],
    token: str,
    ca_file: str | None,
    host_name: str | None,
    break_glass: list[str],
) -> list[str]:
    """Write config, token (0640 root:jit-hooks) and a CA copy; one line per file written.

    Break-glass accounts, host name, timeouts and paths of an existing valid config
    are kept unless given again.
    """
    if not token:
        raise EnrollError("no host token given")
    gid = preflight.hook_user_gid()
    path = layout.host_config_path
    try:
        old: HostConfig | None = load_config(path) if os.path.exists(path) else None
    except ConfigError:
        old = None  # a broken config is replaced; the new one is validated below
    token_path = old.token_file if old else layout.under_root(paths.TOKEN_PATH)
    accounts = break_glass or sorted(old.break_glass if old else [])
    ca_pem, ca_path = None, old.ca_file if old else None
    if ca_file:
        # A copy next to the config: the AKC runs as the hook user, which could not
        # read a CA file left in, say, /root.
        try:
            with open(ca_file, "rb") as f:
                ca_pem = f.read(MAX_CA_BYTES)
        except OSError as e:
            raise EnrollError(f"{ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise EnrollError(f"{ca_file}: no PEM certificate in it")
        ca_path = os.path.join(os.path.dirname(path), "ca.pem")
    text = tomlwrite.render_config(
        urls=urls,
        ca_file=ca_path,
        token_file=token_path,
        host_name=host_name or (old.host_name if old else None),
        break_glass=accounts,
        old=old,
    )
    parse_config(tomllib.loads(text), path=path)  # refuses bad URLs, names, ...
    # Validate the token the way the hooks will read it, before anything is written.
    if not host_config._TOKEN_RE.match(token):
        raise EnrollError(
            "the host token is malformed (expected what `jit-server host add` printed)"
        )
    for d in {os.path.dirname(path), os.path.dirname(token_path)}:
        os.makedirs(d, mode=0o755, exist_ok=True)
    done = []
    if ca_pem is not None and ca_path:
        filetx.write_file(ca_path, ca_pem, mode=0o644)
        done.append(f"wrote {ca_path} (0644, copied from {ca_file})")
    filetx.write_file(token_path, (token + "\n").encode(), mode=0o640, uid=0, gid=gid)
    filetx.write_file(path, text.encode(), mode=0o644)
    done.append(f"wrote {path} and {token_path} (0640 root:{paths.HOOK_USER})")
    return done
