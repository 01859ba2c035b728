"""The runtime core: what happens inside one run.

Layers, lowest first: the graph of a workflow class (`_graph`); the pieces a run is made of, the
bounded stream (`_stream`), the step inboxes (`_inbox`), collected events (`_collect`); the run's
state, whose outcome is decided exactly once (`_state`); the router, the only place events move
(`_router`); what a step sees (`_context`, `_sync`); the step workers (`_worker`); and the run's
task that ties them together in a cancel scope around a nursery (`_run`). `_blocking` and
`_tracing` watch runs from the side. Nothing here imports the wire format, the HTTP server or
the CLI.
"""
