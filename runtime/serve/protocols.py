"""The HTTP protocols the server runs: uvicorn's own, with the connection guards of
``runtime.serve.guards`` (``HeadGuard``) mixed in: ``GuardedHttpToolsProtocol``, or
``GuardedH11Protocol`` where httptools is not installed; ``PROTOCOL`` names the one to run.

Each says, in its parser's terms, when the parser waits for a request head and when it is between
requests, and calls the guard's clocks as a request's head and body arrive and its answer ends.
They subclass uvicorn's classes and use their private attributes: checked once, when this module is
imported (``guards.check_uvicorn``), so another uvicorn fails at start, saying which was tested.
"""

from __future__ import annotations

from runtime.serve.guards import MAX_PIPELINED, FlowControl, HeadGuard, check_uvicorn

# What HeadGuard uses of either protocol: methods it overrides or calls, attributes it reads.
PROTOCOL_METHODS = ("connection_made", "connection_lost", "data_received", "on_response_complete", "pause_writing",
                    "resume_writing", "_unset_keepalive_if_required")
PROTOCOL_ATTRIBUTES = ("loop", "server_state", "connections", "transport", "cycle", "flow")

try:
    from uvicorn.server import ServerState
except ImportError:  # pragma: no cover - uvicorn comes with the serve extra
    pass
else:
    check_uvicorn(ServerState, attributes=("connections", "default_headers"))
    check_uvicorn(FlowControl, ("pause_reading", "resume_reading", "pause_writing", "resume_writing"),
                  ("read_paused", "write_paused"))

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as HttpToolsCycle
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = None
else:
    check_uvicorn(HttpToolsProtocol, (*PROTOCOL_METHODS, "on_headers_complete", "on_body", "on_message_complete",
                                      "_start_asgi_task"),
                  (*PROTOCOL_ATTRIBUTES, "pipeline"))
    check_uvicorn(HttpToolsCycle, attributes=("response_complete", "disconnected", "message_event"))

    class GuardedHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
        """uvicorn's httptools protocol with the connection guards."""

        _awaiting_head = True
        _running = None  # the request being answered (self.cycle is the last parsed)

        def in_head(self) -> bool:
            return self._awaiting_head

        def cycles(self) -> list:
            return [c for c in (self._running, *(c for c, _ in self.pipeline), self.cycle) if c is not None]

        def _start_asgi_task(self, cycle, app) -> None:
            self._running = cycle
            super()._start_asgi_task(cycle, app)

        def between_requests(self) -> bool:
            return self._awaiting_head

        def on_headers_complete(self) -> None:
            if self.transport.is_closing():  # the rest of a piece after the socket was closed: no new request
                return
            if len(self.pipeline) >= MAX_PIPELINED:
                return self.drop("pipelined")
            self._awaiting_head = False
            self.head_done()
            self.receiving_body()  # until on_message_complete
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.transport.is_closing():
                self.receiving_body()
                super().on_body(body)

        def on_message_complete(self) -> None:
            self.head_done()
            if not self.transport.is_closing():
                super().on_message_complete()
            self._awaiting_head = True
            self._head_bytes = 0
            if not self.response_in_progress() and not self.pipeline:
                self.await_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._awaiting_head and not self.pipeline and not self.transport.is_closing():
                self.await_head()


try:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle as H11Cycle
except ImportError:  # pragma: no cover - h11 is a dependency of uvicorn
    H11Protocol = None
else:
    check_uvicorn(H11Protocol, PROTOCOL_METHODS, (*PROTOCOL_ATTRIBUTES, "conn"))
    check_uvicorn(H11Cycle, attributes=("response_complete", "disconnected", "message_event"))

    class GuardedH11Protocol(HeadGuard, H11Protocol):
        """uvicorn's h11 protocol with the connection guards (without httptools)."""

        def in_head(self) -> bool:
            return self.conn.their_state is h11.IDLE

        def between_requests(self) -> bool:
            return self.conn.their_state is not h11.SEND_BODY

        def after_feed(self) -> None:
            self.sync_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.sync_head()

        def sync_head(self) -> None:
            if self.transport.is_closing():
                return
            if self.in_head():
                if self._head_timer is None:
                    self._head_bytes = 0
                self.await_head()
            elif self.conn.their_state is h11.SEND_BODY:
                self.head_done()
                self.receiving_body()
            else:
                self.head_done()


PROTOCOL = ("runtime.serve.protocols:GuardedHttpToolsProtocol" if HttpToolsProtocol is not None
            else "runtime.serve.protocols:GuardedH11Protocol")
