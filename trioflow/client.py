"""A client of a trioflow server, for trio and asyncio programs (httpx, through anyio).

::

    from trioflow.client import Client

    async with Client("http://127.0.0.1:8000", token=token) as client:
        run_id = await client.start("research", topic="trio")
        async for envelope in client.events(run_id):
            print(envelope.seq, envelope.type, envelope.data)
        print(await client.result(run_id))

It needs httpx: ``pip install 'trioflow[client]'``. ``import trioflow`` does not import it.
"""

try:
    import httpx as _httpx  # noqa: F401 (only to say what is missing)
except ImportError as _missing:  # pragma: no cover (the test environment has httpx)
    raise ImportError("trioflow.client needs httpx: pip install 'trioflow[client]'") from _missing

from ._client._client import Client, RunInfo
from ._client._envelope import Envelope
from ._client._errors import EventsExpiredError, ResponseError, RunError
from ._client._events import RunEvents

__all__ = [
    "Client",
    "Envelope",
    "EventsExpiredError",
    "ResponseError",
    "RunError",
    "RunEvents",
    "RunInfo",
]

# Reprs and tracebacks show the public name (trioflow.client.Client), as trioflow's own do.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
