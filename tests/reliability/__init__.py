"""Reliability suite: fault matrix, crash safety."""
