"""The project's error types: what the command line shows as one line (exit code 2) instead of a traceback.

``UserError`` is a ``ValueError`` so library callers that catch ``ValueError`` keep working; the CLI's error
boundary catches ``UserError`` (and the operating-system, YAML, CSV and image-decoding errors it maps), never a bare
``KeyError``: a ``KeyError`` from inside the library is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "UserError"]


class UserError(ValueError):
    """A mistake in what the user gave (a file, a value, a setting); the message names it."""


class ConfigError(UserError):
    """A configuration value or file is invalid; the message names the key (and the file when there is one)."""
