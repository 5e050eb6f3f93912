"""Command-line tools: jit (people), jit-server (service admin), jit-hooks (host admin)."""
