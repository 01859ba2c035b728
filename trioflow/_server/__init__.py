"""The HTTP server: a bare ASGI app (`_app`) served by hypercorn's trio worker (`_serve`).

It sits on the public API of the runtime (`trioflow.Workflow`, `WorkflowHandler`) and the wire
format (`trioflow._wire`). `import trioflow` does not import it: `trioflow.WorkflowApp`,
`trioflow.ServerOptions` and `trioflow.serve` load it on first use.
"""
