"""Host administration that never runs on a login: sshd/PAM wiring, session enforcement."""
