"""Errors a user can act on. Each carries a one-line message naming what was wrong.

The CLI prints them as one line and exits with code 2; the API maps them to a 4xx JSON body.
Anything else escaping is a bug and is reported as such, never as a stack trace to a client.
"""

from __future__ import annotations

__all__ = ["AideployError", "InputError", "NotSupportedError"]


class AideployError(Exception):
    """Base of the errors a user can fix; ``str(error)`` is the one-line explanation."""


class InputError(AideployError, ValueError):
    """Input that is invalid: a field, a file or an argument that does not fit."""


class NotSupportedError(AideployError):
    """A valid request for something aideploy does not do (yet)."""
