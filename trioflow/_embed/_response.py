"""`EventStreamResponse`: a Starlette response that runs a workflow and streams its events.

The naive port, ``async with flow.start() as handler`` inside a `StreamingResponse`'s body
generator, yields from inside the run's nursery at every event, which trio does not allow:
while the generator is suspended, the nursery's cancel scope stays on the request task's
stack around Starlette's own code, and the run ends only when the generator is closed, by
Starlette's cancellation or by the garbage collector, in whatever task that happens ("Cancel
scope stack corrupted" if it is another). Here the response's own ``__call__``, which
Starlette awaits in the request's task after the endpoint returned, opens the run, so the
run's nursery is an ordinary ``async with`` around the streaming.

What a run can raise goes where it can be heard: the start fields are checked when the
response is made, in the endpoint, which can still answer 422; trio is required before
anything is sent, so that under asyncio the request fails with `NotInTrioError` and Starlette
answers 500. Once the response has started, the run's failure is the client's to see (the
stream ends with `WorkflowFailedEvent`) and the log's: its traceback is logged, as trioflow's
server logs a run's failure, and nothing is raised into Starlette, which could only log it
again and could not answer any more. A `BaseException` that is no `Exception` (a step's
``SystemExit``, a cancellation) goes on as itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._core._log import describe, failed_in, from_the_step
from .._errors import WorkflowTimeoutError, require_trio
from .._events import Event, StartEvent
from .._handler import WorkflowHandler, failure_fields
from .._server._asgi import HttpError, Request
from .._server._http2 import Drain
from .._server._streaming import NdjsonForm, SseForm, StreamForm
from .._workflow import Workflow
from ._flow import flow_control
from ._stream import stream_run

logger = logging.getLogger("trioflow.starlette")

Format = Literal["sse", "ndjson"]


class EventStreamResponse(Response):
    """A response that runs ``workflow`` and streams the run's events to its client, live.

    Return it from a Starlette or FastAPI endpoint served on trio (hypercorn's trio worker)::

        @app.get("/chat")
        async def chat(q: str) -> EventStreamResponse:
            return EventStreamResponse(flow, topic=q)

    The run starts when Starlette sends the response, after the endpoint returned, and lives
    in the response: each event is sent as it is written, in the framing of trioflow's server
    (`format`), a client that stops reading holds the run back, and a client that leaves
    cancels it. The stream ends after the run's terminal event (`StopEvent`,
    `WorkflowFailedEvent`, ...). A failed run's traceback goes to the ``trioflow.starlette``
    logger (WARNING); nothing is raised into Starlette once the response has started.

    A request that carries ``Last-Event-ID`` (an ``EventSource`` reconnecting) is answered
    204, which stops an ``EventSource``, and starts no run: the run of its earlier request
    ended with that request and cannot be resumed, and starting over would repeat it. A
    ``HEAD`` request gets the headers and starts no run either.

    Args:
        workflow: the workflow to run.
        start_event: the start event; or pass its fields as keywords (``start_fields``).
        format: ``"sse"`` (Server-Sent Events, ``text/event-stream``) or ``"ndjson"``
            (one envelope per line, ``application/x-ndjson``).
        types: stream only events of these types, and the terminal event; lifecycle events
            only if named, as `WorkflowHandler.stream_events` does. Empty: every event.
        status_code: the status of the streamed response. A keyword here (rather than only
            an attribute) because FastAPI reads its default from the signature for the
            OpenAPI description of a route with ``response_class=EventStreamResponse``.
        **start_fields: the start event's fields.

    Raises:
        TypeError: the start event or its fields do not fit the workflow (missing, unknown),
            ``types`` holds something that is no `Event` subclass, or ``workflow`` is no
            `Workflow`. A validator of the start event's raises its own exception.
        ValueError: ``format`` is neither ``"sse"`` nor ``"ndjson"``, or ``status_code`` is
            no status with a body.

    The response's other settings are attributes, to set on it or on a subclass:
    `ping_interval`, `retry_ms`, and Starlette's ``headers`` and ``background`` (run after the
    stream has ended, as FastAPI's background tasks are).
    """

    media_type = "text/event-stream"
    #: Seconds within which an idle stream notices a client that left; it carries a
    #: keep-alive (SSE ``: ping``, NDJSON a space) every half of it. The server's default.
    ping_interval: float = 15.0
    #: The reconnection delay the SSE stream suggests to browsers, in milliseconds.
    retry_ms: int = 2000

    def __init__(
        self,
        workflow: Workflow,
        start_event: StartEvent | None = None,
        /,
        *,
        format: Format = "sse",
        types: Iterable[type[Event]] = (),
        status_code: int = 200,
        **start_fields: Any,
    ) -> None:
        if not isinstance(workflow, Workflow):
            raise TypeError(f"EventStreamResponse runs a Workflow instance, got {workflow!r}")
        if format not in ("sse", "ndjson"):
            raise ValueError(f"format must be 'sse' or 'ndjson', got {format!r}")
        if not _streams(status_code):
            raise ValueError(
                f"status_code must be a status with a body (200-599), got {status_code!r}"
            )
        #: The workflow each request runs.
        self.workflow = workflow
        #: The start event of each run, made (and so checked) here.
        self.start_event = workflow._start_event(start_event, start_fields)
        self.format: Format = format
        #: The event types streamed (with the terminal event); empty for all.
        self.types = _event_types(types)
        self.status_code = status_code
        self.background = None
        if format == "ndjson":
            self.media_type = "application/x-ndjson"
        self.raw_headers = list((NdjsonForm if format == "ndjson" else SseForm).headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the workflow and stream its events to the client, until the run's terminal
        event or until the client leaves (which cancels the run).

        Raises:
            NotInTrioError: not running on trio (under asyncio, say); before anything is sent.
        """
        require_trio("trioflow.starlette.EventStreamResponse")
        request = Request.from_scope(scope, receive, send)
        if request.head or "last-event-id" in request.headers:
            await request.start_response(
                200 if request.head else 204,
                self.raw_headers if request.head else [(b"cache-control", b"no-store")],
            )
            await request.send({"type": "http.response.body", "body": b""})
        else:
            try:
                drain = flow_control(scope, receive, send)
            except HttpError as refused:
                await request.respond_error(refused)
            else:
                await self._run(request, drain)
        if self.background is not None:
            await self.background()

    async def _run(self, request: Request, drain: Drain | None) -> None:
        """Start the run, and stream it once it is under way."""
        handler: WorkflowHandler | None = None
        form: StreamForm = (
            NdjsonForm() if self.format == "ndjson" else SseForm(retry_ms=self.retry_ms)
        )
        try:
            async with self.workflow.start(self.start_event) as handler:
                await stream_run(
                    handler,
                    self.types,
                    begin=partial(request.start_response, self.status_code, self.raw_headers),
                    form=form,
                    receive=request.receive,
                    send=request.send,
                    drain=drain,
                    ping_interval=self.ping_interval,
                )
        except Exception as error:
            if not request.started:
                raise
            self._report(handler, error)

    def _report(self, handler: WorkflowHandler | None, error: Exception) -> None:
        """Log what leaving the run raised once the response had started: the run's failure
        with its traceback from the step's frame (the client got `WorkflowFailedEvent`); a
        timeout not at all (the client got `WorkflowTimedOutEvent`, the runtime logs it);
        anything else, an error of the streaming or of the server, as an error."""
        name = type(self.workflow).__name__
        if handler is not None and error is _outcome_error(handler):
            if isinstance(error, WorkflowTimeoutError):
                return
            where = failure_fields(handler)
            logger.warning(
                "run %s of %s failed%s: %s",
                handler.run_id,
                name,
                failed_in(**where),
                describe(error),
                exc_info=(type(error), error, from_the_step(error.__traceback__)),
                extra={**where, "workflow": name, "run_id": handler.run_id, "outcome": "failed"},
            )
        else:
            run = f"run {handler.run_id}" if handler is not None else "a run"
            logger.error("trioflow: error streaming %s of %s", run, name, exc_info=error)


def _outcome_error(handler: WorkflowHandler) -> BaseException | None:
    """The exception the run's outcome raises (its failure or timeout), if any."""
    try:
        handler.result_nowait()
    except BaseException as error:
        return error
    return None


def _streams(status: object) -> bool:
    """Whether a response with ``status`` may carry a body."""
    return (
        isinstance(status, int)
        and not isinstance(status, bool)
        and 200 <= status < 600
        and status not in (204, 304)
    )


def _event_types(types: Iterable[type[Event]]) -> tuple[type[Event], ...]:
    if isinstance(types, type) or not isinstance(types, Iterable):
        raise TypeError(f"types takes a tuple of Event subclasses (types=(Token,)), got {types!r}")
    found = tuple(types)
    for t in found:
        if not (isinstance(t, type) and issubclass(t, Event)):
            raise TypeError(f"types takes Event subclasses, got {t!r}")
    return found
