"""Notifications: an outbox written with each change, delivered at least once."""
