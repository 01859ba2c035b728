"""Logging for the commands that run workflows (``run``, ``serve``, ``demo``).

The library only logs (its ``trioflow`` logger has a `logging.NullHandler`); a program decides
where records go, and the command line is the program here. It sends the root logger's records
to stderr from ``--log-level`` (WARNING by default) up, so that the server's report of a failed
run, the loop-blocking detector's report and the application's own warnings are seen.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .._core._blocking import LoopBlockedWarning

LEVELS = ("debug", "info", "warning", "error")

HANDLER_NAME = "trioflow-cli"

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_log_level_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level`` to ``parser``."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="warning",
        help="show log records (trioflow's and your code's) from this level up on stderr: "
        "warning shows a served run's failure with its traceback and a blocked event loop, "
        "info adds retries, debug every run's start and end (default: warning)",
    )


def configure_logging(level_name: str) -> None:
    """Send the records of ``level_name`` and above to stderr, one line each (with the
    traceback when a record has one)."""
    level = logging.getLevelNamesMapping()[level_name.upper()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    # The level on the handler too: records that propagate from a logger with a level of its
    # own (hypercorn's, at INFO) skip the root logger's level.
    handler.setLevel(level)
    # hypercorn gives its error log a stderr handler of its own and lets it propagate too:
    # printed once, by hypercorn.
    handler.addFilter(lambda record: not record.name.startswith("hypercorn."))
    handler.name = HANDLER_NAME
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:  # main() called again
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The loop-blocking detector both logs its report (printed now) and warns; appended, so a
    # -W option that names the warning still decides.
    warnings.filterwarnings("ignore", category=LoopBlockedWarning, append=True)
