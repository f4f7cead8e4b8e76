"""Shared I/O: atomic writes, checkpoints, feature files."""
