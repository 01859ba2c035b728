"""Resources: ``Annotated[T, Resource(factory)]`` step parameters, made per call, per run or per
workflow instance, and exited (context managers) in reverse order when their lifetime ends."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    Resource,
    ResourceConfig,
    RetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
    open_store,
    step,
)
from trioflow._core._resources import TEARDOWN_TIMEOUT
from trioflow.collect import Collect
from trioflow.resource import Resource as ResourceByLlamaIndexPath


class Log:
    """What factories and teardowns did, in order."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def __call__(self, entry: str) -> None:
        self.entries.append(entry)


class Client:
    """A stand-in for a connection: numbered, and closed by its context manager."""

    made = 0

    def __init__(self, name: str) -> None:
        Client.made += 1
        self.name = f"{name}{Client.made}"
        self.closed = False


def managed(log: Log, name: str, *, exit_delay: float = 0.0) -> Any:
    """An ``@asynccontextmanager`` factory of a `Client` that logs its entry and exit."""

    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[Client]:
        client = Client(name)
        log(f"enter {client.name}")
        try:
            yield client
        finally:
            if exit_delay:
                await trio.sleep(exit_delay)  # (cancelled here, were the exit not shielded)
            client.closed = True
            log(f"exit {client.name}")

    factory.__qualname__ = name
    return factory


class Ping(Event):
    i: int = 0


class Pong(Event):
    i: int = 0


# -- injection --


async def test_resources_go_in_their_places_among_ctx_and_event() -> None:
    """Resource parameters may stand before, between and after ``ctx`` and the event."""

    def first() -> str:
        return "first"

    async def second() -> str:
        await trio.lowlevel.checkpoint()
        return "second"

    class Flow(Workflow):
        @step
        async def go(
            self,
            a: Annotated[str, Resource(first)],
            ctx: Context,
            b: Annotated[str, Resource(second)],
            ev: StartEvent,
            c: Annotated[str, Resource(first)],
        ) -> StopEvent:
            assert isinstance(ctx, Context)
            return StopEvent(result=(a, b, ev.x, c))

    assert await Flow().run(x=1) == ("first", "second", 1, "first")


async def test_a_def_step_gets_resources_made_in_trio() -> None:
    """A plain ``def`` step runs in a thread, yet an async factory (which needs trio) serves it,
    and its context manager is exited after the step, in trio."""
    log = Log()

    class Flow(Workflow):
        @step
        def go(
            self, ev: StartEvent, client: Annotated[Client, Resource(managed(log, "db"))]
        ) -> StopEvent:
            log(f"step uses {client.name}")
            with pytest.raises(RuntimeError):
                trio.lowlevel.current_task()  # (in a worker thread, not in trio)
            return StopEvent(result=client)

    client = await Flow().run()
    assert client.closed
    assert log.entries == [
        f"enter {client.name}",
        f"step uses {client.name}",
        f"exit {client.name}",
    ]


async def test_joins_and_collecting_steps_get_resources() -> None:
    def tag() -> str:
        return "T"

    class Flow(Workflow):
        @step
        async def split(self, ev: StartEvent) -> list[Ping]:
            return [Ping(i=i) for i in range(3)]

        @step
        async def work(self, ev: Ping) -> Pong:
            return Pong(i=ev.i)

        @step
        async def collect(
            self, t: Annotated[str, Resource(tag)], done: Annotated[list[Pong], Collect()]
        ) -> Single:
            return Single(text=t + "".join(sorted(str(d.i) for d in done)))

        @step
        async def begin(self, ev: StartEvent) -> Other:
            return Other()

        @step
        async def join(
            self, a: Single, t: Annotated[str, Resource(tag)], b: Other, ctx: Context
        ) -> StopEvent:
            return StopEvent(result=(a.text, t, type(b).__name__))

    assert await Flow().run() == ("T012", "T", "Other")


class Single(Event):
    text: str


class Other(Event):
    pass


# -- factories --


