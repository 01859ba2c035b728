"""What trioflow logs, and what it leaves to the application: the ``trioflow`` logger's
handler, the loop-blocking detector's record, where a failed run failed, and the server's
report of a failed run."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from _http import served, wait_until

from trioflow import (
    LoopBlockedWarning,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    step,
)


class Boom(Exception):
    pass


class Retried(Workflow):
    """A step that fails every attempt of three."""

    @step(retry=RetryPolicy(max_attempts=3))
    async def fetch(self, ev: StartEvent) -> StopEvent:
        raise Boom("no luck")


class Reraise(Workflow):
    """An error handler that re-raises the failure it was given, after two attempts."""

    @step(retry=RetryPolicy(max_attempts=2))
    async def fetch(self, ev: StartEvent) -> StopEvent:
        raise Boom("no luck")

    @step
    async def rescue(self, ev: StepFailedEvent) -> StopEvent:
        raise ev.exception


class Fine(Workflow):
    @step
    async def finish(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="ok")


class Slow(Workflow):
    """Runs into its timeout."""

    @step
    async def dawdle(self, ev: StartEvent) -> StopEvent:
        await trio.sleep(30)
        return StopEvent()


def field(record: logging.LogRecord, name: str) -> Any:
    """A structured field of ``record`` (an ``extra=`` attribute)."""
    return getattr(record, name)


# -- the library's handler --


def test_the_logger_has_only_a_null_handler() -> None:
    """The library prints nothing through logging by itself: its logger's one handler is a
    NullHandler, so that logging's last resort stays silent; the application decides."""
    [handler] = logging.getLogger("trioflow").handlers
    assert type(handler) is logging.NullHandler


BLOCKING_PROGRAM = """
import time, trio
from trioflow import StartEvent, StopEvent, Workflow, step

class Sleepy(Workflow):
    @step
    async def nap(self, ev: StartEvent) -> StopEvent:
        time.sleep(0.3)  # blocks the event loop: what the detector reports
        return StopEvent(result="rested")

print(trio.run(Sleepy().run))
"""


def test_a_blocked_loop_is_reported_once_by_a_program_without_logging(tmp_path: Path) -> None:
    """In a program that configures no logging, the detector's report shows once (as the
    warning), not also as a log line printed by logging's last resort."""
    program = tmp_path / "blocking.py"
    program.write_text(BLOCKING_PROGRAM)
    done = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "rested\n"
    assert done.stderr.count("held the trio event loop") == 1
    assert "LoopBlockedWarning: step 'nap' of workflow 'Sleepy'" in done.stderr


class Sleepy(Workflow):
    @step
    async def nap(self, ev: StartEvent) -> StopEvent:
        time.sleep(0.3)  # noqa: ASYNC251  (the mistake the detector is for)
        return StopEvent(result="rested")


async def test_the_loop_blocked_record_has_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The detector's log record carries the fields the README lists: workflow, step, and
    how long the step held the loop (duration), with the threshold."""
    caplog.set_level(logging.WARNING, logger="trioflow")
    with pytest.warns(LoopBlockedWarning, match="held the trio event loop"):
        assert await Sleepy(blocking_threshold=0.1).run() == "rested"
    [record] = [r for r in caplog.records if "held the trio event loop" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert (field(record, "workflow"), field(record, "step")) == ("Sleepy", "nap")
    assert field(record, "threshold") == 0.1
    assert 0.2 <= field(record, "duration") < 10


# -- where a run failed --


async def test_a_failure_re_raised_by_an_error_handler_names_where_it_began(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that re-raises: the exception's note and the run's end record name the
    step whose failure the handler handled, and its attempt, besides the handler."""
    caplog.set_level(logging.INFO, logger="trioflow")
    with pytest.raises(Boom) as raised:
        await Reraise().run()
    assert raised.value.__notes__ == [
        "trioflow: raised in step 'fetch' of Reraise",
        "trioflow: raised in step 'rescue' of Reraise while handling the failure of step 'fetch'",
    ]
    [end] = [r for r in caplog.records if hasattr(r, "outcome")]
    assert end.getMessage().endswith(
        "of Reraise failed in step 'rescue' (handling the failure of step 'fetch', "
        "attempt 2): Boom: no luck"
    )
    assert field(end, "step") == "rescue"
    assert field(end, "attempt") == 1
    assert (field(end, "handled_step"), field(end, "handled_attempt")) == ("fetch", 2)


async def test_a_failed_runs_end_record_names_the_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A step that failed its last attempt: the run's end record has the attempt."""
    caplog.set_level(logging.INFO, logger="trioflow")
    with pytest.raises(Boom):
        await Retried().run()
    [end] = [r for r in caplog.records if hasattr(r, "outcome")]
    assert "failed in step 'fetch' (attempt 3): Boom: no luck" in end.getMessage()
    assert (field(end, "step"), field(end, "attempt")) == ("fetch", 3)
    assert not hasattr(end, "handled_step")


# -- the server's report --


def server_reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioflow.server"]


async def test_the_server_logs_a_failed_run_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run started over HTTP that fails is logged once (not per attempt), at WARNING, with
    its exception and the fields run_id, workflow, step and attempt; a run that completes or
    times out is not."""
    caplog.set_level(logging.INFO)
    flows = {"retried": Retried(), "fine": Fine(), "slow": Slow(timeout=0.05)}
    async with served(flows) as server:
        fine = await server.start("fine")
        await server.wait_status(fine, "completed")
        failed = await server.start("retried")
        await server.wait_status(failed, "failed")
        await wait_until(lambda: bool(server_reports(caplog)))
        slow = await server.start("slow")
        await server.wait_status(slow, "timed_out")
        await server.events(slow)  # its stream ended: the run is over
    [record] = server_reports(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"run {failed} of retried failed in step 'fetch' (attempt 3): Boom: no luck"
    )
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, Boom)
    assert (field(record, "run_id"), field(record, "workflow")) == (failed, "retried")
    assert (field(record, "step"), field(record, "attempt")) == ("fetch", 3)
    assert field(record, "outcome") == "failed"
    # The traceback starts at the step: the frames that passed the exception on are left out.
    traceback = logging.Formatter().formatException(record.exc_info)
    assert traceback.splitlines()[1].endswith("in fetch")


async def test_the_server_names_where_a_re_raised_failure_began(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server's report of a failing error handler names the step it was handling."""
    caplog.set_level(logging.WARNING)
    async with served({"reraise": Reraise()}) as server:
        run_id = await server.start("reraise")
        await server.wait_status(run_id, "failed")
        await wait_until(lambda: bool(server_reports(caplog)))
    [record] = server_reports(caplog)
    assert record.getMessage() == (
        f"run {run_id} of reraise failed in step 'rescue' (handling the failure of step "
        "'fetch', attempt 2): Boom: no luck"
    )
    assert (field(record, "handled_step"), field(record, "handled_attempt")) == ("fetch", 2)
