"""The package's error classes: every user error is one of them, so that the command line can
print it as one line and Python callers can catch them by kind."""

from __future__ import annotations

import errno
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
    except (KDError, OSError, UnicodeDecodeError) as error:
        if debug:
            raise
        print(f"{prog}: error: {one_line_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted. {interrupted_hint}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        warnings.showwarning = show


def one_line_message(error: Exception) -> str:
    """A user error as one line: the package's own message, or what the file system or a
    decoder said, with the file and the fix."""
    if isinstance(error, KDError):
        return str(error)
    if isinstance(error, UnicodeDecodeError):
        return (f"a file is not UTF-8 text ({error.reason} at byte {error.start}): save config, "
                "hyper-parameter and data files as UTF-8.")
    where = f"'{error.filename}': " if getattr(error, "filename", None) else ""
    fixes = {errno.EACCES: "check its permissions, or run from a folder you can write to",
             errno.EROFS: "the file system is read-only: run from a folder you can write to",
             errno.ENOSPC: "the disk is full: free space (runs resume from their last point)",
             errno.EEXIST: "a file of that name is in the way: pass another path",
             errno.ENOTDIR: "a path holds a file where a folder is needed: pass another path",
             errno.ENOENT: "check the path"}
    fix = fixes.get(error.errno, "check the path and the disk")
    return f"{where}{error.strerror or error}: {fix}."


# What continues an interrupted run, for the line Ctrl-C prints: set by the trainers each time a
# resume point is on disk (recbole_kd.trainer.resumable).
interrupted_hint = "Nothing had been saved to resume from."
