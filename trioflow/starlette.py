"""trioflow in Starlette and FastAPI apps: `EventStreamResponse` runs a workflow and streams
its events to the client, live.

::

    from trioflow.starlette import EventStreamResponse

    @app.get("/chat")
    async def chat(q: str) -> EventStreamResponse:
        return EventStreamResponse(flow, topic=q)   # format="ndjson", types=(Token,) optional

Serve the app on trio: ``hypercorn --worker-class trio app:app``. It needs Starlette:
``pip install 'trioflow[starlette]'``. ``import trioflow`` does not import it.
"""

try:
    import starlette as _starlette  # noqa: F401 (only to say what is missing)
except ImportError as _missing:  # pragma: no cover (the test environment has Starlette)
    raise ImportError(
        "trioflow.starlette needs Starlette: pip install 'trioflow[starlette]'"
    ) from _missing

from ._embed._response import EventStreamResponse

__all__ = ["EventStreamResponse"]

# Reprs and tracebacks show the public name, as trioflow's own do.
EventStreamResponse.__module__ = __name__
