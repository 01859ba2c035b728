"""`Client`: a trioflow server's HTTP API as async methods, on trio or asyncio."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import anyio
import anyio.lowlevel
import attrs
import httpx

from .. import Event, RunStatus, StartEvent, __version__
from .._wire import dumps, encode_event_data, encode_value, type_name
from ._envelope import Decode, Decoder
from ._errors import EventsExpiredError, ResponseError, RunError, response_error
from ._events import RunEvents

#: Seconds a request other than an event stream may take, in each phase, when the client
#: makes its own httpx client.
TIMEOUT = 30.0
#: Seconds `Client.result` first waits between status requests when it cannot follow the
#: run's stream, doubling up to `POLL_MAX`.
POLL_FIRST = 0.05
POLL_MAX = 1.0


@attrs.frozen(kw_only=True)
class RunInfo:
    """A run as ``GET /runs/{id}`` describes it.

    Attributes:
        run_id: the run's id.
        workflow: the name of its workflow on the server.
        status: its outcome once decided, else `RunStatus.RUNNING`.
        seq: the seq of the newest event of its stream.
        started_at: when it started, in seconds since the epoch.
        result: its result as JSON once it has completed (None until then).
        error: ``{"type", "message", "step"?}`` once it has failed, timed out or been
            cancelled (None otherwise).
        json: everything the server said, fields this client does not know included.
    """

    run_id: str
    workflow: str
    status: RunStatus
    seq: int
    started_at: float
    result: Any = None
    error: dict[str, Any] | None = None
    json: dict[str, Any] = attrs.field(factory=dict, repr=False)


class Client:
    """A client of a trioflow server (``trioflow serve``), on trio or asyncio.

    Args:
        base_url: where the server's API is: ``http://127.0.0.1:8000``, or with the path
            an app is mounted at (``https://example.com/flows``); requests go below it.
        token: the server's token, sent as ``Authorization: Bearer <token>``.
        http: an `httpx.AsyncClient` to send requests with (its own settings apply, but
            requests go to ``base_url``, and event streams wait up to ``stream_timeout``
            for data); it stays open when this client closes. Without it the client makes
            its own, closed by `aclose` or at the end of ``async with``.
        stream_timeout: seconds an event stream may stay silent before the connection is
            taken for dead and opened again (the server sends a keep-alive every half
            ``ping_interval``, 7.5 s by default); None waits forever.
        reconnect_attempts: how many attempts in a row to reopen a dropped event stream may
            fail before `events` gives up and raises the last one's error.

    Every async method is a checkpoint (a cancel point), under trio and asyncio alike.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        http: httpx.AsyncClient | None = None,
        stream_timeout: float | None = 60.0,
        reconnect_attempts: int = 5,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError(
                "base_url must be an http:// or https:// URL without a query (pass the token "
                f"as token=), got {base_url!r}"
            )
        if reconnect_attempts < 1:
            raise ValueError(f"reconnect_attempts must be >= 1, got {reconnect_attempts!r}")
        self.base_url = str(url).rstrip("/")
        self._headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        self._own_http = http is None
        self._http = http if http is not None else _make_http()
        self._stream_timeout = stream_timeout
        self._reconnect_attempts = reconnect_attempts

    def __repr__(self) -> str:
        return f"<trioflow.client.Client {self.base_url}>"

    async def __aenter__(self) -> Self:
        await anyio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the httpx client this client made (not one it was given)."""
        if self._own_http:
            with anyio.CancelScope(shield=True):
                await self._http.aclose()
        await anyio.lowlevel.checkpoint()

    # -- runs --

    async def start(
        self,
        workflow: str,
        start_event: StartEvent | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> str:
        """Start a run of the workflow served as ``workflow``; return its run id.

        Pass the start event's fields as keywords (``start("research", topic="trio")``) or
        as a mapping, or a start event (``start("count", Count(n=3))``). Values go out in
        the wire format, so a datetime, bytes or an attrs value is sent as the server reads
        it back.

        Raises:
            ResponseError: 404 ``unknown_workflow``, 422 ``invalid_fields`` (the message
                names the field), 429 ``too_many_runs``, 503 ``shutting_down``, ...
        """
        if start_event is not None and fields:
            raise TypeError("pass a start event or its fields, not both")
        if isinstance(start_event, StartEvent):
            body = encode_event_data(start_event)
        elif start_event is None or isinstance(start_event, Mapping):
            body = encode_value(dict(start_event or fields))
        else:
            raise TypeError(f"pass a StartEvent or a mapping of its fields, got {start_event!r}")
        response = await self._send("POST", f"/workflows/{_quote(workflow)}/runs", body)
        run_id = _json_object(response).get("run_id") if response.status_code == 201 else None
        if not isinstance(run_id, str):
            raise _unexpected(response)
        return run_id

    def events(self, run_id: str, *, after: int = 0, decode: Decode | None = None) -> RunEvents:
        """The run's events after seq ``after``, as `Envelope`\\ s, up to its terminal event.

        The iterator reconnects by itself when the connection drops, waiting the delay the
        server asks for (``retry:``), and resumes after the last envelope it delivered: each
        is delivered once, in order. It stops after the terminal event, or when the server
        answers 204 (nothing follows ``after``).

        With ``decode`` (a workflow, or event classes) each envelope of a class it names
        carries the event itself in ``.event``, built and checked by trioflow's wire
        decoder; a workflow names the event types ``GET /workflows/{name}`` lists and the
        runtime's terminal events. Classes holding an exception (`StepFailedEvent`,
        `WorkflowFailedEvent`) are not built.

        Use it as ``async for envelope in client.events(run_id)``, or inside ``async with
        client.events(run_id) as events:`` to close the connection at once when the loop
        stops early.

        Raises (while iterating):
            EventsExpiredError: events after ``after`` (or after the last one delivered, on
                a reconnection) are no longer retained; the error names the lost seqs and
                the ``after=`` that accepts the gap.
            ResponseError: 404 ``unknown_run``, 401 ``unauthorized``, 429
                ``too_many_clients``, ...
            httpx.TransportError: the first request failed, or ``reconnect_attempts``
                reconnections in a row did.
            WireError: with ``decode``, an event's data did not fit its class.
        """
        if after < 0:
            raise ValueError(f"after must be a seq >= 0, got {after!r}")
        url = self._url(f"/runs/{_quote(run_id)}/events")
        # The client's timeouts, but a stream may wait for data as long as stream_timeout.
        base = self._http.timeout
        timeout = httpx.Timeout(
            connect=base.connect, read=self._stream_timeout, write=base.write, pool=base.pool
        )

        def request(last: int) -> httpx.Request:
            headers = {"accept": "text/event-stream", "cache-control": "no-store"}
            if last:
                headers["last-event-id"] = str(last)
            return self._http.build_request(
                "GET", url, headers=headers | self._headers, timeout=timeout
            )

        return RunEvents(
            self._http,
            request,
            run_id=run_id,
            after=after,
            decoder=Decoder(decode),
            reconnect_attempts=self._reconnect_attempts,
        )

    async def send(self, run_id: str, event: Event | Mapping[str, Any]) -> None:
        """Send an event into the run: an `Event` (a `HumanResponseEvent` answering an
        `InputRequiredEvent`, say), or ``{"type": "Approval", "data": {...}}``.

        An `Event` goes by its short class name; if the server finds that name ambiguous,
        send a mapping with the qualified name as ``type``.

        Raises:
            ResponseError: 409 ``run_ended``, 422 ``invalid_event`` or
                ``event_not_accepted``, 404 ``unknown_run``, ...
        """
        if isinstance(event, Event):
            body = {"type": type_name(type(event)), "data": encode_event_data(event)}
        elif isinstance(event, Mapping) and isinstance(event.get("type"), str):
            body = {key: encode_value(value) for key, value in event.items()}
        else:
            raise TypeError(f'send an Event or {{"type": ..., "data": {{...}}}}, got {event!r}')
        response = await self._send("POST", f"/runs/{_quote(run_id)}/events", body)
        if response.status_code != 202:
            raise _unexpected(response)

    async def cancel(self, run_id: str) -> bool:
        """Cancel the run: True if it is being cancelled (its stream will end with
        `WorkflowCancelledEvent`), False if its outcome was decided already (the server's
        409 ``run_ended``), as `WorkflowHandler.cancel` says.

        Raises:
            ResponseError: 404 ``unknown_run``, ...
        """
        try:
            response = await self._send("POST", f"/runs/{_quote(run_id)}/cancel", None)
        except ResponseError as error:
            if error.status == 409 and error.code == "run_ended":
                return False
            raise
        if response.status_code != 202:
            raise _unexpected(response)
        return True

    async def status(self, run_id: str) -> RunInfo:
        """The run's status, and its result or error once its outcome is decided.

        Raises:
            ResponseError: 404 ``unknown_run`` (never started, or forgotten), ...
        """
        response = await self._send("GET", f"/runs/{_quote(run_id)}", None)
        value = _json_object(response)
        try:
            return RunInfo(
                run_id=value["run_id"],
                workflow=value["workflow"],
                status=RunStatus(value["status"]),
                seq=value["seq"],
                started_at=value["started_at"],
                result=value.get("result"),
                error=value.get("error"),
                json=value,
            )
        except (KeyError, ValueError, TypeError):
            raise _unexpected(response) from None

    async def result(self, run_id: str) -> Any:
        """Wait for the run's end and return its result as JSON (a workflow's own
        `StopEvent` subclass: its fields).

        It follows the run's stream from its newest event (so it counts as one of the run's
        clients meanwhile, and reads only what comes after the call), then asks for the
        outcome. If the run has as many clients as it may (429 ``too_many_clients``), it
        asks for the run's status instead, every `POLL_MAX` seconds at most.

        Raises:
            RunError: the run failed, timed out or was cancelled: the server's error
                ``type``, ``message`` and ``step``.
            ResponseError: 404 ``unknown_run``, ...
        """
        poll = POLL_FIRST
        while True:
            info = await self.status(run_id)
            if info.status is RunStatus.COMPLETED:
                return info.result
            if info.status is not RunStatus.RUNNING:
                error = info.error or {}
                raise RunError(
                    run_id,
                    info.status,
                    str(error.get("type", "")),
                    str(error.get("message", "")),
                    error.get("step"),
                )
            try:
                async with self.events(run_id, after=info.seq) as events:
                    async for _ in events:
                        pass
            except EventsExpiredError:  # fell behind while catching up: look again
                continue
            except ResponseError as error:
                if error.code != "too_many_clients":
                    raise
                await anyio.sleep(poll)
                poll = min(poll * 2, POLL_MAX)

    # -- requests --

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def _send(self, method: str, path: str, body: Any) -> httpx.Response:
        """Send a request and read its answer; raise the error an error answer stands for."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        headers = {"accept": "application/json", **self._headers}
        content = None
        if body is not None:
            headers["content-type"] = "application/json"
            content = dumps(body)
        response = await self._http.request(
            method, self._url(path), content=content, headers=headers
        )
        if response.status_code >= 400:
            raise response_error(response)
        return response


def _make_http() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=TIMEOUT, headers={"user-agent": f"trioflow-client/{__version__}"}
    )


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        raise _unexpected(response) from None
    if not isinstance(value, dict):
        raise _unexpected(response)
    return value


def _unexpected(response: httpx.Response) -> ResponseError:
    text = response.text.strip()[:200]
    return ResponseError(
        response.status_code,
        "unexpected_response",
        f"unexpected answer to {response.request.method} {response.request.url}: {text!r}",
    )
