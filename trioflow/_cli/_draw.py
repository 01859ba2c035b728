"""A workflow's graph as a picture: Mermaid and Graphviz DOT, drawn from its JSON description.

Steps are boxes, event types rounded nodes, resources cylinders; an arrow runs from an event
type to each step that accepts it and from a step to each event type it returns. The start
event is drawn as the entry, the stop event as the exit. Human-in-the-loop events cross the
boundary to the caller, drawn as one external node. An error handler is fed by
``StepFailedEvent``, which the runtime emits for the steps it handles (dashed arrows). Event
types a step's code names beyond its annotations (what it streams, the question it asks, the
reply it awaits) and the resources a step uses get dotted arrows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

Graph = dict[str, Any]

CALLER = "caller"


def edges(graph: Graph) -> Iterator[tuple[str, str, str, str, str]]:
    """``(from_kind, from_name, to_kind, to_name, style)`` for every arrow of the graph's
    representation (its ``graph``: `trioflow.representation`); kinds are "step", "event" or
    "caller"; style is "" (annotations), "named" (an event type the step's code names: what
    it streams, or the reply it awaits) or "fails"."""
    data = graph["graph"]
    kinds = {node["id"]: node["node_type"] for node in data["nodes"]}
    styles = {"mentions": "named", "fails": "fails", "uses": "named", "requires": "named"}

    def end(node_id: str) -> tuple[str, str]:
        kind = kinds[node_id]
        return ("caller", CALLER) if kind == "external" else (kind, node_id)

    for edge in data["edges"]:
        yield (*end(edge["source"]), *end(edge["target"]), styles.get(edge["kind"], ""))


def to_mermaid(graph: Graph) -> str:
    """The graph as a Mermaid flowchart (``flowchart TD``)."""
    kinds = {event["name"]: event["kind"] for event in graph["events"]}
    lines = ["flowchart TD"]
    for event in graph["events"]:
        shape = {"start": ("([", "])"), "stop": ("([", "])"), "step_failed": ("{{", "}}")}
        left, right = shape.get(event["kind"], ("(", ")"))
        lines.append(
            f"    {_mermaid_id('event', event['name'])}{left}{_label(event['name'])}{right}"
        )
    for step in graph["steps"]:
        label = step["name"] + (" (error handler)" if step["error_handler"] else "")
        lines.append(f"    {_mermaid_id('step', step['name'])}[{_label(label)}]")
    if any(kind in ("input_required", "human_response") for kind in kinds.values()):
        lines.append(f"    {_mermaid_id('caller', CALLER)}[/{_label('caller (outside the run)')}/]")
    for node in _resources(graph):
        lines.append(f"    {_mermaid_id('resource', node['id'])}[({_label(node['label'])})]")
    arrows = {"": "-->", "named": "-.->", "fails": "-. fails .->"}
    for from_kind, from_name, to_kind, to_name, style in edges(graph):
        source, target = _mermaid_id(from_kind, from_name), _mermaid_id(to_kind, to_name)
        lines.append(f"    {source} {arrows[style]} {target}")
    for event in graph["events"]:
        if event["kind"] in ("start", "stop"):
            lines.append(f"    class {_mermaid_id('event', event['name'])} {event['kind']}")
    lines.append("    classDef start fill:#e6f4ea,stroke:#2e7d32")
    lines.append("    classDef stop fill:#fdecea,stroke:#c62828")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    """The graph in Graphviz DOT."""
    lines = [f"digraph {_dot_string(graph['name'])} {{", "    rankdir=TB;"]
    for event in graph["events"]:
        style = {"start": ', style=filled, fillcolor="#e6f4ea"',
                 "stop": ', style=filled, fillcolor="#fdecea"',
                 "step_failed": ", shape=hexagon"}.get(event["kind"], "")  # fmt: skip
        shape = "" if "shape" in style else ", shape=ellipse"
        node, label = _dot_node("event", event["name"]), _dot_string(event["name"])
        lines.append(f"    {node} [label={label}{shape}{style}];")
    for step in graph["steps"]:
        label = step["name"] + (" (error handler)" if step["error_handler"] else "")
        lines.append(
            f"    {_dot_node('step', step['name'])} [label={_dot_string(label)}, shape=box];"
        )
    kinds = {event["kind"] for event in graph["events"]}
    if kinds & {"input_required", "human_response"}:
        label = _dot_string("caller (outside the run)")
        lines.append(f"    {_dot_node('caller', CALLER)} [label={label}, shape=parallelogram];")
    for resource in _resources(graph):
        label, node = _dot_string(resource["label"]), _dot_node("resource", resource["id"])
        lines.append(f"    {node} [label={label}, shape=cylinder];")
    styles = {"": "", "named": " [style=dotted]", "fails": ' [style=dashed, label="fails"]'}
    for from_kind, from_name, to_kind, to_name, style in edges(graph):
        source, target = _dot_node(from_kind, from_name), _dot_node(to_kind, to_name)
        lines.append(f"    {source} -> {target}{styles[style]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _resources(graph: Graph) -> list[dict[str, Any]]:
    """The resource nodes of the graph's representation (the factories steps are given)."""
    return [n for n in graph["graph"]["nodes"] if n["node_type"] == "resource"]


def _mermaid_id(kind: str, name: str) -> str:
    # A prefix per kind keeps ids apart (a step and an event may share a name) and away from
    # Mermaid's keywords (`end`, `graph`, `style`, ...), which break a chart when used as ids.
    return f"{kind}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"


def _label(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def _dot_node(kind: str, name: str) -> str:
    return _dot_string(f"{kind}:{name}")


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
