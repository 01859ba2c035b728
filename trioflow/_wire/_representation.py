"""A workflow's graph as data: nodes for its steps and event types, and the edges between them.

`get_workflow_representation` builds it from the annotations (and from the event types a step's
code names beyond them: what it streams, the question it asks, the reply it awaits). It is
LlamaIndex's ``WorkflowGraph`` by shape and by name (``workflows.representation``): the same
node kinds and ids (a step by its name, an event type by its short name, ``external_step`` for
the caller), so that LlamaIndex's tools read it; trioflow adds what an edge means (``kind``) and
what an event type is to a run (``kind`` of an event node). ``trioflow draw``, ``GET
/workflows/{name}`` (its ``graph``) and llama-agents-server's ``representation`` route all draw
on it.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs

from .._events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
)
from ._encode import dumps
from ._mentions import event_kind, mentioned_event_types
from ._schema import event_schema
from ._typeinfo import event_bases, type_name

NodeType = Literal["step", "event", "external", "resource"]
#: What an edge means: an event type a step ``accepts``, one it ``returns`` (``fans_out``: in a
#: list; ``collects``: an event type a step takes as a list), one its code ``mentions`` beyond
#: its annotations, the failures a step ``fails`` with to an error handler, a question it
#: ``asks`` the caller and an answer the caller ``answers`` with; a resource a step ``uses``
#: (labelled with its parameter's name), or a resource's factory ``requires``.
EdgeKind = Literal[
    "accepts",
    "returns",
    "fans_out",
    "collects",
    "mentions",
    "fails",
    "asks",
    "answers",
    "uses",
    "requires",
]

#: The id of the node that stands for the caller (LlamaIndex's).
CALLER = "external_step"


@attrs.frozen(kw_only=True)
class WorkflowStepNode:
    """A step."""

    id: str
    label: str
    description: str | None = None
    node_type: Literal["step"] = "step"


@attrs.frozen(kw_only=True)
class WorkflowEventNode:
    """An event type: ``event_types`` is its class and the event classes it derives from, by
    short name; ``event_schema`` the JSON Schema of its fields (as the server reads them for
    what a caller sends, else as written); ``kind`` what it is to a run ("start", "stop",
    "input_required", "human_response", "step_failed" or "event")."""

    id: str
    label: str
    event_type: str
    event_types: tuple[str, ...]
    kind: str
    event_schema: dict[str, Any] = attrs.field(factory=dict, eq=False)
    produced_by: tuple[str, ...] = ()
    node_type: Literal["event"] = "event"


@attrs.frozen(kw_only=True)
class WorkflowExternalNode:
    """The caller, outside the run: it answers the questions steps ask."""

    id: str = CALLER
    label: str = CALLER
    node_type: Literal["external"] = "external"


@attrs.frozen(kw_only=True)
class WorkflowResourceNode:
    """A resource steps are given (`trioflow.resource.Resource`): ``type_name`` is what they
    say they get, ``getter_name`` the factory, and where it is defined."""

    id: str
    label: str
    type_name: str | None = None
    getter_name: str | None = None
    source_file: str | None = None
    source_line: int | None = None
    description: str | None = None
    node_type: Literal["resource"] = "resource"


WorkflowGraphNode = (
    WorkflowStepNode | WorkflowEventNode | WorkflowExternalNode | WorkflowResourceNode
)


@attrs.frozen(kw_only=True)
class WorkflowGraphEdge:
    """An arrow from node ``source`` to node ``target`` (by id), meaning ``kind``."""

    source: str
    target: str
    kind: EdgeKind
    label: str | None = None


@attrs.frozen(kw_only=True)
class WorkflowGraph:
    """A workflow's steps and event types, and the edges between them."""

    name: str
    nodes: tuple[WorkflowGraphNode, ...]
    edges: tuple[WorkflowGraphEdge, ...]
    description: str | None = None

    def node(self, node_id: str) -> WorkflowGraphNode:
        """The node whose id is ``node_id``.

        Raises:
            KeyError: there is none.
        """
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def filter_by_node_type(self, *node_types: str) -> WorkflowGraph:
        """This graph without the nodes of ``node_types`` ("event", say, for steps only), an
        edge drawn across each removed node from every node before it to every node after."""
        dropped = {node.id for node in self.nodes if node.node_type in node_types}
        edges = [e for e in self.edges if e.source not in dropped and e.target not in dropped]
        into = [e for e in self.edges if e.target in dropped and e.source not in dropped]
        for edge in into:
            for target in _reached_across(edge.target, self.edges, dropped):
                edges.append(attrs.evolve(edge, target=target))
        return attrs.evolve(
            self,
            nodes=tuple(n for n in self.nodes if n.id not in dropped),
            edges=tuple(_unique(edges)),
        )

    def to_dict(self) -> dict[str, Any]:
        """As JSON values: LlamaIndex's ``WorkflowGraph`` JSON, with trioflow's ``kind``s."""
        return {
            "name": self.name,
            "nodes": [_node_dict(node) for node in self.nodes],
            "edges": [attrs.asdict(edge) for edge in self.edges],
            "description": self.description,
        }


