"""`Connections`: the server's TCP connections, accepted here and spoken to by hypercorn.

`serve` runs hypercorn's server for one connection (``hypercorn.trio.tcp_server.TCPServer``,
what ``hypercorn.trio.serve`` runs for each connection it accepts: HTTP/1.1 and HTTP/2), but
accepts and ends the connections itself, for what hypercorn's trio worker cannot do:

- **Bound them.** At most ``limit`` connections are open at once; beyond that, new ones wait
  in the kernel's listen backlog until one ends. Closing them at once instead would fail a
  burst that the server could serve a moment later, and clients would retry in a storm; waiting
  is what the server does anyway when it runs out of file descriptors, but here before it does,
  so it never fails to open a file. A client whose connection waits sees a slow connect, not
  an error, and those beyond the backlog retry as TCP does. (hypercorn bounds the rest: an
  idle connection, one whose request head is still arriving included, is closed after
  ``keep_alive_timeout``; a body that does not arrive is answered 408 by the app.)
- **End them.** hypercorn shields its socket writes from cancellation, so a client that stops
  reading holds its connection's task, and a shutdown that waits for that task, forever.
  Closing the socket wakes such a write; `close_all` does it once the shutdown's grace is over.
- **End a connection whose socket broke.** While it answers a request with another one
  pipelined behind it, hypercorn reads nothing more from the connection. When a write then
  fails because the client has gone, it tells the app, but its reading task would wait
  forever, holding the connection (and its file descriptor) open.
- **End a connection whose client has gone or idles.** A client that closed its side gets
  ``keep_alive_timeout`` more seconds for what is being answered, then the connection ends:
  over HTTP/2 a response waiting for a flow-control window that will never open would
  otherwise wait forever (hypercorn keeps waiting after the connection closed). And a
  connection with no request in progress for ``keep_alive_timeout`` ends, whatever its
  protocol: hypercorn's own idle timer never starts on an HTTP/2 connection that has not yet
  finished a stream (a client sending only its preface, or PINGs, would hold its slot).
- **Contain a connection's failure.** An error in hypercorn's handling of one connection (a
  DATA frame on an HTTP/2 stream it has already closed raises ``KeyError`` there) ends that
  connection, never the server.

These are hypercorn's insides, the same in 0.17 and 0.18 as its own worker uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

logger = logging.getLogger("trioflow.server")


class Connections:
    """The open connections of a server serving the ASGI app ``app``: at most ``limit`` at
    once. Each request's scope gets a copy of ``state``, the app's lifespan state."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        config: Config,
        limit: int,
        state: dict[str, Any],
    ) -> None:
        self._app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self._config = config
        self._state = state
        self._slots = trio.Semaphore(limit)
        self._open: set[_Connection] = set()
        self._finishing = False
        self._closed = trio.Event()  # set (and replaced) whenever a connection ends

    async def accept(
        self,
        listeners: Iterable[trio.SocketListener],
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``listeners`` and serve each in ``nursery``; report a scope
        whose cancellation stops accepting (and closes the listeners)."""
        bounded = [_Bounded(listener, self._slots) for listener in listeners]
        with trio.CancelScope() as accepting:
            task_status.started(accepting)
            await trio.serve_listeners(self._serve, bounded, handler_nursery=nursery)

    async def finish(self, deadline: float) -> None:
        """Ask every connection to finish (answer what it is answering, then close), wait for
        them until trio's clock reads ``deadline``, then close the others."""
        self._finishing = True
        for connection in list(self._open):
            await connection.finish()
        with trio.move_on_at(deadline):
            while self._open:
                await self._closed.wait()
        self.close_all()

    def close_all(self) -> None:
        """End every connection now, whatever its client does."""
        for connection in self._open:
            connection.close()

    async def _serve(self, stream: trio.SocketStream) -> None:
        connection = _Connection(stream, self._config.keep_alive_timeout)
        self._open.add(connection)
        try:
            if self._finishing:
                await connection.finish()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection.end_when_idle)
                with connection.scope:
                    # hypercorn 0.18 annotates the stream as an SSLStream; it takes any stream.
                    served: Any = connection
                    app: Any = _Counted(self._app, connection)
                    try:
                        await TCPServer(
                            app, self._config, connection.context, self._state, served
                        ).run()
                    except Exception:
                        logger.debug("trioflow: a connection failed in hypercorn", exc_info=True)
                nursery.cancel_scope.cancel()
        finally:
            self._open.discard(connection)
            stream.socket.close()  # hypercorn's own close is skipped when cancelled
            self._slots.release()
            self._closed.set()
            self._closed = trio.Event()


