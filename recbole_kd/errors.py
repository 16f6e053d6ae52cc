"""The package's error classes: every user error is one of them, so that the command line can
print it as one line and Python callers can catch them by kind."""


class KDError(Exception):
    """A recbole_kd user error: the message says what is wrong and how to fix it."""


class KDConfigError(KDError, ValueError):
    """A config key is unknown, misplaced or has a value the run cannot use."""


class CheckpointError(KDError, ValueError):
    """A checkpoint is missing, unreadable, of another kind or from another run or split."""


class BackboneError(KDError, ValueError):
    """A model cannot serve as the teacher or student of the requested method."""


class DataFormatError(KDError, ValueError):
    """An input data file does not follow its format; the message names the file and line."""
