"""SIGINT and SIGTERM for the commands that run until stopped (``run``, ``serve``).

The first signal asks for a graceful stop (cancel the run; shut the server down); a second one,
while that is under way (a ``def`` step cannot be interrupted, a client is slow), exits at
once. Only the command line does this: the library leaves a program's signals to the program.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Callable

#: The signals that stop a command: open a receiver for them
#: (``trio.open_signal_receiver(*STOP_SIGNALS)``) before starting what they stop, so that an
#: early Ctrl-C is a clean stop too.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def stop_on_signals(
    signals: AsyncIterator[int], stop: Callable[[int], object], command: str
) -> None:
    """Call ``stop(signum)`` on the first signal; on a second one, exit the process at once
    with 128 + its number (the shell's way)."""
    stopping = False
    async for signum in signals:
        if stopping:
            print(f"trioflow {command}: interrupted again, exiting now", file=sys.stderr)
            os._exit(128 + signum)
        stopping = True
        stop(signum)
