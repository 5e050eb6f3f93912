"""What runs on every login: hook bodies, their helper and its client (stdlib only)."""
