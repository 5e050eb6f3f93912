"""Host side: hooks run by sshd on every login. Stdlib only; never imports server."""
