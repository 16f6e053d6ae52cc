"""One log file per run, also when one process trains several (a comparison, a tuning)."""

from __future__ import annotations

import logging

from recbole.utils import init_logger

#: Marks the handlers that :func:`init_run_logger` installed.
MARK = "recbole_kd_run"


def init_run_logger(config) -> None:
    """RecBole's ``init_logger`` for a run of its own: its console and its own log file.

    RecBole installs its handlers with ``logging.basicConfig``, which does nothing while the
    root logger has any handler: the second run of a process (a comparison, a tuning) would
    write into the first run's log file and leave its own empty, and a process whose root logger
    was configured elsewhere would get no log file. The handlers that the previous run installed
    are removed (and closed); RecBole's are installed on a root logger emptied for the call,
    beside the handlers that others installed, which stay.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    others, root.handlers = root.handlers, []
    try:
        init_logger(config)
    finally:
        for handler in root.handlers:
            setattr(handler, MARK, True)
        root.handlers = others + root.handlers
