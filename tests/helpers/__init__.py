"""Data makers the tests share (not tests themselves)."""
