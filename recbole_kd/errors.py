"""The package's error classes: every user error is one of them, so that the command line can
print it as one line and Python callers can catch them by kind."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class KDError(Exception):
    """A recbole_kd user error: the message says what is wrong and how to fix it."""


class KDConfigError(KDError, ValueError):
    """A config key is unknown, misplaced or has a value the run cannot use."""


class CheckpointError(KDError, ValueError):
    """A checkpoint is missing, unreadable, of another kind or from another run or split."""


class BackboneError(KDError, ValueError):
    """A model cannot serve as the teacher or student of the requested method."""


class TrainingError(KDError, ValueError):
    """Training cannot go on (e.g. a loss became NaN); the message names the likely cause."""


class DataFormatError(KDError, ValueError):
    """An input data file does not follow its format; the message names the file and line."""


class KDConfigWarning(UserWarning):
    """A setting that is probably a mistake, though the run can go on (e.g. a misspelled key)."""


DEBUG_VARIABLE = "RECBOLE_KD_DEBUG"


@contextmanager
def user_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """For command lines: a user error (:class:`KDError`) ends the program with its message on
    one line and exit status 2, no traceback; ``debug`` (or RECBOLE_KD_DEBUG=1) shows it. A
    :class:`KDConfigWarning` is printed as one line too."""
    debug = debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    show = warnings.showwarning

    def one_line(message, category, *args, **kwargs):
        if issubclass(category, KDConfigWarning) and not debug:
            print(f"{prog}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = one_line
    try:
        yield
    except KDError as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        warnings.showwarning = show