async def test_factories_of_every_kind() -> None:
    """A function, an async function, a context manager (entered, then exited), an async context
    manager, a class whose instances are async context managers, and ``enter=False``."""
    log = Log()

    @contextlib.contextmanager
    def sync_managed() -> Iterator[str]:
        log("sync enter")
        yield "sync value"
        log("sync exit")

    class Session:
        async def __aenter__(self) -> str:
            log("session enter")
            return "session value"

        async def __aexit__(self, *exc: object) -> None:
            log("session exit")

    def unentered() -> Session:
        return Session()

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            a: Annotated[str, Resource(sync_managed)],
            b: Annotated[Client, Resource(managed(log, "async"))],
            c: Annotated[str, Resource(Session)],
            d: Annotated[Session, Resource(unentered, enter=False)],
        ) -> StopEvent:
            log("step")
            return StopEvent(result=(a, b.name.rstrip("0123456789"), c, type(d).__name__))

    assert await Flow().run() == ("sync value", "async", "session value", "Session")
    assert [e for e in log.entries if not e.startswith(("enter", "exit"))] == [
        "sync enter",
        "session enter",
        "step",
        "session exit",
        "sync exit",
    ]
    assert ResourceByLlamaIndexPath is Resource


async def test_a_factory_takes_other_resources_and_is_exited_before_them() -> None:
    """A factory's own ``Annotated[T, Resource(...)]`` parameters are made first (and one
    ``cache=False`` value is shared within one step call); teardown is the reverse of entry."""
    log = Log()
    pool = managed(log, "pool")
    made: list[str] = []

    def counter() -> str:
        made.append("n")
        return f"n{len(made)}"

    @contextlib.asynccontextmanager
    async def session(
        p: Annotated[Client, Resource(pool)], n: Annotated[str, Resource(counter, cache=False)]
    ) -> AsyncIterator[str]:
        log(f"enter session on {p.name} {n}")
        yield f"session on {p.name}"
        log("exit session")

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            s: Annotated[str, Resource(session)],
            n: Annotated[str, Resource(counter, cache=False)],
            m: Annotated[str, Resource(counter, cache=False)],
        ) -> StopEvent:
            return StopEvent(result=(s, n, m))

    session_name, n, m = await Flow().run()
    assert n == m  # one per call, however many parameters name it
    assert len(made) == 2  # one for the run-scoped session, one for the call
    (pool_name,) = [e.split()[1] for e in log.entries if e.startswith("enter pool")]
    assert session_name == f"session on {pool_name}"
    assert log.entries == [
        f"enter {pool_name}",
        f"enter session on {pool_name} n1",
        "exit session",
        f"exit {pool_name}",
    ]


# -- caching --


async def test_a_run_scoped_value_is_made_once_per_run_even_when_first_asked_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Five workers of a step and another step ask at the same moment: one factory call per
    run, one value shared by all, exited when its run ends; another run gets its own."""
    calls: list[int] = []
    seen: list[int] = []

    @contextlib.asynccontextmanager
    async def slow() -> AsyncIterator[object]:
        calls.append(1)
        await trio.sleep(1)  # every first user arrives while it is being made
        value = object()
        yield value
        calls.append(-1)

    class Flow(Workflow):
        @step
        async def fan(self, ctx: Context, ev: StartEvent) -> Ping | None:
            for i in range(5):
                ctx.send_event(Ping(i=i))
            return None

        @step(num_workers=5)
        async def use(
            self, ctx: Context, ev: Ping, r: Annotated[object, Resource(slow)]
        ) -> Pong | None:
            seen.append(id(r))
            return Pong(i=ev.i) if ev.i == 0 else None

        @step
        async def end(
            self, ctx: Context, ev: Pong, r: Annotated[object, Resource(slow)]
        ) -> StopEvent:
            await trio.sleep(2)  # the others are done by then
            return StopEvent(result=[*seen, id(r)])

    flow = Flow()
    first = await flow.run()
    assert len(first) == 6
    assert len(set(first)) == 1
    assert calls == [1, -1]
    await flow.run()
    assert calls == [1, -1, 1, -1]


async def test_cache_false_makes_a_fresh_value_per_call_exited_after_it() -> None:
    """Each call (attempt) gets its own value, exited when the call ends: told of the call's
    exception, as an ``async with`` in the step would be."""
    log = Log()

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[Log]:
        log("begin")
        try:
            yield log
        except ValueError:
            log("rollback")
            raise
        log("commit")

    class Flow(Workflow):
        @step(retry=RetryPolicy(max_attempts=2))
        async def go(
            self, ev: StartEvent, tx: Annotated[Log, Resource(transaction, cache=False)]
        ) -> StopEvent:
            tx("work")
            if log.entries.count("work") == 1:
                raise ValueError("first attempt fails")
            return StopEvent(result="done")

    assert await Flow().run() == "done"
    assert log.entries == ["begin", "work", "rollback", "begin", "work", "commit"]


async def test_workflow_scoped_values_are_shared_by_runs() -> None:
    """``scope="workflow"``: one value per workflow instance, as LlamaIndex's ``cache=True``."""
    made: list[object] = []

    def thing() -> object:
        made.append(object())
        return made[-1]

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, r: Annotated[object, Resource(thing, scope="workflow")]
        ) -> StopEvent:
            return StopEvent(result=r)

    flow = Flow()
    assert await flow.run() is await flow.run() is made[0]
    assert await Flow().run() is made[1]


