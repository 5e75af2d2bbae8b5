"""Errors that cross module boundaries (each CLI command maps them to an exit code)."""
from __future__ import annotations


class UsageError(Exception):
    """Bad command-line input (missing path, unreadable config, missing model): exit 2, one line."""