def get_workflow_representation(workflow: Any) -> WorkflowGraph:
    """The graph of ``workflow`` (a `Workflow`, or its class) as data."""
    from .._core._graph import graph_of  # (the wire sits below workflows)
    from .._workflow import Workflow

    cls = workflow if isinstance(workflow, type) else type(workflow)
    if not issubclass(cls, Workflow):
        raise TypeError(f"expected a Workflow or its class, got {workflow!r}")
    graph = workflow.graph if isinstance(workflow, Workflow) else graph_of(cls)
    return _Builder(cls, graph).build()


class _Builder:
    def __init__(self, cls: type, graph: Any) -> None:
        self.cls = cls
        self.graph = graph
        self.events: dict[str, WorkflowEventNode] = {}
        self.produced_by: dict[str, list[str]] = {}
        self.edges: list[WorkflowGraphEdge] = []
        self.asks = False
        self.resources: dict[str, WorkflowResourceNode] = {}

    def build(self) -> WorkflowGraph:
        cls, graph = self.cls, self.graph
        steps = [
            WorkflowStepNode(
                id=spec.name,
                label=spec.name,
                description=_own_doc(spec.function or getattr(cls, spec.name, None)),
            )
            for spec in graph.steps
        ]
        handlers = [spec for spec in graph.steps if spec.is_error_handler]
        for index, spec in enumerate(graph.steps):
            mentioned = mentioned_event_types(cls, spec)
            awaited = [t for t in mentioned if issubclass(t, HumanResponseEvent)]
            taken: EdgeKind = "collects" if spec.collect is not None else "accepts"
            for event_type in spec.accepts:
                self.edge(self.event(event_type), spec.name, taken)
                if issubclass(event_type, HumanResponseEvent):  # the caller sends it
                    self.asks = True
                    self.edge(CALLER, self.event(event_type), "answers")
            for event_type in awaited:
                self.edge(self.event(event_type), spec.name, "mentions")
                self.asks = True
                self.edge(CALLER, self.event(event_type), "answers")
            for event_type, kind in _emitted(spec, mentioned, awaited):
                name = self.event(event_type)
                self.edge(spec.name, name, kind)
                if kind != "mentions" and spec.name not in self.produced_by[name]:
                    self.produced_by[name].append(spec.name)
                if issubclass(event_type, InputRequiredEvent):
                    self.asks = True
                    self.edge(name, CALLER, "asks")
            if graph.handlers_for[index] and handlers:
                self.edge(spec.name, self.event(StepFailedEvent), "fails")
            for parameter in spec.resources:
                used = self.resource(parameter.node, parameter.annotation)
                self.edge(spec.name, used, "uses", label=parameter.name)
        events = [
            attrs.evolve(node, produced_by=tuple(self.produced_by[node.id]))
            for node in self.events.values()
        ]
        external = [WorkflowExternalNode()] if self.asks else []
        return WorkflowGraph(
            name=cls.__name__,
            nodes=(*steps, *events, *external, *self.resources.values()),
            edges=tuple(self.edges),
            description=_own_doc(cls),
        )

    def event(self, event_type: type[Event]) -> str:
        name = type_name(event_type)
        if name not in self.events:
            self.produced_by[name] = []
            self.events[name] = WorkflowEventNode(
                id=name,
                label=name,
                event_type=name,
                event_types=(name, *event_bases(event_type)),
                kind=event_kind(event_type),
                event_schema=model_schema(event_type, direction_of(event_type)),
            )
        return name

    def edge(self, source: str, target: str, kind: EdgeKind, label: str | None = None) -> None:
        edge = WorkflowGraphEdge(source=source, target=target, kind=kind, label=label)
        if edge not in self.edges:
            self.edges.append(edge)

    def resource(self, node: Any, annotation: Any) -> str:
        """The id of the node of resource ``node`` (a `ResourceNode`), made at its first use,
        with those its factory requires."""
        factory = node.resource.factory
        source_file, source_line = _source_of(factory)
        name = getattr(factory, "__qualname__", None) or repr(factory)
        digest = hashlib.sha256(f"{name}:{source_file}".encode()).hexdigest()[:12]
        node_id = f"resource_{digest}"
        if node_id not in self.resources:
            type_label = type_name(annotation) if isinstance(annotation, type) else None
            self.resources[node_id] = WorkflowResourceNode(
                id=node_id,
                label=type_label or name,
                type_name=type_label,
                getter_name=name,
                source_file=source_file,
                source_line=source_line,
                description=_own_doc(factory),
            )
            for argument, required in node.requires:
                self.edge(node_id, self.resource(required, None), "requires", label=argument)
        return node_id


