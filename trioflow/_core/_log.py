"""Logging that cannot break a run.

The runtime logs on the ``trioflow`` logger from places that must finish whatever happens (a
run's end, a failure report). A handler or filter of the application's that raises, or an
exception whose ``__str__`` raises, must not stop the terminal event, so every record goes
through `log`, which never raises an `Exception`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

logger = logging.getLogger("trioflow")


def log(level: int, message: str, *args: object, **kwargs: Any) -> None:
    """``logger.log(level, message, *args, **kwargs)``, swallowing what the logging
    machinery raises (it already reports formatting errors itself, to stderr)."""
    with contextlib.suppress(Exception):
        logger.log(level, message, *args, **kwargs)


def describe(exc: BaseException) -> str:
    """``"Type: message"`` for ``exc``, even when its ``__str__`` raises."""
    try:
        message = str(exc)
    except Exception:
        message = f"<str() failed on {type(exc).__name__} {object.__repr__(exc)}>"
    return f"{type(exc).__name__}: {message}"


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
