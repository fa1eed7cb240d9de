"""The server under the second red team's attacks, on real ``python -m runtime.serve`` processes:
clients that never read their answers, pipelined requests piling up behind an unread answer, and
slow bodies holding the slots of requests in progress. And, in this process, the pieces that
answer them: the request slot's accounting and the connection guards with either HTTP parser.

Traffic goes to 127.0.0.1 only; every loop is bounded by a count or a deadline.
"""

import asyncio
import re
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
import uvicorn  # noqa: E402

from runtime.serve import guards, protocols  # noqa: E402
from runtime.serve.middleware import ConcurrencyLimit  # noqa: E402

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU\x00\x00\x00"
       b"\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")  # 1x1 gray


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def refused(url: str) -> dict[str, float]:
    """fashion_edge_refused_connections_total by reason."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {reason: float(n) for reason, n in re.findall(r'refused_connections_total\{reason="(\w+)"\} (\S+)', text)}


def classify(url: str) -> int:
    """A real request on a fresh connection: its status (0 when the connection was refused or reset)."""
    try:
        return httpx.post(f"{url}/v1/classify", content=PNG, headers={"Content-Type": "image/png"},
                          timeout=10).status_code
    except httpx.TransportError:
        return 0


def healthz(url: str) -> int:
    try:
        return httpx.get(f"{url}/healthz", timeout=10).status_code
    except httpx.TransportError:
        return 0


def non_reader(port: int) -> socket.socket:
    """A connection that will never read what it is sent (a small receive buffer fills soon)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def pump(sockets: list[socket.socket], chunk: bytes, seconds: float, pause: float = 0.05) -> int:
    """Send ``chunk`` on every socket, again and again, for ``seconds``, as far as each takes it."""
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in sockets:
            try:
                sent += s.send(chunk)
            except OSError:  # full (the server reads no more of it), or closed by the server
                pass
        time.sleep(pause)
    return sent


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


# --- 1. clients that never read their answers --------------------------------------------------------

def test_clients_that_never_read_their_answers_do_not_lock_the_api_out(start_server):
    """60 sockets pipeline GET /openapi.json (public, 15 KB) and never read. Their answers' writes
    stall once the kernel's buffers are full: they must hold no request slot (8 here), be evictable
    at the socket cap (40 here), and be closed by the write timeout."""
    url, _ = start_server("--max-concurrent", "8", "--max-connections", "40", "--write-timeout", "2")
    attackers = [non_reader(port_of(url)) for _ in range(60)]
    try:
        pump(attackers, b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 20, seconds=2)
        statuses = []
        for _ in range(6):  # on fresh connections, while the attackers' answers wait
            statuses += [classify(url), healthz(url)]
            time.sleep(0.3)
        assert statuses == [200] * len(statuses), statuses
        deadline, counts = time.monotonic() + 15, {}
        while time.monotonic() < deadline and not counts.get("write_timeout"):
            time.sleep(0.5)
            counts = refused(url)
        assert counts.get("write_timeout", 0) >= 1 and counts.get("evicted", 0) >= 1, counts
    finally:
        for s in attackers:
            s.close()
    assert classify(url) == 200


def test_a_large_answer_that_is_not_read_holds_no_request_slot(start_server):
    """16 sockets ask for the /docs page's script (1.5 MB, sent in pieces) again and again and never
    read: once the kernel's buffers are full, each answer's next piece waits for the client (up to
    the write timeout, 30 s here). The work was done when the answer started, so the 4 request
    slots stay free for others."""
    url, _ = start_server("--max-concurrent", "4", "--write-timeout", "30")
    script = next(part for part in httpx.get(f"{url}/docs").text.split('"') if part.endswith(".js"))
    readers = [non_reader(port_of(url)) for _ in range(16)]
    try:  # asking again and again, so that no slot is left once answers hold them
        pump(readers, b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % script.encode() * 2, seconds=2.5, pause=0.1)
        statuses = [classify(url) for _ in range(6)]
        assert statuses == [200] * 6, statuses
    finally:
        for s in readers:
            s.close()


# --- 2. pipelined requests behind an unread answer ---------------------------------------------------

def test_pipelined_requests_do_not_pile_up_in_memory(start_server):
    """40 sockets send 256 KB of pipelined GETs and never read: half at once, half in 4 KB pieces
    (under the cap of what may wait unparsed). Without a bound every request was parsed and queued
    (about 2 KB each: a worker grew by 10 MB a socket, and kept it after they closed)."""
    url, process = start_server("--write-timeout", "3")
    port = port_of(url)
    before = rss_mb(process.pid)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    blob = request * (256 * 1024 // len(request))
    blasters, tricklers = [non_reader(port) for _ in range(20)], [non_reader(port) for _ in range(20)]
    try:
        sent = pump(blasters, blob, seconds=0.5)
        sent += pump(tricklers, request * (4096 // len(request)), seconds=4)
        during = rss_mb(process.pid)
        statuses = [healthz(url), classify(url)]
    finally:
        for s in blasters + tricklers:
            s.close()
    time.sleep(1)
    after = rss_mb(process.pid)
    assert sent > 2_000_000  # the attack was sent (the server took it into its kernel buffers, at least)
    assert during - before < 60 and after - before < 60, (before, during, after)
    assert statuses == [200, 200]


# --- 3. slow bodies ----------------------------------------------------------------------------------

def test_slow_bodies_do_not_hold_request_slots(start_server):
    """12 uploads trickle a byte every 0.5 s (more than the 4 slots): real requests keep being answered,
    since a request takes its slot only once its body is here."""
    url, _ = start_server("--max-concurrent", "4", "--body-timeout", "30")
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n\x89P")
    tricklers = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=5) for _ in range(12)]
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.5):
            for s in tricklers:
                try:
                    s.send(b"x")
                except OSError:
                    pass

    for s in tricklers:
        s.sendall(head)
    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        statuses = [classify(url) for _ in range(10)]
        assert statuses == [200] * 10, statuses
        assert healthz(url) == 200
    finally:
        stop.set()
        thread.join(5)
        for s in tricklers:
            s.close()


