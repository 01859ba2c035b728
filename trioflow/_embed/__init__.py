"""trioflow inside other ASGI frameworks.

`_response` is `trioflow.starlette.EventStreamResponse`, a Starlette response that owns a run;
`_stream` streams that run to its one client in the framing of trioflow's own server
(`trioflow._server._streaming`), whose headers, forms and encoded entries it reuses, through an
`_outbox` of at most one batch; `_flow` finds what to wait on over HTTP/2. Nothing here is
imported by ``import trioflow``: ``trioflow.starlette`` loads it, and Starlette with it.
"""
