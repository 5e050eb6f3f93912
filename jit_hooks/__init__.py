"""jit-hooks: just-in-time SSH access for Linux fleets."""

__version__ = "0.1.0"
