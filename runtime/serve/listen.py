"""Where the workers accept connections: on Linux, a listening socket of their own each.

uvicorn's workers share one listening socket, and whichever wakes first accepts a burst of waiting
connections: 32 keep-alive clients split 2/30 between two workers in one run of five, and the
worker with 30 sets the tail (p99 23-29 ms against 15-17 ms). With ``SO_REUSEPORT`` each worker
listens on a socket of its own on the same address, and the kernel hands each new connection to
one of them by the hash of its addresses and ports: an even split on average, never a burst.

The parent binds the address (so the port is taken, and a port of 0 is chosen once) with
``SO_REUSEPORT`` and never listens on it: the kernel only hands connections to listening sockets.
Each worker, as it unpickles the parent's socket, opens its own on the same address
(``WorkerSocket.__reduce__``) and uvicorn listens on that one when the worker is ready. Only
processes of the same user can join such a group. Elsewhere (macOS and the BSDs do not spread
connections, Windows has no ``SO_REUSEPORT``) the workers share the parent's socket as before.
"""

from __future__ import annotations

import socket
import sys

SPREADS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bound_socket(host: str, port: int, cls: type[socket.socket] = socket.socket,
                 reuse_port: bool = SPREADS) -> socket.socket:
    """A TCP socket bound to (host, port), not listening (uvicorn listens when its worker is ready)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = cls(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class WorkerSocket(socket.socket):
    """The parent's socket, bound and never listening: a worker that receives it gets its own."""

    def __reduce__(self):
        host, port = self.getsockname()[:2]
        return bound_socket, (host, port)


def workers_socket(host: str, port: int) -> socket.socket:
    """The socket to hand uvicorn's workers: a ``WorkerSocket`` where the kernel spreads connections
    over sockets sharing a port, else one socket they all accept on. OSError (EADDRINUSE) when
    another program, or another server of ours, has the port: first bound without SO_REUSEPORT,
    which no socket on the port lets through, so a second server fails as it would without it."""
    if not SPREADS:
        return bound_socket(host, port)
    with bound_socket(host, port, reuse_port=False) as probe:
        port = probe.getsockname()[1]  # a port of 0 is chosen here
    return bound_socket(host, port, WorkerSocket)