# --- in this process: the request slot and the guards ------------------------------------------------

def test_a_request_holds_its_slot_from_its_complete_body_to_its_answer():
    """limit 1: a body still arriving holds no slot; the slot is free again as soon as an answer
    starts, though the client has not taken it yet (/stall: its write waits)."""
    stalled, finish = asyncio.Event(), asyncio.Event()

    async def app(scope, receive, send):
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/stall":
            stalled.set()
            await finish.wait()  # as a write stalled by a client that does not read
        await send({"type": "http.response.body", "body": b"ok"})

    def scope(path):
        return {"type": "http", "path": path, "method": "POST", "headers": [(b"content-length", b"4")]}

    async def whole():
        return {"type": "http.request", "body": b"abcd", "more_body": False}

    async def scenario():
        limited = ConcurrencyLimit(app, limit=1)
        answers, parts = [], asyncio.Queue()

        async def send(message):
            if message["type"] == "http.response.start":
                answers.append(message["status"])

        trickling = asyncio.create_task(limited(scope("/slow-body"), parts.get, send))
        await parts.put({"type": "http.request", "body": b"a", "more_body": True})
        await asyncio.sleep(0.05)
        active = [limited.active]  # the body is still arriving
        stalling = asyncio.create_task(limited(scope("/stall"), whole, send))
        await stalled.wait()
        active.append(limited.active)  # its answer is being written
        await limited(scope("/other"), whole, send)  # gets the slot
        await parts.put({"type": "http.request", "body": b"bcd", "more_body": False})
        await trickling  # its body complete: it takes the slot, answers, gives it back
        finish.set()
        await stalling
        return active + [limited.active], answers

    active, answers = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert active == [0, 0, 0] and answers == [200, 200, 200]


def test_a_complete_body_beyond_the_limit_gets_503():
    release = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        limited = ConcurrencyLimit(app, limit=1)
        scope = {"type": "http", "path": "/v1/classify", "method": "POST", "headers": [(b"content-length", b"1")]}

        async def whole():
            return {"type": "http.request", "body": b"x", "more_body": False}

        answers = []

        async def send(message):
            answers.append(message)

        held = asyncio.create_task(limited(scope, whole, send))
        await asyncio.sleep(0.05)
        await limited(scope, whole, send)  # the slot is held by the first, working
        release.set()
        await held
        return answers, limited.active

    answers, active = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [m["status"] for m in answers if m["type"] == "http.response.start"] == [503, 200] and active == 0
    assert dict(answers[0]["headers"])[b"retry-after"] == b"1"


PROTOCOLS = [pytest.param(protocols.GuardedHttpToolsProtocol, id="httptools"),
             pytest.param(protocols.GuardedH11Protocol, id="h11")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_guards_hold_pipelined_requests_and_time_out_unread_answers(protocol, monkeypatch):
    """With either parser: pipelined requests are answered in order, one parsed at a time; a client
    that stops reading a large answer is closed after the write timeout, and its request ends."""
    limits = guards.ConnectionLimits(header_timeout=5, max_header_bytes=4096, max_connections=100, write_timeout=0.5)
    monkeypatch.setattr(guards, "connection_limits", lambda: limits)
    parsed, ended = [], []

    async def app(scope, receive, send):
        parsed.append(scope["path"])
        size = 4_000_000 if scope["path"] == "/big" else 2
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % size)]})
        for _ in range(size // 100_000 or 1):
            await send({"type": "http.response.body", "body": b"x" * min(size, 100_000), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        ended.append(scope["path"])

    async def scenario():
        config = uvicorn.Config(app, host="127.0.0.1", port=0, http=protocol, ws="none", lifespan="off",
                                log_config=None, log_level="error")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(40)))
        pipelined = b""
        while pipelined.count(b"HTTP/1.1 200") < 40:
            pipelined += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        sock.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        started = time.monotonic()
        while "/big" not in ended and time.monotonic() - started < 5:
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        sock.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        return pipelined, seconds

    pipelined, seconds = asyncio.run(scenario())
    assert parsed[:40] == [f"/{i}" for i in range(40)] and pipelined.count(b"HTTP/1.1 200") == 40
    assert "/big" in ended and 0.4 < seconds < 3, seconds
