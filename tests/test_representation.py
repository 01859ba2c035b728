"""`trioflow.representation`: a workflow's graph as data, and what draws on it."""

from __future__ import annotations

import json
from typing import Annotated

import pytest

from trioflow import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    step,
)
from trioflow.representation import (
    WorkflowEventNode,
    WorkflowExternalNode,
    WorkflowGraph,
    WorkflowResourceNode,
    WorkflowStepNode,
    get_workflow_representation,
)
from trioflow.resource import Resource


class Chunk(Event):
    text: str


class Summary(Event):
    text: str


class Progress(Event):
    done: int


class Ask(InputRequiredEvent):
    question: str


class Answer(HumanResponseEvent):
    ok: bool


class Pipeline(Workflow):
    """Summarizes chunks."""

    @step
    async def split(self, ev: StartEvent) -> list[Chunk]:
        """Split the text."""
        return []

    @step
    async def summarize(self, ctx: Context, ev: Chunk) -> Summary:
        await ctx.write_event_to_stream(Progress(done=1))
        return Summary(text=ev.text)

    @step
    async def join(self, ctx: Context, summaries: list[Summary]) -> StopEvent | Ask:
        await ctx.wait_for_event(Answer)
        return StopEvent()

    @step
    async def rescue(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


def edges(graph: WorkflowGraph) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in graph.edges}


def test_nodes_and_edges_say_what_the_annotations_and_the_code_say() -> None:
    graph = get_workflow_representation(Pipeline())
    assert graph.name == "Pipeline"
    assert graph.description == "Summarizes chunks."
    assert graph.node("split") == WorkflowStepNode(
        id="split", label="split", description="Split the text."
    )
    chunk = graph.node("Chunk")
    assert isinstance(chunk, WorkflowEventNode)
    assert (chunk.kind, chunk.produced_by, chunk.event_types) == ("event", ("split",), ("Chunk",))
    assert chunk.event_schema["properties"]["text"]["type"] == "string"
    assert isinstance(graph.node("external_step"), WorkflowExternalNode)
    assert edges(graph) == {
        ("StartEvent", "split", "accepts"),
        ("split", "Chunk", "fans_out"),
        ("Chunk", "summarize", "accepts"),
        ("summarize", "Summary", "returns"),
        ("summarize", "Progress", "mentions"),
        ("Summary", "join", "collects"),
        ("Answer", "join", "mentions"),
        ("external_step", "Answer", "answers"),
        ("join", "StopEvent", "returns"),
        ("join", "Ask", "returns"),
        ("Ask", "external_step", "asks"),
        ("StepFailedEvent", "rescue", "accepts"),
        ("rescue", "StopEvent", "returns"),
        ("split", "StepFailedEvent", "fails"),
        ("summarize", "StepFailedEvent", "fails"),
        ("join", "StepFailedEvent", "fails"),
    }
    assert graph.node("Progress").produced_by == ()  # type: ignore[union-attr]  # (streamed)
    with pytest.raises(KeyError):
        graph.node("nothing")


def test_a_class_is_described_as_its_instances_are() -> None:
    assert get_workflow_representation(Pipeline) == get_workflow_representation(Pipeline())
    with pytest.raises(TypeError, match="a Workflow or its class"):
        get_workflow_representation(object())


def test_filtering_out_events_draws_the_steps_straight_to_each_other() -> None:
    steps_only = get_workflow_representation(Pipeline()).filter_by_node_type("event", "external")
    assert {n.id for n in steps_only.nodes} == {"split", "summarize", "join", "rescue"}
    assert {(e.source, e.target) for e in steps_only.edges} == {
        ("split", "summarize"),
        ("summarize", "join"),
        ("split", "rescue"),
        ("summarize", "rescue"),
        ("join", "rescue"),
        ("join", "join"),  # it asks the caller, and waits for the answer itself
    }


def test_to_dict_is_llamaindex_shaped_json() -> None:
    data = get_workflow_representation(Pipeline()).to_dict()
    json.dumps(data)  # JSON values only
    assert set(data) == {"name", "nodes", "edges", "description"}
    step_node = next(n for n in data["nodes"] if n["id"] == "split")
    assert step_node == {
        "id": "split",
        "label": "split",
        "description": "Split the text.",
        "node_type": "step",
    }
    assert {"source": "split", "target": "Chunk", "kind": "fans_out", "label": None} in data[
        "edges"
    ]


async def make_client() -> str:
    """The API client."""
    return "client"


def make_settings() -> dict[str, str]:
    return {}


async def make_db(settings: Annotated[dict[str, str], Resource(make_settings)]) -> str:
    return "db"


class Resourced(Workflow):
    @step
    async def go(
        self,
        ev: StartEvent,
        client: Annotated[str, Resource(make_client)],
        db: Annotated[str, Resource(make_db)],
    ) -> StopEvent:
        return StopEvent()


def test_resources_are_nodes_steps_use() -> None:
    graph = get_workflow_representation(Resourced)
    resources = [n for n in graph.nodes if isinstance(n, WorkflowResourceNode)]
    by_getter = {n.getter_name: n for n in resources}
    assert set(by_getter) == {"make_client", "make_db", "make_settings"}
    client = by_getter["make_client"]
    assert (client.label, client.type_name, client.description) == ("str", "str", "The API client.")
    assert client.source_file == __file__
    assert client.source_line is not None
    used = {(e.source, e.target, e.kind, e.label) for e in graph.edges if e.kind != "accepts"}
    assert ("go", client.id, "uses", "client") in used
    assert ("go", by_getter["make_db"].id, "uses", "db") in used
    assert (by_getter["make_db"].id, by_getter["make_settings"].id, "requires", "settings") in used
    json.dumps(graph.to_dict())
