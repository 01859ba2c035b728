"""The HTTP client behind `trioflow.client`: `Client` and what it hands out.

`_sse` reads Server-Sent Events (sans I/O), `_envelope` turns a stream's envelopes into
`Envelope` objects and, if asked, into event instances, `_events` follows one run's stream
across dropped connections, `_errors` holds the client's exceptions, and `_client` the
`Client` itself. It sits on top of the layers, as the server does, and talks to a server only
over HTTP (httpx, on trio or asyncio through anyio).
"""
