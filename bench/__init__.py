"""Benchmarks for jit-hooks: each figure is a ratio measured side by side with its baseline."""
