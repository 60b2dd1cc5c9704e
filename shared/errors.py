"""The errors a user fixes, as opposed to bugs.

Both command lines print a `UserError` as one line (its message names the file or key and the
fix) and let every other exception keep its traceback, so an internal bug never looks like a
user's mistake. Subclasses say where the problem was found.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix: the message says what and how."""


class ConfigError(UserError, ValueError):
    """A pipeline file (or --set override) that cannot be used as written."""


class DatasetError(UserError, ValueError):
    """A raw dataset file that is missing, corrupt or inconsistent."""


class MissingData(UserError, RuntimeError):
    """The store lacks something a command needs (the message names the preprocess command)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is corrupt, foreign, from a newer version or holds pickled code."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (its type where it has none), to quote
    inside a one-line error."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def pick(registry: dict, name: str, what: str):
    """`registry[name]`, or one ConfigError naming `what` (e.g. "labels.labeler") and the known names:
    every family registry is asked through this, so no caller falls through to a default."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ConfigError(f"{what} = {name!r} is not one of {', '.join(registry)}") from None
