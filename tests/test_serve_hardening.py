"""The server under abuse: idle and slow sockets, oversized headers, foreign Host headers,
cross-site form posts, the bearer token's file and checks, metrics with one and two workers.

Three layers: the guards alone (an ASGI app or uvicorn's server in this process, no model),
the app in a TestClient, and real ``python -m runtime.serve`` processes. Traffic goes to
127.0.0.1 only; every loop is bounded by a count or a deadline.
"""

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from runtime.serve import ServeConfig, create_app, guards, protocols  # noqa: E402
from runtime.serve.__main__ import parse_args  # noqa: E402
from runtime.serve.config import TokenError, check_token, read_token_file  # noqa: E402
from runtime.serve.middleware import ConcurrencyLimit, HostGuard, allowed_hosts_for  # noqa: E402

IDLE_SOCKETS = int(os.environ.get("HARDENING_IDLE_SOCKETS", "300"))  # more than the test server's socket cap
HEADER_TIMEOUT = 2.0  # the real test server's --header-timeout
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU\x00\x00\x00"
       b"\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")  # 1x1 gray


# --- the bearer token --------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["s3cret", "0123456789abcdef0123456789abcdef", "with inner space", "a/b+c=~"])
def test_usable_tokens_are_accepted(token):
    assert check_token(token, "--token") == token


@pytest.mark.parametrize("token, complaint", [("", "empty"), (" s3cret", "whitespace"), ("s3cret ", "whitespace"),
                                              ("s3cret\n", "whitespace"), ("tök3n", "non-ASCII"),
                                              ("s3c\tret", "control"), ("s3c\x00ret", "control")])
def test_tokens_that_could_never_match_are_refused(token, complaint):
    with pytest.raises(TokenError, match=complaint):
        check_token(token, "--token")


