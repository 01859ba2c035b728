"""A workflow's graph as data: ``get_workflow_representation(workflow)`` (LlamaIndex's
``workflows.representation``), what ``trioflow draw`` and ``GET /workflows/{name}`` draw on."""

from ._wire._representation import (
    EdgeKind,
    NodeType,
    WorkflowEventNode,
    WorkflowExternalNode,
    WorkflowGraph,
    WorkflowGraphEdge,
    WorkflowGraphNode,
    WorkflowResourceNode,
    WorkflowStepNode,
    get_workflow_representation,
)

__all__ = [
    "EdgeKind",
    "NodeType",
    "WorkflowEventNode",
    "WorkflowExternalNode",
    "WorkflowGraph",
    "WorkflowGraphEdge",
    "WorkflowGraphNode",
    "WorkflowResourceNode",
    "WorkflowStepNode",
    "get_workflow_representation",
]

# Shown as this module's (in help() and reprs), not the private one's.
for _public in (
    WorkflowEventNode,
    WorkflowExternalNode,
    WorkflowGraph,
    WorkflowGraphEdge,
    WorkflowResourceNode,
    WorkflowStepNode,
    get_workflow_representation,
):
    _public.__module__ = __name__
