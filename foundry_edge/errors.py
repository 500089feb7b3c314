"""The one user-facing error type.

Raise `FoundryError` for anything the user can fix (bad input, a missing extra, a mismatched engine):
the CLI prints it as one line and exits non-zero. Bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations


class FoundryError(Exception):
    """A problem with the user's input or environment, reported as one line.

    Write the message as: what was expected, what was found, how to fix it.
    """

    exit_code = 2


class MissingDependencyError(FoundryError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str):
    """Import an optional dependency lazily, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"'{module}' is not installed ({exc}); install it with: pip install 'foundry-edge[{extra}]'"
        ) from None
