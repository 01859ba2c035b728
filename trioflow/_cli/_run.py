"""``trioflow run``: start a workflow from the command line and stream its events live.

Readable lines by default, with a live progress line on a terminal where an event carries a
``value`` between 0 and 1, then the result; with ``--ndjson``, nothing but one JSON envelope per
line (the result is in the stop event's). Ctrl-C cancels the run cleanly: the stream ends with
its `WorkflowCancelledEvent`, which is shown. A failed run ends with one line on stderr naming
the error and the step, after the step's traceback unless ``--no-traceback``.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Mapping
from typing import Any, TextIO

import trio

from .._core._log import failed_in, is_machinery
from .._errors import WorkflowCancelledError
from .._events import Event, StartEvent, StepFailedEvent, StopEvent, WorkflowFailedEvent
from .._wire import (
    decode_start_event,
    dumps,
    encode_envelope,
    encode_event_data,
    encode_value,
    field_types,
    mark_unencodable,
    takes_free_form_fields,
)
from .._workflow import Workflow
from ._signals import STOP_SIGNALS, stop_on_signals

EXIT_FAILED = 1


def start_fields(start_type: type[StartEvent], given: Mapping[str, str]) -> dict[str, Any]:
    """``-p key=value`` pairs as start-event fields: a value stays a string for a ``str``
    field, and is read as JSON otherwise (``-p count=3``, ``-p tags='["a"]'``), falling back
    to the string when it is no JSON."""
    types = {} if takes_free_form_fields(start_type) else field_types(start_type)
    fields: dict[str, Any] = {}
    for key, text in given.items():
        if types.get(key) is str:
            fields[key] = text
            continue
        try:
            fields[key] = json.loads(text)
        except json.JSONDecodeError:
            fields[key] = text
    return fields


async def run_and_stream(
    workflow: Workflow,
    data: dict[str, Any],
    *,
    ndjson: bool,
    show_traceback: bool = True,
    out: TextIO = sys.stdout,
) -> int:
    """Run ``workflow`` with start fields ``data``, printing its events; return the exit code.
    ``show_traceback``: print a failed step's traceback on stderr.

    Raises:
        WireError: ``data`` does not fit the start event.
    """
    start_event = decode_start_event(workflow.graph.start_event_type, data)
    printer = _Printer(out, ndjson, show_traceback)
    # Listen before the run starts, so that an early Ctrl-C cancels it cleanly too.
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with workflow.start(start_event) as handler:
            received: list[int] = []  # the signals that came

            def stop(signum: int) -> None:
                received.append(signum)
                handler.cancel()  # the stream then ends with WorkflowCancelledEvent

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signals, signals, stop, "run")
                try:
                    async for event in handler.stream_events():
                        printer.event(event)
                finally:
                    nursery.cancel_scope.cancel()
            try:
                result = await handler.result()
            except WorkflowCancelledError as error:
                printer.failure(error)
                return 128 + (received[0] if received else signal.SIGINT)  # the shell's way
            except Exception as error:
                return printer.failure(error)
    printer.result(result)
    return 0


class _Printer:
    def __init__(self, out: TextIO, ndjson: bool, show_traceback: bool) -> None:
        self.out = out
        self.ndjson = ndjson
        self.show_traceback = show_traceback
        self.seq = 0
        self.started = trio.current_time()
        self.live = not ndjson and out.isatty()
        self.progress_shown = False
        self.failed_step = ""
        #: Each step's latest failed attempt: the one that failed the run names its attempt
        #: and, for an error handler, the failure it was handling.
        self.failures: dict[str, StepFailedEvent] = {}

    def event(self, event: Event) -> None:
        self.seq += 1
        if isinstance(event, StepFailedEvent):
            self.failures[event.step_name] = event
        elif isinstance(event, WorkflowFailedEvent):
            self.failed_step = event.step_name
        if self.ndjson:
            envelope = mark_unencodable(encode_envelope(self.seq, event))
            self.out.write(dumps(envelope).decode() + "\n")
            self.out.flush()
            return
        data = encode_event_data(event)
        value = data.get("value")
        if self.live and isinstance(value, int | float) and 0 <= value <= 1:
            self._progress(type(event).__name__, float(value), data)
            return
        self._end_progress()
        elapsed = trio.current_time() - self.started
        fields = "  ".join(f"{key}={_json(value)}" for key, value in data.items())
        self.out.write(f"{elapsed:7.2f}s  {type(event).__name__:<18} {fields}\n")
        self.out.flush()

    def _progress(self, name: str, value: float, data: dict[str, Any]) -> None:
        bar = "#" * round(value * 20)
        note = " ".join(str(v) for k, v in data.items() if k != "value" and isinstance(v, str))
        self.out.write(f"\r\x1b[K  {name} [{bar:<20}] {value:4.0%} {note}"[:200])
        self.out.flush()
        self.progress_shown = True

    def _end_progress(self) -> None:
        if self.progress_shown:
            self.out.write("\n")
            self.progress_shown = False

    def result(self, result: Any) -> None:
        if self.ndjson:
            return  # the stop event's envelope has it: the output stays NDJSON
        self._end_progress()
        if isinstance(result, StopEvent):
            result = encode_event_data(result)
        self.out.write(f"result: {_json(encode_value(result))}\n")

    def failure(self, error: BaseException) -> int:
        """Report the run's ``error`` on stderr: the step's traceback (when the run failed in
        a step, and unless switched off), then one line."""
        self._end_progress()
        self.out.flush()  # the events first, where stdout and stderr share a terminal
        where = ""
        if self.failed_step:
            if self.show_traceback:
                sys.stderr.write(step_traceback(error))
            where = self._failed_in(error)
        print(f"trioflow run: {type(error).__name__}{where}: {error}", file=sys.stderr)
        return EXIT_FAILED

    def _failed_in(self, error: BaseException) -> str:
        report = self.failures.get(self.failed_step)
        if report is None or report.exception is not error:
            return failed_in(self.failed_step)
        handled = report.input_event  # for an error handler, the failure it was handling
        if isinstance(handled, StepFailedEvent):
            return failed_in(report.step_name, report.attempt, handled.step_name, handled.attempt)
        return failed_in(report.step_name, report.attempt)


def step_traceback(error: BaseException) -> str:
    """``error``'s traceback as Python prints it (notes and chained exceptions included), less
    the frames of the machinery that ran the step and passed its exception on (`is_machinery`).
    As pytest hides its own frames: only those above the innermost frame of other code go;
    where the error was raised stays."""
    shown = traceback.TracebackException.from_exception(error)
    _trim(shown, set())
    return "".join(shown.format())


def _trim(shown: traceback.TracebackException, seen: set[int]) -> None:
    if id(shown) in seen:
        return
    seen.add(id(shown))
    frames = list(shown.stack)
    yours = [i for i, frame in enumerate(frames) if not is_machinery(frame.filename)]
    if yours:
        innermost = yours[-1]
        kept = [f for f in frames[:innermost] if not is_machinery(f.filename)]
        shown.stack = traceback.StackSummary.from_list(kept + frames[innermost:])
    for chained in (shown.__cause__, shown.__context__, *(shown.exceptions or ())):
        if chained is not None:
            _trim(chained, seen)


def _json(value: Any) -> str:
    """``value`` as JSON text for a reader; what has no JSON text (an int too long to
    convert) is shown as the server's marker rather than crash the printing."""
    return json.dumps(mark_unencodable(value), ensure_ascii=False)
