"""The hooks' thin client: hand the run to the resident helper (jit-hooksd), relay its answer.

The packaged wrappers (/usr/bin/jit-authorized-keys, jit-pam-account,
jit-pam-session) call ``main(MODE, SOCKET)``. On the fast path this module
imports nothing but ``_socket`` (``sys`` and ``time`` are loaded by the
interpreter anyway): a hook process then costs about one bare interpreter
start, and the helper, which has the hook modules loaded, runs the same hook
body (docs/host.md, "The helper daemon").

* No helper (connect fails with ENOENT, ECONNREFUSED or EACCES): the hook runs
  in this process, exactly as before (same argv; same decisions, just slower;
  its log line ends with ``via=fallback``).
* Anything else after connecting (timeout, truncated or garbled answer, bad
  status, the helper's refusal when it is at its cap): deny, i.e. exit 1, one
  syslog authpriv line with the reason and, for the PAM hooks, the usual
  one-line message to the user.

The frames are in frames.py (imports nothing), shared with the helper.

The helper enforces the configured time budget itself; this client only waits
at most ``TIMEOUT`` in all (paths.MAX_TIMEOUT + 1), the longest budget an admin
may configure plus a second, so a wedged helper can't hold an sshd slot forever.
"""

import _socket
import sys
import time

from jit_hooks.host.login.frames import (
    MAX_REQUEST,
    MAX_STDOUT,
    Garbled,
    decode_answer,
    encode_request,
)

TIMEOUT = 31.0  # paths.MAX_TIMEOUT + 1 (tests check they agree; no import here)
MODES = {
    "authorized-keys": "jit_hooks.host.login.authorized_keys",
    "pam-account": "jit_hooks.host.login.pam_account",
    "pam-session": "jit_hooks.host.login.pam_session",
}
ENVIRON = "/proc/self/environ"
# ENOENT, EACCES, ECONNREFUSED on Linux (no errno import): no helper to ask.
NO_HELPER = (2, 13, 111)
USER_DENIAL = b"jit: access denied: approval service unavailable or host misconfigured\n"


def main(mode: str, socket_path: str, argv: list | None = None) -> int:
    """Run hook ``mode`` through the helper at ``socket_path``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = b""
    if mode != "authorized-keys":
        try:
            with open(ENVIRON, "rb") as f:
                environ = f.read(MAX_REQUEST + 1)
        except OSError:
            return fallback(mode, argv)  # the hook fails closed on it by itself
    try:
        request = encode_request(mode, argv, environ)
    except ValueError:
        return fallback(mode, argv)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        deadline = time.monotonic() + TIMEOUT
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(socket_path)
        except OSError as e:
            if e.errno in NO_HELPER:
                sock.close()
                return fallback(mode, argv)
            return deny(mode, argv, f"connect_errno_{e.errno}")
        try:
            sock.sendall(request)
            data = b""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return deny(mode, argv, "timeout")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > 9 + MAX_STDOUT:
                    return deny(mode, argv, "oversize")
        except TimeoutError:
            return deny(mode, argv, "timeout")
        except OSError as e:
            return deny(mode, argv, f"errno_{e.errno}")
    finally:
        sock.close()
    try:
        status, stdout = decode_answer(data)
    except Garbled as e:
        return deny(mode, argv, str(e).replace(" ", "_"))
    if stdout:
        sys.stdout.buffer.write(stdout)
        sys.stdout.buffer.flush()
    return status


def fallback(mode: str, argv: list) -> int:
    """No helper: run the hook in this process (imports it only now); its lines say so."""
    module = __import__(MODES[mode], fromlist=["main"])
    from jit_hooks.host.login.hook import Invocation

    return module.main(inv=Invocation(argv, via="fallback"))


def deny(mode: str, argv: list, error: str) -> int:
    """The helper failed after we reached it: deny, log why, tell the PAM user."""
    from jit_hooks.host import paths
    from jit_hooks.host.login.hook import split_config_arg
    from jit_hooks.host.login.log import HookLog

    socket_path = paths.SYSLOG_SOCKET
    config_path, _args = split_config_arg(argv)
    try:
        from jit_hooks.host.login.config import load_config

        socket_path = load_config(config_path or paths.CONFIG_PATH).syslog_socket
    except Exception:  # noqa: BLE001 - denying anyway; log where we can
        pass
    HookLog("jit-" + mode, socket_path).warning(
        decision="deny", reason="hooksd", error=error, via="hooksd"
    )
    if mode != "authorized-keys":
        try:
            sys.stdout.buffer.write(USER_DENIAL)
            sys.stdout.buffer.flush()
        except (OSError, ValueError):
            pass
    return 1
