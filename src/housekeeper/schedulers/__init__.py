"""Scheduler dialects: pure code that builds commands and parses their output (no I/O)."""