def _emitted(
    spec: Any, mentioned: Iterable[type[Event]], awaited: Sequence[type[Event]]
) -> list[tuple[type[Event], EdgeKind]]:
    """What a step sends on: its return types (in a list: a fan-out), then the event types
    its code names (what it streams, the question it asks) other than the replies it awaits."""
    emitted: dict[type[Event], EdgeKind] = {}
    for event_type in spec.returns:
        listed = event_type in spec.fans_out and event_type not in spec.bare_returns
        emitted[event_type] = "fans_out" if listed else "returns"
    for event_type in mentioned:
        if event_type not in awaited:
            emitted.setdefault(event_type, "mentions")
    return list(emitted.items())


def direction_of(event_type: type[Event]) -> Literal["in", "out"]:
    """Events a caller sends are described as the server reads them, the others as written."""
    return "in" if issubclass(event_type, StartEvent | HumanResponseEvent) else "out"


def model_schema(event_type: type, direction: Literal["in", "out"]) -> dict[str, Any]:
    """The JSON Schema of an event's fields as a LlamaIndex client reads one: the object
    itself at the top (``title``, ``properties``), not a reference to it."""
    schema = event_schema(event_type, direction)
    definitions = dict(schema.get("$defs", {}))
    reference = schema.get("$ref", "")
    root = definitions.pop(reference.rpartition("/")[2], None)
    if root is None:
        return schema
    lifted = {"$schema": schema["$schema"], **root}
    if reference.encode() in dumps([root, definitions]):  # a recursive type: keep the root
        definitions[reference.rpartition("/")[2]] = root
    if definitions:
        lifted["$defs"] = definitions  # nested references still point there
    return lifted


def _own_doc(obj: object) -> str | None:
    """``obj``'s own docstring, cleaned; not one inherited from a base class."""
    doc = getattr(obj, "__doc__", None) if obj is not None else None
    if isinstance(obj, type) and "__doc__" not in vars(obj):
        doc = None
    return inspect.cleandoc(doc) if doc else None


def _source_of(obj: Any) -> tuple[str | None, int | None]:
    """Where ``obj`` (a factory) is defined, as far as `inspect` can tell."""
    try:
        return inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):  # a builtin, a class of C, code typed into a prompt
        return None, None


def _node_dict(node: WorkflowGraphNode) -> dict[str, Any]:
    data = attrs.asdict(node)
    for key in ("event_types", "produced_by"):
        if key in data:
            data[key] = list(data[key])
    return data


def _reached_across(start: str, edges: Sequence[WorkflowGraphEdge], dropped: set[str]) -> list[str]:
    """The kept nodes reached from the dropped node ``start`` through dropped nodes only."""
    found: list[str] = []
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for edge in edges:
            if edge.source != node or edge.target in seen:
                continue
            seen.add(edge.target)
            if edge.target in dropped:
                frontier.append(edge.target)
            else:
                found.append(edge.target)
    return found


def _unique(edges: Iterable[WorkflowGraphEdge]) -> list[WorkflowGraphEdge]:
    return list(dict.fromkeys(edges))
