"""The connection guards: what the server bounds beyond uvicorn's defaults before a request reaches
the app (the request guards, ASGI middleware, are in ``runtime.serve.middleware``).

A uvicorn HTTP protocol, ``GuardedHttpToolsProtocol``, or ``GuardedH11Protocol`` where httptools is
not installed:

- a request's head (request line and headers) must arrive within ``header_timeout`` of the
  connection opening or of the previous response; else the socket is closed (with a 408 when
  part of a head had arrived). uvicorn's own keep-alive timer only starts after a response,
  so a socket that never sent a byte was held for ever.
- a head may be at most ``max_header_bytes``, counted as the bytes arrive and before the parser
  sees them; beyond it 431 and the socket is closed (httptools builds a header that arrives in
  many pieces by concatenation: quadratic in its size).
- at most ``max_connections`` open sockets per worker; at the limit the least recently active
  socket that owes the server bytes (a request head, or the rest of a body) is closed to make
  room, so neither idle nor trickling sockets can lock clients out.

These subclass uvicorn's protocol classes and use their private attributes, as uvicorn
``TESTED_UVICORN`` has them (pyproject's serve extra allows that minor series only): checked once,
when this module is imported (``check_uvicorn``), so another uvicorn fails at start, saying so,
rather than on a request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.serve import metrics
from runtime.serve.config import CONFIG_ENV, ServeConfig

TESTED_UVICORN = "0.55"  # the minor series these subclasses were written for and tested with


def check_uvicorn(cls: type, methods: Iterable[str] = (), attributes: Iterable[str] = ()) -> None:
    """ImportError naming the tested uvicorn unless ``cls`` (a uvicorn class) has what this module uses
    of it: ``methods`` (looked up on the class) and ``attributes`` (set by its ``__init__``: looked up
    among the names its code stores)."""
    code = getattr(cls.__init__, "__code__", None)
    names = set(code.co_names) if code is not None else set()
    missing = [f"{name}()" for name in methods if not callable(getattr(cls, name, None))]
    missing += [f".{name}" for name in attributes if name not in names]
    if missing:
        try:
            from uvicorn import __version__ as version
        except ImportError:  # pragma: no cover - the classes come from uvicorn
            version = "?"
        raise ImportError(f"runtime.serve.guards was tested with uvicorn {TESTED_UVICORN}.x and uses "
                          f"{cls.__module__}.{cls.__qualname__}'s {', '.join(missing)}, which uvicorn {version} "
                          f"does not have: install uvicorn {TESTED_UVICORN}.x, as the serve extra pins it")


# --- connections: a uvicorn HTTP protocol -----------------------------------------------------------

@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float  # seconds
    max_header_bytes: int
    max_connections: int  # per worker


@functools.cache
def connection_limits() -> ConnectionLimits:
    """This worker's limits: ServeConfig's, from the environment variable every worker reads."""
    values = json.loads(os.environ.get(CONFIG_ENV, "{}"))
    default = ServeConfig()
    return ConnectionLimits(**{name: values.get(name, getattr(default, name)) for name in
                               ("header_timeout", "max_header_bytes", "max_connections")})


LINGER_SECONDS = 1.0  # after a 408 or 431, what the client still sends is discarded this long, then closed
# Per server (one per worker process): the connections that owe the server bytes (waiting for a
# request head, or in the middle of a request's body), least recently active first: at the socket
# cap the first is closed, so neither idle nor trickling sockets can lock clients out.
_WAITING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _status(code: int, phrase: str, message: str, default_headers) -> bytes:
    lines = [f"HTTP/1.1 {code} {phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(message), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + message.encode()


class HeadGuard:
    """Mixed in before a uvicorn HTTP protocol class: the head timeout, the head size cap and the
    socket cap described in the module docstring. Subclasses say when the parser waits for a head
    (``in_head``)."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _discarding = False
    limits: ConnectionLimits

    def in_head(self) -> bool:  # pragma: no cover - each protocol says
        raise NotImplementedError

    def response_in_progress(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.limits = connection_limits()
        waiting = _WAITING.setdefault(self.server_state, {})
        if len(self.connections) > self.limits.max_connections:
            if waiting:  # make room: close the socket that has owed us bytes longest
                next(iter(waiting)).drop("evicted")
            else:  # every socket is busy with a request: this one cannot be served now
                self.drop("connection_limit")
                return
        self.await_head()

    def connection_lost(self, exc) -> None:
        self.head_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feeds the parser at most what may still belong to the head, so a head over the cap is
        refused having cost no more than the cap (a body is fed in pieces of the cap's size too)."""
        if self._discarding:
            return
        limit = self.limits.max_header_bytes
        view = memoryview(data) if len(data) > limit else data
        start = 0
        while start < len(data) and not self.transport.is_closing():
            in_head = self.in_head()
            room = limit - self._head_bytes if in_head else limit
            if room <= 0:
                return self.head_too_large()
            part = view[start:start + room] if (start or room < len(data)) else data
            start += len(part)
            if in_head:
                self._head_bytes += len(part)
            super().data_received(part)
            self.after_feed()
            if self._head_bytes >= limit and self.in_head() and not self.transport.is_closing():
                return self.head_too_large()

    def head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self.refuse(431, "Request Header Fields Too Large", f"request line and headers over {limit:,} bytes",
                    "header_too_large")

    def after_feed(self) -> None:
        """Called after each piece of data went to the parser."""

    # the head's timer and the waiting list
    def await_head(self) -> None:
        """The parser waits for a request head and no response is being sent: start the clock."""
        if self._head_timer is not None or self.transport.is_closing():
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self.head_timed_out)
        _WAITING.setdefault(self.server_state, {})[self] = None

    def receiving_body(self) -> None:
        """A body's bytes arrived (or are due): this socket is now the most recently active."""
        waiting = _WAITING.setdefault(self.server_state, {})
        waiting.pop(self, None)
        waiting[self] = None

    def head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        waiting = _WAITING.get(self.server_state)
        if waiting:
            waiting.pop(self, None)

    def head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.response_in_progress():
            return
        if self._head_bytes:
            self.refuse(408, "Request Timeout",
                        f"request headers not received within {self.limits.header_timeout:g} s", "header_timeout")
        else:
            self.drop("header_timeout")

    def drop(self, reason: str) -> None:
        """Close this connection without an answer; it stops counting against the socket cap now."""
        self.forget(reason)
        if not self.transport.is_closing():
            self.transport.close()

    def refuse(self, status: int, phrase: str, message: str, reason: str) -> None:
        """Answer ``status`` and close. Unless a response is being written on this connection (then it
        is only closed): the answer is followed by a half-close, and what the client still sends is
        read and discarded for LINGER_SECONDS, so its kernel does not reset the connection (losing
        the answer) while it is still sending."""
        if self.response_in_progress() or self.transport.is_closing():
            return self.drop(reason)
        self.transport.write(_status(status, phrase, message, self.server_state.default_headers))
        if not self.transport.can_write_eof():  # TLS
            return self.drop(reason)
        self.transport.write_eof()
        self._discarding = True
        self.forget(reason)
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def forget(self, reason: str) -> None:
        self.head_done()
        self.connections.discard(self)
        metrics.REFUSED.labels(reason).inc()


# What HeadGuard uses of either protocol: methods it overrides or calls, attributes it reads.
PROTOCOL_METHODS = ("connection_made", "connection_lost", "data_received", "on_response_complete")
PROTOCOL_ATTRIBUTES = ("loop", "server_state", "connections", "transport", "cycle")

try:
    from uvicorn.server import ServerState
except ImportError:  # pragma: no cover - uvicorn comes with the serve extra
    pass
else:
    check_uvicorn(ServerState, attributes=("connections", "default_headers"))

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as HttpToolsCycle
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = None
else:
    check_uvicorn(HttpToolsProtocol, (*PROTOCOL_METHODS, "on_headers_complete", "on_body", "on_message_complete"),
                  (*PROTOCOL_ATTRIBUTES, "pipeline"))
    check_uvicorn(HttpToolsCycle, attributes=("response_complete",))

    class GuardedHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
        """uvicorn's httptools protocol with the head timeout, head size cap and socket cap."""

        _awaiting_head = True

        def in_head(self) -> bool:
            return self._awaiting_head

        def on_headers_complete(self) -> None:
            self._awaiting_head = False
            self.head_done()
            self.receiving_body()  # until on_message_complete
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self.receiving_body()
            super().on_body(body)

        def on_message_complete(self) -> None:
            self.head_done()
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
    check_uvicorn(H11Cycle, attributes=("response_complete",))

    class GuardedH11Protocol(HeadGuard, H11Protocol):
        """uvicorn's h11 protocol with the head timeout, head size cap and socket cap (without httptools)."""

        def in_head(self) -> bool:
            return self.conn.their_state is h11.IDLE

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


PROTOCOL = ("runtime.serve.guards:GuardedHttpToolsProtocol" if HttpToolsProtocol is not None
            else "runtime.serve.guards:GuardedH11Protocol")