class _Bounded(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts a connection only when a slot is free, and hands the slot to
    the connection (which frees it when it ends)."""

    def __init__(self, listener: trio.SocketListener, slots: trio.Semaphore) -> None:
        self._listener = listener
        self._slots = slots

    async def accept(self) -> trio.SocketStream:
        await self._slots.acquire()
        try:
            return await self._listener.accept()
        except BaseException:
            self._slots.release()
            raise

    async def aclose(self) -> None:
        await self._listener.aclose()


class _Connection(trio.abc.HalfCloseableStream):
    """One connection: its socket stream, as hypercorn sees it, and how to end it.

    A write that fails because the client has gone ends the connection at once (see the
    module's docstring). So does the client closing its side, once hypercorn has answered
    what it was answering: hypercorn takes no request after that, but it would keep an idle
    connection (and its file descriptor and slot) until its keep-alive timer fires.
    """

    def __init__(self, stream: trio.SocketStream, idle_timeout: float) -> None:
        self._stream = stream
        self._idle_timeout = idle_timeout
        #: The scope hypercorn's server for this connection runs in.
        self.scope = trio.CancelScope()
        # hypercorn's state for a worker, here one per connection: its `terminated` event
        # tells the connection to finish (close once idle, take no further request).
        self.context = WorkerContext(None)
        #: Requests of this connection that the app is answering.
        self._requests = 0
        self._requests_changed = trio.Event()

    def request_began(self) -> None:
        self._requests += 1
        self._requests_changed.set()
        self._requests_changed = trio.Event()

    def request_ended(self) -> None:
        self._requests -= 1
        self._requests_changed.set()
        self._requests_changed = trio.Event()

    async def end_when_idle(self) -> None:
        """End the connection once no request has been in progress for the idle timeout."""
        while True:
            while self._requests:
                await self._requests_changed.wait()
            with trio.move_on_after(self._idle_timeout) as idle:
                while not self._requests:
                    await self._requests_changed.wait()
            if idle.cancelled_caught:
                self.close()
                return

    async def finish(self) -> None:
        """Close once what is being answered is answered; take no further request."""
        await self.context.terminated.set()

    def close(self) -> None:
        """End the connection now."""
        self.scope.cancel()
        self._stream.socket.close()  # wakes a write that cancellation cannot reach

    @property
    def socket(self) -> trio.socket.SocketType:
        """The socket (hypercorn asks it for the addresses)."""
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError:
            self.scope.cancel()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError:  # a reset: the client has gone too
            await self._client_left()
            raise
        if not data:
            await self._client_left()
        return data

    async def _client_left(self) -> None:
        """The client closed its side: take no further request, and give what is being
        answered the idle timeout to finish; then the connection ends."""
        await self.finish()
        deadline = trio.current_time() + self._idle_timeout
        self.scope.deadline = min(self.scope.deadline, deadline)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Counted:
    """hypercorn's app (``wrap_app``) for one connection, telling the connection when each of
    its HTTP requests begins and ends."""

    def __init__(self, app: Callable[..., Any], connection: _Connection) -> None:
        self._app = app
        self._connection = connection

    async def __call__(self, scope: Any, *args: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, *args)
            return
        self._connection.request_began()
        try:
            await self._app(scope, *args)
        finally:
            self._connection.request_ended()
