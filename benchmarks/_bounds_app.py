"""What `benchmarks.server_bounds` serves: the benchmarks' endless emitter and the bundled
research example."""

from __future__ import annotations

from benchmarks._trioflow_serving import WORKFLOWS as SERVING
from trioflow import StartEvent, StopEvent, Workflow, step
from trioflow.examples import WORKFLOWS as EXAMPLES


class BigResult(Workflow):
    """Returns a result of 5 MB."""

    @step
    async def make(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="x" * 5_000_000)


WORKFLOWS: dict[str, Workflow] = {
    **SERVING,
    "research": EXAMPLES["research"],
    "big": BigResult(),
}