def test_token_file_allows_one_trailing_newline(tmp_path):
    path = tmp_path / "token"
    for content, expected in [(b"s3cret", "s3cret"), (b"s3cret\n", "s3cret")]:
        path.write_bytes(content)
        assert read_token_file(path) == expected
    for content, complaint in [(b"s3cret\n\n", "whitespace"), (b" s3cret\n", "whitespace"),
                               (b"s3cret\r\n", "whitespace"), (b"t\xc3\xb6k3n\n", "not ASCII"), (b"\n", "empty")]:
        path.write_bytes(content)
        with pytest.raises(TokenError, match=complaint):
            read_token_file(path)
    with pytest.raises(TokenError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_cli_takes_the_token_from_a_file_or_the_environment_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASHION_EDGE_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    assert parse_args(["--token-file", str(path)]).token == "s3cret"
    assert parse_args([]).token is None
    monkeypatch.setenv("FASHION_EDGE_TOKEN", "from-env")
    assert parse_args([]).token == "from-env"
    assert parse_args(["--token-file", str(path)]).token == "s3cret"  # the flag wins
    for argv, env, complaint in [(["--token", " s3cret"], None, "--token starts or ends with whitespace"),
                                 ([], "s3cret\n", "$FASHION_EDGE_TOKEN starts or ends with whitespace"),
                                 (["--token-file", str(tmp_path / "missing")], None, "cannot read the token file"),
                                 (["--token", "a", "--token-file", str(path)], None, "not allowed with")]:
        if env is not None:
            monkeypatch.setenv("FASHION_EDGE_TOKEN", env)
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        assert exit_.value.code == 2 and complaint in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "every local user can read it" in " ".join(capsys.readouterr().out.split())


def test_a_bad_token_file_stops_the_server_before_it_starts(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret \n")
    run = subprocess.run([sys.executable, "-m", "runtime.serve", "--token-file", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "whitespace" in run.stderr and "serving" not in run.stdout


# --- Host and Origin ---------------------------------------------------------------------------------

def test_allowed_hosts_follow_the_bound_address():
    hosts, any_ip = allowed_hosts_for("127.0.0.1")
    assert set(hosts) == {"127.0.0.1", "localhost", "::1"} and not any_ip
    hosts, any_ip = allowed_hosts_for("0.0.0.0", ["shop.example", "*.lan"])
    machine = socket.gethostname().lower()
    assert any_ip and {"shop.example", "*.lan", "localhost", machine, f"{machine}.local"} == set(hosts)
    hosts, any_ip = allowed_hosts_for("192.168.1.20")
    assert not any_ip and "192.168.1.20" in hosts and "localhost" not in hosts
    with pytest.raises(ValueError):
        allowed_hosts_for("127.0.0.1", ["http://shop.example:8000"])
    assert parse_args(["--host", "0.0.0.0", "--allowed-host", "Shop.Example."]).allowed_hosts[0] == "shop.example"


def host_app(hosts, any_ip=False):
    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return HostGuard(ok, hosts, any_ip)


@pytest.mark.parametrize("bind, host, allowed", [
    ("127.0.0.1", "127.0.0.1:8000", True), ("127.0.0.1", "localhost:8000", True), ("127.0.0.1", "[::1]:8000", True),
    ("127.0.0.1", "LOCALHOST.", True), ("127.0.0.1", "attacker.example:8000", False),
    ("127.0.0.1", "127.0.0.1.attacker.example", False), ("127.0.0.1", "192.168.1.20:8000", False),
    ("127.0.0.1", "", False), ("127.0.0.1", "127.0.0.1:8000, evil", False), ("127.0.0.1", "[::1", False),
    ("0.0.0.0", "192.168.1.20:8000", True), ("0.0.0.0", "[fe80::1]:8000", True), ("0.0.0.0", "shop.lan", True),
    ("0.0.0.0", "rebind.attacker.example:8000", False),
])
def test_host_guard(bind, host, allowed):
    hosts, any_ip = allowed_hosts_for(bind, ["shop.lan"] if bind == "0.0.0.0" else [])
    client = TestClient(host_app(hosts, any_ip))  # no lifespan: a bare ASGI app
    assert client.get("/", headers={"Host": host}).status_code == (200 if allowed else 400)


def test_host_guard_wildcards_and_duplicates():
    client = TestClient(host_app(["*.shop.example"]))
    assert client.get("/", headers={"Host": "till-1.shop.example"}).status_code == 200
    assert client.get("/", headers={"Host": "shop.example.attacker.example"}).status_code == 400
    assert TestClient(host_app(["*"])).get("/", headers={"Host": "anything.example"}).status_code == 200


@pytest.fixture(scope="module")
def guarded_client():
    """The whole app as the CLI configures a loopback server, with one CORS origin."""
    hosts, any_ip = allowed_hosts_for("127.0.0.1")
    config = ServeConfig(allowed_hosts=hosts, allow_ip_hosts=any_ip, cors_origins=("https://shop.example",))
    with TestClient(create_app(config), base_url="http://127.0.0.1:8000") as client:
        yield client


def test_foreign_host_gets_400_before_anything_else(guarded_client):
    assert guarded_client.get("/healthz").status_code == 200
    for path in ("/healthz", "/v1/model", "/"):
        response = guarded_client.get(path, headers={"Host": "rebind.attacker.example:8000"})
        assert response.status_code == 400 and "Host" in response.json()["detail"]
    response = guarded_client.post("/v1/classify", content=PNG, headers={"Host": "attacker.example",
                                                                        "Content-Type": "image/png"})
    assert response.status_code == 400


def test_cross_site_posts_are_refused_and_the_own_page_is_not(guarded_client):
    def post(**headers):
        return guarded_client.post("/v1/classify", content=PNG, headers={"Content-Type": "image/png", **headers})

    assert post().status_code == 200  # curl, scripts: no Origin
    assert post(Origin="http://127.0.0.1:8000", **{"Sec-Fetch-Site": "same-origin"}).status_code == 200  # the page
    assert post(Origin="https://shop.example").status_code == 200  # --cors-origin
    for origin in ("https://attacker.example", "null", "http://127.0.0.1:3000", "http://localhost:8000"):
        response = post(Origin=origin)
        assert response.status_code == 403 and "cross-site" in response.json()["detail"], origin
    assert post(**{"Sec-Fetch-Site": "cross-site"}).status_code == 403  # no Origin, but the browser says
    form = guarded_client.post("/v1/classify", files={"image": ("a.png", PNG, "image/png")},
                               headers={"Origin": "https://attacker.example"})
    assert form.status_code == 403  # an HTML form: multipart, no preflight
    batch = guarded_client.post("/v1/classify/batch", files={"image": ("a.png", PNG, "image/png")},
                                headers={"Origin": "https://attacker.example"})
    assert batch.status_code == 403
    # reading stays as it was: the browser keeps the answer from the other site (no CORS header)
    read = guarded_client.get("/v1/model", headers={"Origin": "https://attacker.example"})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


# --- requests in progress ----------------------------------------------------------------------------

def test_concurrency_limit_counts_requests_and_always_answers_healthz():
    release = asyncio.Event()

    async def slow(scope, receive, send):
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def scenario():
        limited = ConcurrencyLimit(slow, limit=2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t") as client:
            held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
            for _ in range(100):  # until both are in progress
                if limited.active == 2:
                    break
                await asyncio.sleep(0.01)
            busy = await client.get("/other")
            health = await client.get("/healthz")
            release.set()
            done = await asyncio.gather(*held)
            after = await client.get("/other")
        return busy, health, done, after, limited.active

    busy, health, done, after, active = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
    assert health.status_code == 200
    assert [r.status_code for r in done] == [200, 200] and after.status_code == 200 and active == 0


# --- the connection protocol, in this process on uvicorn's own server -------------------------------

def test_the_guards_check_uvicorns_classes_once_and_name_the_tested_version():
    """Another uvicorn, whose protocol classes lack what the guards use, stops the server at start
    (the import of runtime.serve.protocols) saying which uvicorn they were tested with; the serve extra
    allows that minor series only, and it is the one installed."""
    class Changed:  # a protocol of another uvicorn: no on_body(), its __init__ sets no .pipeline
        def __init__(self):
            self.cycle = None

        def on_headers_complete(self):
            pass

    guards.check_uvicorn(Changed, ["on_headers_complete"], ["cycle"])  # what it has: fine
    with pytest.raises(ImportError, match=r"tested with uvicorn 0\.55\.x .*on_body\(\), \.pipeline"):
        guards.check_uvicorn(Changed, ["on_headers_complete", "on_body"], ["cycle", "pipeline"])
    major, minor = guards.TESTED_UVICORN.split(".")
    pin = f'"uvicorn[standard]>={major}.{minor},<{major}.{int(minor) + 1}"'
    assert pin in (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert uvicorn.__version__.startswith(guards.TESTED_UVICORN + ".")


PROTOCOLS = [pytest.param(protocols.GuardedHttpToolsProtocol, id="httptools"),
             pytest.param(protocols.GuardedH11Protocol, id="h11")]


async def echo_length(scope, receive, send):
    """Answers with the body's length; /block waits for the test's event."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/block":
        await scope["state"]["release"].wait()
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Served:
    def __init__(self, protocol, monkeypatch, **limits):
        self.limits = guards.ConnectionLimits(**{"header_timeout": 0.4, "max_header_bytes": 4096,
                                                 "max_connections": 100, **limits})
        monkeypatch.setattr(guards, "connection_limits", lambda: self.limits)
        self.protocol = protocol

    async def __aenter__(self):
        self.release = asyncio.Event()

        async def app(scope, receive, send):
            scope["state"] = {"release": self.release}
            await echo_length(scope, receive, send)

        config = uvicorn.Config(app, host="127.0.0.1", port=0, http=self.protocol, ws="none", lifespan="off",
                                log_config=None, log_level="error",
                                h11_max_incomplete_event_size=self.limits.max_header_bytes)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(500):
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.release.set()
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)

    async def connect(self):
        return await asyncio.open_connection("127.0.0.1", self.port)


async def response_of(reader, timeout=3.0) -> bytes:
    """One response's head and body (content-length), or what came before the connection closed."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    return head + (await asyncio.wait_for(reader.readexactly(int(length.group(1))), timeout) if length else b"")


async def closed_at(reader, timeout=3.0) -> float:
    """time.monotonic() when the server closed the connection (what it sends is read and dropped)."""
    while await asyncio.wait_for(reader.read(65536), timeout):
        pass
    return time.monotonic()


def request(path="/", method="GET", body=b"", extra=b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n".encode()
            + extra + b"\r\n" + body)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_idle_and_slow_heads_time_out_and_keep_alive_rearms(protocol, monkeypatch):
    async def scenario():
        async with Served(protocol, monkeypatch) as served:
            connected = time.monotonic()
            idle_r, _ = await served.connect()
            slow_r, slow_w = await served.connect()
            slow_w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
            used_r, used_w = await served.connect()
            used_w.write(request(body=b"abc"))
            answer = await response_of(used_r)
            answered = time.monotonic()
            idle, slow, used = await asyncio.gather(closed_at(idle_r), response_of(slow_r), closed_at(used_r))
            return answer, idle - connected, slow, used - answered

    answer, idle, slow, used = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n3")
    assert 0.3 < idle < 1.5  # closed by the header timeout (0.4 s), not held for ever
    assert slow.startswith(b"HTTP/1.1 408")  # part of a head had come: told why
    assert used < 1.5  # after a response the clock starts again


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_heads_over_the_cap_get_431_and_bodies_do_not_count(protocol, monkeypatch):
    async def scenario():
        async with Served(protocol, monkeypatch, max_header_bytes=4096, header_timeout=3) as served:
            results = {}
            reader, writer = await served.connect()
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1 << 20))  # a megabyte
            results["huge"] = await response_of(reader)
            reader, writer = await served.connect()
            writer.write(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # a long URL
            results["url"] = await response_of(reader)
            reader, writer = await served.connect()  # a trickle: many small lines, one at a time

            async def trickle():
                writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                for i in range(200):  # 200 x 40 bytes would be 8 KB: refused after about 100
                    writer.write(b"X-Line-%03d: %s\r\n" % (i, b"b" * 27))
                    await asyncio.sleep(0.002)

            started = time.monotonic()
            sending = asyncio.create_task(trickle())
            results["trickle"] = await response_of(reader)
            results["trickle_s"] = time.monotonic() - started
            sending.cancel()
            # under the cap: headers just below it, a large body, two pipelined requests, keep-alive
            reader, writer = await served.connect()
            body = os.urandom(300_000)
            writer.write(request("/", "POST", body, b"X-Pad: " + b"p" * 3800 + b"\r\n"))
            results["body"] = await response_of(reader)
            writer.write(request("/", "POST", b"12345") + request("/", "POST", b"1234567"))
            results["pipelined"] = [await response_of(reader), await response_of(reader)]
            return results

    results = asyncio.run(scenario())
    for case in ("huge", "url", "trickle"):
        assert results[case].startswith(b"HTTP/1.1 431"), case
    assert results["trickle_s"] < 2
    assert results["body"].startswith(b"HTTP/1.1 200") and results["body"].endswith(b"\r\n\r\n300000")
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in results["pipelined"]] == [b"5", b"7"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_socket_cap_closes_the_longest_idle_rather_than_refusing_clients(protocol, monkeypatch):
    async def scenario():
        async with Served(protocol, monkeypatch, max_connections=4, header_timeout=5) as served:
            idle = [await served.connect() for _ in range(4)]
            await asyncio.sleep(0.05)
            reader, writer = await served.connect()  # the fifth: the first idle one makes room
            writer.write(request(body=b"x"))
            answer = await response_of(reader)
            first_closed = await closed_at(idle[0][0], timeout=1) - time.monotonic()
            writer.close()
            # every socket busy with a request: a new one is closed at once, the busy ones carry on
            busy = [await served.connect() for _ in range(4)]
            for _, w in busy:
                w.write(request("/block"))
            await asyncio.sleep(0.1)
            extra_r, _ = await served.connect()
            extra_closed = await closed_at(extra_r, timeout=1) - time.monotonic()
            served.release.set()
            finished = [await response_of(r) for r, _ in busy]
            return answer, first_closed, extra_closed, finished

    answer, first_closed, extra_closed, finished = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200") and first_closed < 1 and extra_closed < 1
    assert all(r.startswith(b"HTTP/1.1 200") for r in finished)


# --- real servers ------------------------------------------------------------------------------------

def worker_pids(parent: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    pids = [int(p) for task in Path(f"/proc/{parent}/task").iterdir() for p in (task / "children").read_text().split()]
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.fixture(scope="module")
def one_worker(start_server):
    url, _ = start_server("--header-timeout", str(HEADER_TIMEOUT), "--max-connections", "100",
                          "--max-header-bytes", "16384")
    return url, int(url.rsplit(":", 1)[1])


def healthz_seconds(url: str) -> float:
    """A fresh connection's /healthz, timed (it must answer 200)."""
    started = time.monotonic()
    response = httpx.get(f"{url}/healthz", timeout=5)
    assert response.status_code == 200
    return time.monotonic() - started


def open_idle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        sockets.append(s)
    return sockets


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def wait_all_closed(sockets: list[socket.socket], seconds: float) -> float:
    started = time.monotonic()
    pending = list(sockets)
    while pending and time.monotonic() - started < seconds:
        pending = [s for s in pending if not closed(s)]
        time.sleep(0.05)
    assert not pending, f"{len(pending)} of {len(sockets)} idle sockets still open after {seconds} s"
    return time.monotonic() - started


def test_idle_sockets_are_closed_after_the_header_timeout(one_worker):
    url, port = one_worker
    idle = open_idle(port, 20)  # below the socket cap: only the timer closes them
    try:
        time.sleep(HEADER_TIMEOUT / 2)
        assert not any(closed(s) for s in idle)
        assert healthz_seconds(url) < 0.5
        assert wait_all_closed(idle, HEADER_TIMEOUT + 2) < HEADER_TIMEOUT / 2 + 2
    finally:
        for s in idle:
            s.close()


def test_idle_sockets_do_not_lock_clients_out(one_worker):
    url, port = one_worker
    idle = open_idle(port, IDLE_SOCKETS)  # more than --max-connections 100
    try:
        times = [healthz_seconds(url) for _ in range(5)]
        assert max(times) < 0.5, times
        with httpx.Client() as client:  # and the real work too, on one kept-alive connection
            for _ in range(3):
                answer = client.post(f"{url}/v1/classify", content=PNG, headers={"Content-Type": "image/png"})
                assert answer.status_code == 200
        wait_all_closed(idle, HEADER_TIMEOUT + 3)
    finally:
        for s in idle:
            s.close()


class Abuser:
    """A connection that sends ``chunks`` from one thread (until the server closes it) and reads
    the answer in another, noting when it came."""

    def __init__(self, port: int, chunks, pause: float = 0.0):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.started = time.monotonic()
        self.answer, self.seconds = b"", None
        self.threads = [threading.Thread(target=self.send, args=(chunks, pause), daemon=True),
                        threading.Thread(target=self.receive, daemon=True)]
        for thread in self.threads:
            thread.start()

    def send(self, chunks, pause):
        try:
            for chunk in chunks:
                self.socket.sendall(chunk)
                time.sleep(pause)
        except OSError:  # the server refused and closed: what the test wants
            pass

    def receive(self):
        try:
            self.answer = self.socket.recv(4096)
        except OSError as e:
            self.answer = repr(e).encode()
        self.seconds = time.monotonic() - self.started

    def finish(self) -> tuple[bytes, float]:
        for thread in self.threads:
            thread.join(6)
        self.socket.close()
        return self.answer, self.seconds


def test_oversized_and_trickled_headers_get_431_while_healthz_stays_fast(one_worker):
    url, port = one_worker
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    huge = [head + b"X-Big: ", *[b"a" * 65536] * 16, b"\r\n\r\n"]  # a 1 MB header
    trickle = [head, *[b"X-Line-%03d: %s\r\n" % (i, b"b" * 500) for i in range(200)]]  # 100 KB, 500 B at a time
    for chunks, pause in ((huge, 0.0), (trickle, 0.005)):
        abuser = Abuser(port, chunks, pause)
        times = [healthz_seconds(url) for _ in range(3)]
        answer, seconds = abuser.finish()
        assert answer.startswith(b"HTTP/1.1 431") and seconds < 2, (answer[:40], seconds)
        assert max(times) < 0.5, times


def test_the_real_server_checks_host_and_origin(one_worker):
    url, port = one_worker
    assert httpx.get(f"{url}/healthz", headers={"Host": "rebind.attacker.example"}).status_code == 400
    assert httpx.get(f"{url}/healthz", headers={"Host": f"localhost:{port}"}).status_code == 200
    form = {"image": ("a.png", PNG, "image/png")}
    assert httpx.post(f"{url}/v1/classify", files=form, headers={"Origin": "https://attacker.example"}).status_code \
        == 403
    assert httpx.post(f"{url}/v1/classify", files=form, headers={"Origin": url}).status_code == 200


def requests_counted(text: str, route: str, status: str = "200") -> float:
    found = re.findall(rf'fashion_edge_requests_total{{route="{re.escape(route)}",status="{status}"}} (\S+)', text)
    return sum(map(float, found))


def test_metrics_with_one_worker(one_worker):
    url, _ = one_worker
    before = requests_counted(httpx.get(f"{url}/metrics").text, "/healthz")
    for _ in range(5):
        healthz_seconds(url)
    text = httpx.get(f"{url}/metrics").text
    assert requests_counted(text, "/healthz") == before + 5
    assert "fashion_edge_request_duration_seconds_bucket" in text and "fashion_edge_model_info{" in text


def test_two_workers_read_the_token_file_and_sum_their_metrics(start_server, tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-from-a-file\n")
    path.chmod(0o600)
    url, process = start_server("--workers", "2", "--token-file", str(path),
                                ready=lambda p: len(worker_pids(p.pid)) == 2)
    assert httpx.get(f"{url}/v1/model").status_code == 401
    assert httpx.get(f"{url}/v1/model", headers={"Authorization": "Bearer s3cret-from-a-file"}).status_code == 200
    workers = worker_pids(process.pid)
    for pid in [process.pid, *workers]:  # the token is in no environment and no command line
        assert b"s3cret-from-a-file" not in Path(f"/proc/{pid}/environ").read_bytes()
        assert b"s3cret-from-a-file" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    for pid in workers:  # the workers were given the file's path instead
        assert str(path).encode() in Path(f"/proc/{pid}/environ").read_bytes()
    before = requests_counted(httpx.get(f"{url}/metrics").text, "/healthz")
    for _ in range(20):  # new connections: the kernel spreads them over both workers
        healthz_seconds(url)
    assert requests_counted(httpx.get(f"{url}/metrics").text, "/healthz") == before + 20


def test_trickled_bodies_do_not_lock_clients_out(one_worker):
    """Sockets that send a request's headers, then its body a byte at a time: at the socket cap the
    least recently active is closed, so /healthz and real work still get through."""
    url, port = one_worker
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n")
    tricklers = []
    try:
        for _ in range(150):  # more than --max-connections 100
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head + b"\x89P")
            s.setblocking(False)
            tricklers.append(s)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for s in tricklers:
                try:
                    s.send(b"x")
                except OSError:
                    pass
            assert healthz_seconds(url) < 0.5
            time.sleep(0.2)
        answer = httpx.post(f"{url}/v1/classify", content=PNG, headers={"Content-Type": "image/png"}, timeout=5)
        assert answer.status_code == 200
    finally:
        for s in tricklers:
            s.close()


def test_uploads_arriving_at_once_share_a_memory_budget(start_server):
    """Many large bodies held half-sent: beyond the worker's body budget (8 x --max-bytes) the next
    chunk gets a 503 at once, instead of every upload holding its megabytes until its timeout."""
    max_bytes = 1_000_000
    url, _ = start_server("--max-bytes", str(max_bytes), "--body-timeout", "30")
    port = int(url.rsplit(":", 1)[1])
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % max_bytes)
    uploads = []
    try:
        for _ in range(24):  # 24 x 0.9 MB held: three times the budget
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(head + b"\0" * 900_000)
            uploads.append(s)
        time.sleep(1)
        refused = 0
        for s in uploads:
            s.setblocking(False)
            try:
                refused += s.recv(64).startswith(b"HTTP/1.1 503")
            except BlockingIOError:
                pass
        assert refused >= 24 - 8, refused
        assert healthz_seconds(url) < 0.5
    finally:
        for s in uploads:
            s.close()