async def test_a_workflow_scoped_context_manager_needs_an_open_block() -> None:
    """Without `open_resources` a workflow-scoped context manager has no owner to exit it, so
    the step fails saying so; inside the block, runs share it and the block's end exits it."""
    log = Log()

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            c: Annotated[Client, Resource(managed(log, "shared"), scope="workflow")],
        ) -> StopEvent:
            return StopEvent(result=c)

    flow = Flow()
    with pytest.raises(WorkflowRuntimeError, match="open_resources"):
        await flow.run()
    async with flow.open_resources():
        first = await flow.run()
        assert await flow.run() is first
        assert not first.closed
        with pytest.raises(WorkflowRuntimeError, match="open already"):
            async with flow.open_resources():
                pass
    assert first.closed
    assert log.entries == [f"enter {first.name}", f"exit {first.name}"]
    async with flow.open_resources():  # forgotten once exited: the next block makes another
        assert await flow.run() is not first


async def test_a_workflow_scoped_teardown_error_is_raised_by_its_block() -> None:
    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[str]:
        yield "x"
        raise OSError("cannot close")

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, r: Annotated[str, Resource(broken, scope="workflow")]
        ) -> StopEvent:
            return StopEvent(result=r)

    flow = Flow()
    with pytest.raises(OSError, match="cannot close") as raised:
        async with flow.open_resources():
            assert await flow.run() == "x"
    assert any("was exited" in note for note in raised.value.__notes__)


# -- teardown: order, and every way a run ends --


def _teardown_flow(log: Log, end: str) -> type[Workflow]:
    """Takes an outer then an inner resource (the inner made after), then ends as ``end``
    says: "stop", "fail", or "hang" (until cancelled or timed out)."""
    outer, inner = managed(log, "outer"), managed(log, "inner")

    class Flow(Workflow):
        @step
        async def first(self, ev: StartEvent, o: Annotated[Client, Resource(outer)]) -> Ping:
            await trio.sleep(1)
            return Ping()

        @step
        async def second(
            self,
            ev: Ping,
            i: Annotated[Client, Resource(inner)],
            o: Annotated[Client, Resource(outer)],
        ) -> StopEvent:
            log("second")
            if end == "fail":
                raise ValueError("boom")
            if end == "hang":
                try:
                    await trio.sleep_forever()
                finally:
                    log("second unwound")
            return StopEvent(result="ok")

    return Flow


def _exits(log: Log) -> list[str]:
    return [e.rstrip("0123456789") for e in log.entries]


async def test_resources_are_exited_in_reverse_order_after_the_run_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    assert await _teardown_flow(log, "stop")().run() == "ok"
    assert _exits(log) == ["enter outer", "enter inner", "second", "exit inner", "exit outer"]


async def test_resources_are_exited_when_the_run_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    with pytest.raises(ValueError, match="boom"):
        await _teardown_flow(log, "fail")().run()
    assert _exits(log) == ["enter outer", "enter inner", "second", "exit inner", "exit outer"]


async def test_resources_are_exited_after_the_steps_unwind_when_a_run_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with _teardown_flow(log, "hang")().start() as handler:
        await trio.sleep(5)
        handler.cancel()
        with pytest.raises(WorkflowCancelledError):
            await handler.result()
    assert _exits(log)[-3:] == ["second unwound", "exit inner", "exit outer"]


async def test_resources_are_exited_when_a_run_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Exits that take time (3 s each here) still run to their end after the timeout."""
    log = Log()
    slow_exit = managed(log, "slow", exit_delay=3)

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent, r: Annotated[Client, Resource(slow_exit)]) -> StopEvent:
            await trio.sleep_forever()
            raise AssertionError

    with pytest.raises(WorkflowTimeoutError):
        await Flow(timeout=10).run()
    assert trio.current_time() == pytest.approx(13)
    assert _exits(log) == ["enter slow", "exit slow"]


async def test_resources_are_exited_when_the_callers_scope_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    with trio.move_on_after(5) as scope:
        await _teardown_flow(log, "hang")().run()
    assert scope.cancelled_caught
    assert _exits(log)[-3:] == ["second unwound", "exit inner", "exit outer"]


async def test_a_value_still_being_made_when_the_run_ends_is_abandoned_and_its_parts_exited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The run times out while a run-scoped factory waits (after its own resource was entered):
    the making is cancelled, what it had entered is exited, and the run ends as timed out."""
    log = Log()
    part = managed(log, "part")

    async def hanging(p: Annotated[Client, Resource(part, cache=False)]) -> str:
        log("making")
        await trio.sleep_forever()
        raise AssertionError

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent, r: Annotated[str, Resource(hanging)]) -> StopEvent:
            raise AssertionError("never given its resource")

    with pytest.raises(WorkflowTimeoutError):
        await Flow(timeout=5).run()
    assert _exits(log) == ["enter part", "making", "exit part"]


