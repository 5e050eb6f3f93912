"""Filesystem locations and defaults of the host hooks, in one place."""

from __future__ import annotations

CONFIG_PATH = "/etc/jit-hooks/jit-hooks.toml"
# Overrides CONFIG_PATH; note that sshd gives the AuthorizedKeysCommand an empty
# environment, so hooks run by sshd take `--config PATH` instead.
CONFIG_ENV = "JIT_HOOKS_CONFIG"
TOKEN_PATH = "/etc/jit-hooks/host-token"
# Connection -> accepted key records; created by systemd-tmpfiles (0700 jit-hooks).
STATE_DIR = "/run/jit-hooks"
# Break-glass reports the service did not take yet (break_glass.py): on disk, so they
# outlive a reboot; 0700 jit-hooks (the hooks run as root or inside jit-hooksd).
SPOOL_DIR = "/var/spool/jit-hooks"
SYSLOG_SOCKET = "/dev/log"
# The resident helper jit-hooksd (daemon.py), which the hook wrappers ask first.
HOOKSD_SOCKET = "/run/jit-hooks/hooksd.sock"

# Installed entry points (tiny `python3 -I` wrappers, see docs/host.md).
AUTHORIZED_KEYS_COMMAND = "/usr/bin/jit-authorized-keys"
PAM_ACCOUNT_COMMAND = "/usr/bin/jit-pam-account"
PAM_SESSION_COMMAND = "/usr/bin/jit-pam-session"
# sshd's AuthorizedKeysCommandUser.
HOOK_USER = "jit-hooks"

# Timeouts in seconds. sshd waits for the AuthorizedKeysCommand without a limit
# of its own, but LoginGraceTime (120 s) and people's patience are the real
# bound: 2 s to connect catches a dead address quickly, 5 s in total keeps a
# login with a sick service short while leaving room for one retry elsewhere.
CONNECT_TIMEOUT = 2.0
TOTAL_TIMEOUT = 5.0
# Upper bound an admin may configure: a hung hook holds an sshd slot.
MAX_TIMEOUT = 30.0

# service.max_grant: the host refuses an approval that ends later than this from
# now (host clock), whatever the service says; an admin may set 1 min to 400 days.
MAX_GRANT = 24 * 3600
MIN_MAX_GRANT = 60
MAX_MAX_GRANT = 400 * 86400
