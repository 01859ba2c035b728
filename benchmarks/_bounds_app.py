"""What `benchmarks.server_bounds` serves: the benchmarks' endless emitter and the bundled
research example."""

from __future__ import annotations

from benchmarks._trioflow_serving import WORKFLOWS as SERVING
from trioflow import Workflow
from trioflow.examples import WORKFLOWS as EXAMPLES

WORKFLOWS: dict[str, Workflow] = {**SERVING, "research": EXAMPLES["research"]}
