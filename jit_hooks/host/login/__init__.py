"""What runs on every login: the hook bodies, their helper and its client. Never imports host.admin, click, requests or the service."""
