"""`log_failed_run`: a failed run's traceback, in the server's log.

Run in-process, a run's failure is raised to its caller, so the runtime logs it quietly (INFO,
one line). A run started over HTTP has no caller to raise it to: its client gets the error's
type, message and traceback text, unless the server hides tracebacks (``hide_tracebacks``),
and an operator reads logs rather than streams; so the server logs it too, once per failed
run, at WARNING with the exception, on the ``trioflow.server`` logger; the attempts that were
retried before are logged by the runtime (INFO, one line each), not here.
"""

from __future__ import annotations

import contextlib
import logging

from .. import RunStatus
from .._core._log import describe, failed_in, from_the_step
from .._handler import failure_fields
from ._record import RunRecord

logger = logging.getLogger("trioflow.server")


def log_failed_run(record: RunRecord) -> None:
    """Log ``record``'s failure with its traceback, if the run failed with an `Exception`: the
    run id, the workflow, the step, its attempt and, for an error handler that failed, the step
    whose failure it handled, as the message and as the fields ``run_id``, ``workflow``,
    ``step``, ``attempt``, ``handled_step`` and ``outcome``. A `BaseException` that stops the
    server (a step's ``SystemExit``) is the registry's to report. Never raises an `Exception`:
    the registry must finish the run whatever logging does."""
    handler = record.handler
    if handler.status is not RunStatus.FAILED:
        return
    try:
        handler.result_nowait()
    except Exception as failure:
        _log(record, failure)
    except BaseException:
        pass  # a SystemExit or KeyboardInterrupt: the registry reports it, then stops


def _log(record: RunRecord, failure: Exception) -> None:
    where = failure_fields(record.handler)
    with contextlib.suppress(Exception):  # a handler or filter of the application's that raises
        logger.warning(
            "run %s of %s failed%s: %s",
            record.run_id,
            record.workflow_name,
            failed_in(**where),
            describe(failure),
            # From the step's frame: the frames above it (this report, the registry, the
            # handler and the worker that passed the exception on) say nothing of the step.
            exc_info=(type(failure), failure, from_the_step(failure.__traceback__)),
            extra={
                **where,
                "workflow": record.workflow_name,
                "run_id": record.run_id,
                "outcome": RunStatus.FAILED.value,
            },
        )