async def test_a_hanging_teardown_is_cut_off_at_its_bound_and_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    @contextlib.asynccontextmanager
    async def stuck() -> AsyncIterator[str]:
        yield "x"
        await trio.sleep_forever()

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent, r: Annotated[str, Resource(stuck)]) -> StopEvent:
            return StopEvent(result=r)

    with caplog.at_level(logging.ERROR, logger="trioflow"):
        assert await Flow().run() == "x"
    assert trio.current_time() == pytest.approx(TEARDOWN_TIMEOUT)
    (record,) = caplog.records
    assert "resource" in record.message
    assert "stuck" in record.message
    assert "cut off" in record.message


async def test_a_teardown_error_is_logged_and_noted_on_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It does not change the outcome (decided when the run ended) but is never silent: logged
    at ERROR with its traceback, and noted on the run's failure, if it failed."""

    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[str]:
        yield "x"
        raise OSError("cannot close")

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent, r: Annotated[str, Resource(broken)]) -> StopEvent:
            if ev.get("fail"):
                raise ValueError("step failed")
            return StopEvent(result=r)

    with caplog.at_level(logging.ERROR, logger="trioflow"):
        assert await Flow().run() == "x"
    (record,) = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], OSError)
    with pytest.raises(ValueError, match="step failed") as raised:
        await Flow().run(fail=True)
    assert any("cannot close" in note for note in raised.value.__notes__)


# -- a factory that fails --


async def test_a_failing_factory_fails_the_step_and_is_retried() -> None:
    """The factory's exception is the step's failure: a `StepFailedEvent`, retried by the
    step's policy (calling the factory again), else the run's failure, as itself."""
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return "connected"

    class Flow(Workflow):
        @step(retry=RetryPolicy(max_attempts=3))
        async def go(self, ev: StartEvent, r: Annotated[str, Resource(flaky)]) -> StopEvent:
            return StopEvent(result=r)

    async with Flow().start() as handler:
        events = [e async for e in handler.stream_events()]
        assert await handler.result() == "connected"
    failed = [e for e in events if isinstance(e, StepFailedEvent)]
    assert [(e.attempt, str(e.exception)) for e in failed] == [(1, "attempt 1"), (2, "attempt 2")]

    def broken() -> str:
        raise ConnectionError("down")

    class Once(Workflow):
        @step
        async def go(self, ev: StartEvent, r: Annotated[str, Resource(broken)]) -> StopEvent:
            return StopEvent(result=r)

    with pytest.raises(ConnectionError, match="down") as raised:
        await Once().run()
    assert any("step 'go'" in note for note in raised.value.__notes__)


# -- validation --


def test_resource_options_are_checked_where_given() -> None:
    with pytest.raises(TypeError, match="callable factory"):
        Resource("not callable")  # type: ignore[arg-type]

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"@contextlib\.contextmanager"):
        Resource(gen)
    with pytest.raises(ValueError, match="no scope"):
        Resource(object, cache=False, scope="workflow")
    with pytest.raises(ValueError, match="scope"):
        Resource(object, scope="process")  # type: ignore[arg-type]


def test_a_resource_that_is_also_an_event_or_the_context_is_refused() -> None:
    class Flow(Workflow):
        @step
        async def go(
            self, ctx: Context, ev: Annotated[StartEvent, Resource(StartEvent)]
        ) -> StopEvent:
            return StopEvent()

        @step
        async def other(self, ev: Ping, c: Annotated[Context, Resource(object)]) -> StopEvent:
            return StopEvent()

        @step
        async def twice(
            self, ev: Pong, r: Annotated[object, Resource(object), Resource(dict)]
        ) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError) as raised:
        Flow()
    message = str(raised.value)
    assert "step 'go': parameter 'ev' is annotated as an event and as a Resource" in message
    assert "step 'other': parameter 'c' is annotated as the context" in message
    assert "step 'twice': parameter 'r' has more than one Resource marker" in message


