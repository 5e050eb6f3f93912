"""Test builders and real-process fixtures."""
