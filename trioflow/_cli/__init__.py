"""The ``trioflow`` command: ``run``, ``draw``, ``validate``, ``serve``, ``demo``.

The CLI is the only part of trioflow that installs signal handlers or exits the process.
"""

from ._main import main

__all__ = ["main"]