def test_factories_that_cannot_be_called_are_refused() -> None:
    def needs(url: str) -> str:
        return url

    def ok(url: str = "x", **more: object) -> str:
        return url

    def shared(r: Annotated[str, Resource(ok)]) -> str:  # run-scoped
        return r

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            x: Annotated[str, Resource(needs)],
            y: Annotated[str, Resource(ok)],
        ) -> Ping:
            return Ping()

        @step
        async def then(
            self, ev: Ping, z: Annotated[str, Resource(shared, scope="workflow")]
        ) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError) as raised:
        Flow()
    message = str(raised.value)
    assert ".needs takes 'url', which is no resource" in message
    assert "cannot depend on" in message
    assert "run-scoped" in message
    assert "'y'" not in message


def test_factories_depending_on_each_other_in_a_cycle_are_refused() -> None:
    def ping(p: Annotated[str, Resource(lambda: "")]) -> str:
        return p

    def pong(p: Annotated[str, Resource(ping)]) -> str:
        return p

    # Close the cycle: ping's parameter names pong.
    ping.__annotations__["p"] = Annotated[str, Resource(pong)]

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent, r: Annotated[str, Resource(ping)]) -> StopEvent:
            return StopEvent()

    with pytest.raises(
        WorkflowValidationError, match=r"cycle: \S+\.ping -> \S+\.pong -> \S+\.ping$"
    ):
        Flow()


# -- configuration read from JSON --


@attrs.frozen
class Model:
    name: str
    temperature: float = 0.5


@attrs.frozen
class LLMConfig:
    model: Model
    stop: list[str]


async def test_resource_config_reads_json_into_the_annotated_class(tmp_path: Path) -> None:
    """``ResourceConfig(file, path_selector)``: the object at the path, structured into the
    parameter's attrs class (nested too), read once per workflow instance."""
    config_file = tmp_path / "app.json"
    llm = {"model": {"name": "m1"}, "stop": ["\\n"]}
    config_file.write_text(json.dumps({"services": {"llm": llm}}))

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            config: Annotated[LLMConfig, ResourceConfig(str(config_file), "services.llm")],
        ) -> StopEvent:
            return StopEvent(result=config)

    flow = Flow()
    first = await flow.run()
    assert first == LLMConfig(model=Model(name="m1"), stop=["\\n"])
    config_file.write_text("{}")
    assert await flow.run() is first

    class Missing(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            config: Annotated[LLMConfig, ResourceConfig(str(config_file), "services.llm")],
        ) -> StopEvent:
            return StopEvent(result=config)

    with pytest.raises(ValueError, match="no JSON object at 'services'"):
        await Missing().run()
    with pytest.raises(ValueError, match=r"\.json"):
        ResourceConfig("app.yaml")


# -- durable runs --


class Ask(InputRequiredEvent):
    pass


class Answer(HumanResponseEvent):
    pass


_durable_log = Log()
_durable_client = managed(_durable_log, "durable")


class Durable(Workflow):
    """Asks between two steps that each use a run-scoped client."""

    @step
    async def ask(self, ev: StartEvent, c: Annotated[Client, Resource(_durable_client)]) -> Ask:
        return Ask()

    @step
    async def answered(
        self, ev: Answer, c: Annotated[Client, Resource(_durable_client)]
    ) -> StopEvent:
        return StopEvent(result=c.name)


async def test_a_durable_run_gets_resources_and_a_resumed_one_makes_them_anew(
    tmp_path: Path,
) -> None:
    """Resources are live objects, never journaled: a store run injects them like a memory
    run, a suspended run exits them, and its resumed run makes its own."""
    _durable_log.entries.clear()
    url = f"sqlite:///{tmp_path}/runs.db"
    flow = Durable()
    async with open_store(url) as store:
        with trio.CancelScope() as shutdown:
            async with store.start(flow) as handler:
                async for event in handler.stream_events():
                    if isinstance(event, Ask):
                        break
                shutdown.cancel()
                await trio.sleep_forever()
    (first,) = [e.split()[1] for e in _durable_log.entries if e.startswith("enter")]
    assert _durable_log.entries == [f"enter {first}", f"exit {first}"]
    async with open_store(url) as store, store.resume([flow]) as handlers:
        (resumed,) = handlers
        await resumed.send_event(Answer())
        second = await resumed.result()
    assert second != first
    assert _durable_log.entries[2:] == [f"enter {second}", f"exit {second}"]
