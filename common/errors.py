"""The one exception type for a user's mistake.

A ``UserError`` says what was wrong with the command, a config value or a file the user passed,
and what to do instead. Constructors and checks raise it; every script turns it into one line on
the log and exit status 2 (``common.runs.exit_on_setup_error``), before any work is done. Any
other exception is a bug and keeps its traceback. ``debug=true`` on the command line, or
``HYDRA_FULL_ERROR=1`` in the environment, shows the full chain for user mistakes too.

``UserError`` is a ``ValueError`` and ``MissingFile`` also a ``FileNotFoundError``, so code that
catches the built-in types keeps working.
"""
from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user asked for (a command-line option, a config value, a file):
    the message names it and says what to do."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (the message says which, and how to make
    or find one)."""


def user_error_in(err: BaseException | None) -> UserError | None:
    """The ``UserError`` that ``err`` is, or that caused it (Hydra wraps what a constructor
    raised in its ``InstantiationException``); ``None`` when there is none."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None
