"""The request guards: ASGI middleware, added by ``runtime.serve.app.add_middleware``.

- ``ConcurrencyLimit``: at most N requests in progress per worker (from a complete body to the
  start of the answer), 503 beyond; /healthz is always answered.
- ``HostGuard``: the Host header must name this server (DNS rebinding); 400 otherwise.
  ``allowed_hosts_for`` says which names a server bound to an address answers to.
- ``CrossSiteGuard``: a POST (or any unsafe method) from another site's page is refused with
  403, since an HTML form posts cross-site without a CORS preflight.

The connections, before a request reaches these, are guarded by ``runtime.serve.guards``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

from runtime.serve.errors import Busy

# --- Host and Origin --------------------------------------------------------------------------------

WILDCARD_BINDS = {"0.0.0.0", "::", ""}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._~!$&'()*+,;=%-]+))(?::(?P<port>\d{1,5}))?")
_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_~-]+(\.[a-z0-9_~-]+)*|[0-9a-f:.]+")


def normalise_host(host: str) -> str:
    """A host name or IP literal as the guards compare it: lower case, no trailing dot, IPv6 compressed
    and without brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def check_host_pattern(pattern: str) -> str:
    """An --allowed-host value (a name, an IP, ``*.domain`` or ``*``), normalised; ValueError if malformed."""
    host = normalise_host(pattern)
    if not _PATTERN.fullmatch(host):
        raise ValueError(f"{pattern!r} is not a host name, an IP address, '*.domain' or '*' (no scheme, no port)")
    return host


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    return host == "localhost" or (is_ip(host) and ipaddress.ip_address(host).is_loopback)


def allowed_hosts_for(bind: str, extra: Iterable[str] = ()) -> tuple[tuple[str, ...], bool]:
    """The Host header values a server bound to ``bind`` answers to: (names and IPs, any IP literal too?).

    Loopback: the bound address, localhost, 127.0.0.1 and ::1. Every interface (0.0.0.0, ::): any IP
    literal (a DNS-rebinding page can only reach us through a name), localhost and this machine's
    host name (and NAME.local, mDNS). Another address or name: itself and the machine's name.
    ``extra`` (--allowed-host) is added; ``*`` among them turns the check off."""
    host = normalise_host(bind)
    names = [check_host_pattern(h) for h in extra]
    any_ip = host in WILDCARD_BINDS
    if not any_ip:
        names.append(host)
    if is_loopback(host):
        names += LOOPBACK_HOSTS
    else:
        machine = socket.gethostname().lower()
        names += ["localhost", machine, f"{machine}.local"] if any_ip else [machine, f"{machine}.local"]
    return tuple(dict.fromkeys(names)), any_ip


def parse_host_header(value: str | None) -> tuple[str, int | None] | None:
    """``Host: name[:port]`` or ``[ipv6][:port]`` -> (normalised host, port), or None when malformed."""
    match = _HOST.fullmatch(value or "")
    if match is None:
        return None
    if match["ipv6"] is not None and not is_ip(match["ipv6"]):
        return None
    port = int(match["port"]) if match["port"] else None
    return normalise_host(match["ipv6"] or match["name"]), port


def header(scope, name: bytes) -> str | None:
    """The first value of a request header (names in an ASGI scope are lower case), as latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class HostGuard:
    """400 for a request whose Host header names another server: a DNS-rebinding page reaches a local
    server under the attacker's own name, which this refuses. ``*`` in ``hosts`` allows any."""

    def __init__(self, app, hosts: Iterable[str], any_ip: bool = False):
        self.app = app
        self.hosts = {normalise_host(h) for h in hosts}
        self.suffixes = tuple(h[1:] for h in self.hosts if h.startswith("*."))
        self.any_ip = any_ip
        self.allow_any = "*" in self.hosts

    def allows(self, value: str | None) -> bool:
        parsed = parse_host_header(value)
        if parsed is None:
            return False
        host = parsed[0]
        return host in self.hosts or host.endswith(self.suffixes) or (self.any_ip and is_ip(host))

    async def __call__(self, scope, receive, send):
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        hosts = [value for key, value in scope["headers"] if key == b"host"]
        if len(hosts) == 1 and self.allows(hosts[0].decode("latin-1")):
            return await self.app(scope, receive, send)
        detail = "unknown Host header: this server answers to its own addresses (see --allowed-host)"
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of_request(scope) -> tuple[str, int] | None:
    """(host, port) this request was addressed to, from its Host header and scheme."""
    parsed = parse_host_header(header(scope, b"host"))
    if parsed is None:
        return None
    host, port = parsed
    return host, port or DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)


