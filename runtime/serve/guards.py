"""The connection guards: what the server bounds beyond uvicorn's defaults before a request reaches
the app (the request guards, ASGI middleware, are in ``runtime.serve.middleware``).

``HeadGuard``, mixed into uvicorn's HTTP protocols (``runtime.serve.protocols``):

- a request's head (request line and headers) must arrive within ``header_timeout`` of the
  connection opening or of the previous response; else the socket is closed (with a 408 when
  part of a head had arrived). uvicorn's own keep-alive timer only starts after a response,
  so a socket that never sent a byte was held for ever.
- a head may be at most ``max_header_bytes``, counted as the bytes arrive and before the parser
  sees them; beyond it 431 and the socket is closed (httptools builds a header that arrives in
  many pieces by concatenation: quadratic in its size).
- an answer's bytes must be taken by the client: writing may stay paused (the socket's buffer
  above its high-water mark: the client is not reading) at most ``write_timeout``; then the socket
  is closed, whatever of the answer is left dropped. Without it a client that never reads held
  its answer, and the request behind it, for ever.
- while an answer is being sent, or the client is not reading, nothing more is read from the socket:
  what the client sent ahead waits unparsed (at most HELD_BYTES; the socket is closed beyond) and
  the parser stops at the end of a request head, so pipelined requests do not pile up (a request
  with a body may bring at most MAX_PIPELINED more, parsed with its body's last bytes; closed beyond).
- at most ``max_connections`` open sockets per worker; at the limit the least recently active
  socket that owes the server something (a request head, the rest of a body, or a read of its
  answer) is closed to make room, so neither idle, trickling nor non-reading sockets can lock
  clients out.

The protocols use private attributes of uvicorn's, as uvicorn ``TESTED_UVICORN`` has them
(pyproject's serve extra allows that minor series only): checked once, when they are imported
(``check_uvicorn``), so another uvicorn fails at start, saying so, rather than on a request.
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
        raise ImportError(f"runtime.serve.protocols was tested with uvicorn {TESTED_UVICORN}.x and uses "
                          f"{cls.__module__}.{cls.__qualname__}'s {', '.join(missing)}, which uvicorn {version} "
                          f"does not have: install uvicorn {TESTED_UVICORN}.x, as the serve extra pins it")


# --- connections: a uvicorn HTTP protocol -----------------------------------------------------------

@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float  # seconds
    max_header_bytes: int
    max_connections: int  # per worker
    write_timeout: float = ServeConfig.write_timeout  # seconds an answer may wait for the client to read


@functools.cache
def connection_limits() -> ConnectionLimits:
    """This worker's limits: ServeConfig's, from the environment variable every worker reads."""
    values = json.loads(os.environ.get(CONFIG_ENV, "{}"))
    default = ServeConfig()
    return ConnectionLimits(**{name: values.get(name, getattr(default, name)) for name in
                               ("header_timeout", "max_header_bytes", "max_connections", "write_timeout")})


LINGER_SECONDS = 1.0  # after a 408 or 431, what the client still sends is discarded this long, then closed
HELD_BYTES = 64 * 1024  # sent ahead while an answer is pending, kept unparsed; the socket is closed beyond
MAX_PIPELINED = 16  # requests parsed ahead of the one being answered (only with a body's last bytes)
# Per server (one per worker process): the connections that owe the server something (a request
# head, the rest of a request's body, or a read of their answer), least recently active first: at
# the socket cap the first is closed, so neither idle, trickling nor non-reading sockets lock clients out.
_WAITING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _status(code: int, phrase: str, message: str, default_headers) -> bytes:
    lines = [f"HTTP/1.1 {code} {phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(message), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + message.encode()


class HeadGuard:
    """Mixed in before a uvicorn HTTP protocol class: the head timeout, the head size cap, the write
    timeout, holding what is sent ahead, and the socket cap described in the module docstring.
    Subclasses say when the parser waits for a head (``in_head``) and when it is between requests."""

    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _in_body = False
    _held = b""  # read from the socket, not yet fed to the parser
    _discarding = False
    limits: ConnectionLimits

    def in_head(self) -> bool:  # pragma: no cover - each protocol says
        raise NotImplementedError

    def between_requests(self) -> bool:  # pragma: no cover - each protocol says
        """The last request fed to the parser is complete (what comes next belongs to another)."""
        raise NotImplementedError

    def cycles(self) -> list:
        """The requests of this connection being answered or waiting their turn."""
        return [self.cycle] if self.cycle is not None else []

    def disconnect_cycles(self) -> None:
        """Tell every request of this connection that its client is gone: its app's next send is
        dropped, not written to a closed transport (uvicorn tells only the last parsed)."""
        for cycle in self.cycles():
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    def response_in_progress(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def holding(self) -> bool:
        """Feed the parser nothing now: the client is not reading, or a request is being answered
        and what comes next is another request (pipelined)."""
        return self.flow.write_paused or (self.response_in_progress() and self.between_requests())

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.flow = HeldFlow(transport, self)
        self.limits = connection_limits()
        waiting = _WAITING.setdefault(self.server_state, {})
        if len(self.connections) > self.limits.max_connections:
            if waiting:  # make room: close the socket that has owed us something longest
                next(iter(waiting)).drop("evicted")
            else:  # every socket is busy with a request: this one cannot be served now
                self.drop("connection_limit")
                return
        self.await_head()

    def connection_lost(self, exc) -> None:
        self.head_done()
        self.stop_write_clock()
        self.leave_waiting()
        self._held = b""
        self.disconnect_cycles()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The socket's buffer is over its high-water mark: the client is not reading. The clock runs."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self.write_timed_out)
            self.mark_waiting()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.stop_write_clock()
        self.unmark_waiting()
        self.loop.call_soon(self.release_held)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._held:  # what the client sent ahead is fed to the parser once this answer is out
            self.loop.call_soon(self.release_held)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._held:  # what came before waits its turn: this goes after it
            return self.hold(data)
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Feeds the parser at most what may still belong to the head, so a head over the cap is
        refused having cost no more than the cap (a body is fed in pieces of the cap's size too), and
        a head no further than its end: what follows waits while the request is answered."""
        limit = self.limits.max_header_bytes
        start, size = 0, len(data)
        while start < size and not self.transport.is_closing():
            if self.holding():
                return self.hold(data[start:])
            in_head = self.in_head()
            room = limit - self._head_bytes if in_head else limit
            if room <= 0:
                return self.head_too_large()
            end = start + room
            if in_head and (head_end := data.find(b"\r\n\r\n", start, end)) >= 0:
                end = head_end + 4
            part = data if (start == 0 and end >= size) else memoryview(data)[start:end]
            start += len(part)
            if in_head:
                self._head_bytes += len(part)
            super().data_received(part)
            self.after_feed()
            if self._head_bytes >= limit and self.in_head() and not self.transport.is_closing():
                return self.head_too_large()

    def hold(self, data: bytes) -> None:
        """Keep ``data`` unparsed and stop reading until the answer is out and taken (``release_held``)."""
        if len(self._held) + len(data) > HELD_BYTES:
            return self.drop("pipelined")
        self._held = self._held + bytes(data)
        self.flow.pause_reading()
        self._unset_keepalive_if_required()  # the client did send: uvicorn's idle timer must not close it

    def release_held(self) -> None:
        if self.transport.is_closing() or self.holding():
            return
        held, self._held = self._held, b""
        if held:
            self.feed(held)
        if not self._held:
            self.flow.resume_reading()

    def head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self.refuse(431, "Request Header Fields Too Large", f"request line and headers over {limit:,} bytes",
                    "header_too_large")

    def after_feed(self) -> None:
        """Called after each piece of data went to the parser."""

    # the clocks and the waiting list
    def await_head(self) -> None:
        """The parser waits for a request head and no response is being sent: start the clock."""
        if self._head_timer is not None or self.transport.is_closing():
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self.head_timed_out)
        self.mark_waiting()

    def receiving_body(self) -> None:
        """A body's bytes arrived (or are due): this socket is now the most recently active."""
        self._in_body = True
        self.mark_waiting()

    def head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._in_body = False
        self.unmark_waiting()

    def mark_waiting(self) -> None:
        """This socket owes the server something, and is now the most recently active that does."""
        waiting = _WAITING.setdefault(self.server_state, {})
        waiting.pop(self, None)
        waiting[self] = None

    def unmark_waiting(self) -> None:
        """Off the waiting list unless it still owes a head, a body or a read."""
        if not (self._head_timer is not None or self._in_body or self._write_timer is not None):
            self.leave_waiting()

    def leave_waiting(self) -> None:
        waiting = _WAITING.get(self.server_state)
        if waiting:
            waiting.pop(self, None)

    def stop_write_clock(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.response_in_progress():
            return
        if self._held:  # its head came, and waits for the client to read: the write clock decides
            return self.await_head()
        if self._head_bytes:
            self.refuse(408, "Request Timeout",
                        f"request headers not received within {self.limits.header_timeout:g} s", "header_timeout")
        else:
            self.drop("header_timeout")

    def write_timed_out(self) -> None:
        """The client took none of its answer for ``write_timeout``: close, dropping what is left of it
        (uvicorn then tells the app the client is gone, which frees the request)."""
        self._write_timer = None
        self.drop("write_timeout")

    def drop(self, reason: str) -> None:
        """Close this connection without an answer; it stops counting against the socket cap now.
        Whatever is still to be written is dropped (a plain close would wait for the client to read it)."""
        self.forget(reason)
        self.disconnect_cycles()
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        elif not self.transport.is_closing():
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
        self._held = b""
        self.forget(reason)
        FlowControl.resume_reading(self.flow)  # to read what is discarded, even if the guard held the socket
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def forget(self, reason: str) -> None:
        self.head_done()
        self.stop_write_clock()
        self.leave_waiting()
        self.connections.discard(self)
        metrics.REFUSED.labels(reason).inc()


try:
    from uvicorn.protocols.http.flow_control import FlowControl
except ImportError:  # pragma: no cover - uvicorn comes with the serve extra
    FlowControl = object


class HeldFlow(FlowControl):
    """uvicorn's flow control, except that reading is not resumed while the guard holds the socket
    (uvicorn resumes it after each answer, and whenever the app waits for the request's body)."""

    def __init__(self, transport, guard: HeadGuard):
        super().__init__(transport)
        self.guard = guard

    def resume_reading(self) -> None:
        if not (self.guard._held or self.guard.holding()):
            super().resume_reading()
