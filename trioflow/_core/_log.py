"""Logging that cannot break a run.

The runtime logs on the ``trioflow`` logger from places that must finish whatever happens (a
run's end, a failure report). A handler or filter of the application's that raises, or an
exception whose ``__str__`` raises, must not stop the terminal event, so every record goes
through `log`, which never raises an `Exception`.

The helpers here also say where a run failed the same way everywhere it is reported (the run's
end record, the server's report, ``trioflow run``), and which frames of a traceback are the
machinery's rather than the step's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from typing import Any

import outcome
import trio

logger = logging.getLogger("trioflow")
# The library's usual courtesy: without any handler, logging's "last resort" would print our
# WARNING and ERROR records to stderr in a program that configured no logging, and the
# loop-blocking detector's report, a warning too, would show twice. The application decides.
logger.addHandler(logging.NullHandler())


def log(level: int, message: str, *args: object, **kwargs: Any) -> None:
    """``logger.log(level, message, *args, **kwargs)``, swallowing what the logging
    machinery raises (it already reports formatting errors itself, to stderr)."""
    if not logger.isEnabledFor(level):  # (the common case for DEBUG: every run logs twice)
        return
    with contextlib.suppress(Exception):
        logger.log(level, message, *args, **kwargs)


def describe(exc: BaseException) -> str:
    """``"Type: message"`` for ``exc``, even when its ``__str__`` raises."""
    try:
        message = str(exc)
    except Exception:
        message = f"<str() failed on {type(exc).__name__} {object.__repr__(exc)}>"
    return f"{type(exc).__name__}: {message}"


def failed_in(
    step: str | None = None,
    attempt: int | None = None,
    handled_step: str | None = None,
    handled_attempt: int | None = None,
) -> str:
    """Where a run failed, to follow "failed" in a message: `` in step 'x'``, then for an error
    handler `` (handling the failure of step 'y', attempt n)``, else `` (attempt n)`` after
    retries; nothing when no step failed it."""
    if not step:
        return ""
    text = f" in step {step!r}"
    if handled_step is not None:
        text += f" (handling the failure of step {handled_step!r}{_nth(handled_attempt)})"
    elif attempt is not None and attempt > 1:
        text += f" (attempt {attempt})"
    return text


def _nth(attempt: int | None) -> str:
    return "" if attempt is None or attempt < 2 else f", attempt {attempt}"


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` unless ``exc`` carries that note already (one exception object
    raised by many runs gains it once), or refuses notes (a frozen dataclass exception)."""
    try:
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list) and note in notes:
            return
        exc.add_note(note)
    except Exception:
        pass


def is_machinery(filename: str) -> bool:
    """Whether a traceback's frame in ``filename`` belongs to the machinery that runs a step and
    passes its exception on: trioflow's private modules (not `trioflow.examples`, whose steps
    are steps), trio's and outcome's (which carry a ``def`` step's exception out of its
    thread). Tracebacks shown to people leave out such frames above the step's."""
    return filename.startswith(_MACHINERY)


def from_the_step(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` from its first frame that is not `is_machinery` (the step's, or what called it),
    or whole if it has none."""
    first = tb
    while first is not None and is_machinery(first.tb_frame.f_code.co_filename):
        first = first.tb_next
    return tb if first is None else first


def _package_dir(module: types.ModuleType) -> str:
    return os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep


_MACHINERY = (
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_"),
    _package_dir(trio),
    _package_dir(outcome),
)