def host_and_port(origin: str) -> tuple[str, int] | None:
    """(host, port) of an Origin header (``scheme://host[:port]``), None for ``null`` or a malformed one."""
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return normalise_host(parts.hostname), port


class CrossSiteGuard:
    """403 for an unsafe request (POST, …) sent by another site's page.

    A page on any site can make the browser POST a form to this server, with no CORS preflight
    to stop it; without --token that is all /v1 needs. Browsers say where a request comes from:
    ``Origin`` on every cross-origin POST, and ``Sec-Fetch-Site``. Allowed: no Origin (curl,
    scripts, the tests), this server's own origin (the web page), a --cors-origin. Refused: any
    other Origin (``null`` too), or ``Sec-Fetch-Site: cross-site``. Safe methods pass: the browser
    does not let the other site read the answer (no CORS)."""

    def __init__(self, app, allowed_origins: Iterable[str] = ()):
        self.app = app
        origins = set(allowed_origins)
        self.allow_any = "*" in origins
        self.allowed = {o.lower().rstrip("/") for o in origins}

    def allows(self, scope) -> bool:
        origin = header(scope, b"origin")
        if origin is None:
            return header(scope, b"sec-fetch-site") != "cross-site"
        if self.allow_any or origin.lower().rstrip("/") in self.allowed:
            return True
        own = origin_of_request(scope)
        return own is not None and host_and_port(origin) == own

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or self.allows(scope):
            return await self.app(scope, receive, send)
        detail = ("cross-site request refused: this server takes POSTs from its own page, from clients "
                  "that are not browsers, and from origins given with --cors-origin")
        await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)


# --- requests in progress ---------------------------------------------------------------------------

class SlotsFull(Busy):
    """Raised from ``receive`` when a request's body has arrived and every slot is taken."""


class ConcurrencyLimit:
    """At most ``limit`` requests in progress in this worker; beyond it 503 with ``Retry-After``.

    Counts the work (what costs memory and CPU), not sockets: a request takes its slot once its
    body has arrived (a request without a body at once), and gives it back when its answer starts.
    So neither a slow upload (bounded by its own limits: the body timeout, the bodies' byte budget)
    nor a client that does not read its answer (the connection guards' write timeout) holds a slot.
    A body that arrives when every slot is taken gets the 503 (``SlotsFull``, a ``Busy`` the app or
    this middleware answers). ``exempt`` paths (the liveness probe) are always answered."""

    def __init__(self, app, limit: int, exempt: Iterable[str] = ("/healthz",)):
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)
        self.active = 0
        self.detail = f"the server is busy ({limit} requests in progress); retry in a moment"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        held = False  # this request's slot
        started = False

        def take() -> None:
            nonlocal held
            if self.active >= self.limit:
                raise SlotsFull(self.detail)
            self.active += 1
            held = True

        async def receive_body():
            message = await receive()
            if not held and message["type"] == "http.request" and not message.get("more_body", False):
                take()  # the whole body is here: the work may begin
            return message

        async def send_answer(message):
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                if held:  # the work is done: what is left is writing, bounded by the write timeout
                    held = False
                    self.active -= 1
            await send(message)

        try:
            if has_body(scope):
                await self.app(scope, receive_body, send_answer)
            else:
                take()
                await self.app(scope, receive, send_answer)
        except SlotsFull:
            if started:
                raise
            response = JSONResponse({"detail": self.detail}, status_code=503, headers={"Retry-After": "1"})
            await response(scope, receive, send)
        finally:
            if held:
                self.active -= 1


def has_body(scope) -> bool:
    """Whether the request comes with a body (a Content-Length other than 0, or a Transfer-Encoding)."""
    for key, value in scope["headers"]:
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip(b"0 ")):
            return True
    return False
