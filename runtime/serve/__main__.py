"""python -m runtime.serve: the HTTP API and web page on uvicorn, one Predictor per worker process."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile

from runtime.metadata import ModelError

TOKEN_ENV = "FASHION_EDGE_TOKEN"
APP = "runtime.serve.app:app_from_env"  # the factory each worker calls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runtime.serve.config import ServeConfig, check_token, read_token_file
    from runtime.serve.middleware import allowed_hosts_for

    d = ServeConfig()
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__)
    p.add_argument("--model", default=None, help="a model file, or a bundled model by name (default: edge)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every network; default local only)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; '*.example.com' for a domain, "
                        "'*' for any). Default: the --host address, plus localhost, 127.0.0.1 and ::1 on loopback; "
                        "with 0.0.0.0 any IP address, localhost and this machine's host name (and NAME.local)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (one per core is a good start)")
    p.add_argument("--threads", type=int, default=d.threads, help="inference threads per worker")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="PATH",
                       help="require 'Authorization: Bearer TOKEN' on /v1, TOKEN being this file's content (one "
                            f"trailing newline allowed; keep it chmod 600). Or set ${TOKEN_ENV}")
    token.add_argument("--token", help="the same with TOKEN on the command line, where every local user can read it "
                                       "(ps, /proc/PID/cmdline): prefer --token-file or $" + TOKEN_ENV)
    p.add_argument("--max-bytes", type=int, default=d.max_bytes, help="largest accepted body, bytes")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest accepted image, pixels")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="most images per batch request")
    p.add_argument("--max-batch-pixels", type=int, default=None,
                   help="the pixels of one batch's images together (default: 4 x --max-pixels)")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout, help="seconds a client may take to upload")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds a client may take to send a request's line and headers, from connecting or "
                        "from the previous answer; then the socket is closed")
    p.add_argument("--max-header-bytes", type=int, default=d.max_header_bytes,
                   help="largest request line and headers, bytes; beyond it 431")
    p.add_argument("--write-timeout", type=float, default=d.write_timeout,
                   help="seconds an answer may wait for its client to take its bytes (the socket's buffer full); "
                        "then the socket is closed")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help="per worker: requests in progress at once, each from its complete body to the start of its "
                        "answer; beyond it 503 with Retry-After (/healthz is always answered)")
    p.add_argument("--max-connections", type=int, default=d.max_connections,
                   help="per worker: open sockets; at the limit the socket that has waited longest for a request "
                        "(or for its client to read) is closed to make room, so idle sockets cannot lock clients out")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow browser pages from this origin (repeatable; default: no CORS)")
    p.add_argument("--ssl-certfile", help="serve HTTPS (phones only give a page the camera over HTTPS)")
    p.add_argument("--ssl-keyfile")
    p.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    p.add_argument("--collect", metavar="DIR", default=None,
                   help="enable POST /v1/collect?label=NAME: uploads are saved as images in DIR/NAME/ (the layout "
                        "`python -m train --data DIR` reads); without it, that route answers 404")
    p.add_argument("--collect-max", type=int, default=d.collect_max, metavar="N",
                   help="images kept per label folder; beyond it 409")
    p.add_argument("--collect-max-labels", type=int, default=d.collect_max_labels, metavar="N",
                   help="label folders; a new label beyond it gets 409")
    p.add_argument("--collect-max-bytes", type=int, default=d.collect_max_bytes, metavar="BYTES",
                   help="bytes the collected images may take together; beyond it 409")
    args = p.parse_args(argv)
    for name in ("port", "workers", "threads", "max_bytes", "max_pixels", "max_batch", "max_concurrent",
                 "max_connections", "collect_max", "collect_max_labels", "collect_max_bytes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_batch_pixels is not None and args.max_batch_pixels < args.max_pixels:
        p.error("--max-batch-pixels must be at least --max-pixels (one image)")
    for name in ("body_timeout", "header_timeout", "write_timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.max_header_bytes < 1024:
        p.error("--max-header-bytes must be at least 1024 (a browser's request needs several hundred)")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        p.error("--ssl-certfile and --ssl-keyfile go together")
    try:
        if args.token_file is not None:
            args.token = read_token_file(args.token_file)
        elif args.token is not None:
            check_token(args.token, "--token")
        elif os.environ.get(TOKEN_ENV) is not None:
            args.token = check_token(os.environ[TOKEN_ENV], f"${TOKEN_ENV}")
        args.allowed_hosts, args.allow_ip_hosts = allowed_hosts_for(args.host, args.allowed_host)
    except ValueError as e:  # TokenError, or a malformed --allowed-host
        p.error(str(e))
    if args.collect is not None:
        from runtime.files import check_writable

        args.collect = os.path.abspath(args.collect)  # workers may start elsewhere
        try:
            check_writable(args.collect)
        except OSError as e:
            p.error(f"--collect: cannot write {args.collect}: {e.strerror or e}")
    return args


def warn_if_others_can_read(path: str) -> None:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        print(f"warning: other users can read the token file {path} (chmod 600 {path})", file=sys.stderr)


def raise_file_limit(sockets: int) -> None:
    """Let a worker hold ``sockets`` connections (each a file descriptor) plus its own files."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = sockets + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            print(f"warning: the open-file limit ({hard}) is below --max-connections {sockets} + 64", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from runtime.predictor import Predictor
        from runtime.serve import listen, protocols
        from runtime.serve.config import CONFIG_ENV, ServeConfig
    except ImportError as e:
        print(f"error: the server needs the serve extra: pip install 'fashion-edge[serve]' ({e})", file=sys.stderr)
        return 2
    args = parse_args(argv)
    token_file = os.path.abspath(args.token_file) if args.token_file else None  # workers may start elsewhere
    config = ServeConfig(model=args.model, token=args.token, token_file=token_file, max_bytes=args.max_bytes,
                         max_pixels=args.max_pixels, max_batch=args.max_batch, body_timeout=args.body_timeout,
                         threads=args.threads, cors_origins=tuple(args.cors_origin),
                         allowed_hosts=args.allowed_hosts, allow_ip_hosts=args.allow_ip_hosts,
                         max_concurrent=args.max_concurrent, header_timeout=args.header_timeout,
                         max_header_bytes=args.max_header_bytes, max_connections=args.max_connections,
                         write_timeout=args.write_timeout,
                         max_batch_pixels=args.max_batch_pixels, collect=args.collect,
                         collect_max=args.collect_max, collect_max_labels=args.collect_max_labels,
                         collect_max_bytes=args.collect_max_bytes)
    try:  # fail here, once, rather than in every worker
        model_path = Predictor(args.model, num_threads=1).model_path
    except (ModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if token_file:
        warn_if_others_can_read(token_file)
    raise_file_limit(args.max_connections)
    os.environ[CONFIG_ENV] = config.to_env()  # with --token-file: the file's path, not the token
    # Several workers are separate processes: their Prometheus metrics meet in a shared directory,
    # set before they start (and import prometheus-client). One worker serves from this process.
    metrics_dir = None
    if args.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="fashion-edge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:  # uvicorn binds one worker's socket itself; several share ours (runtime.serve.listen)
        sock = listen.workers_socket(args.host, args.port) if args.workers > 1 else None
    except OSError as e:
        print(f"error: cannot listen on {args.host} port {args.port}: {e.strerror}", file=sys.stderr)
        return 2
    scheme = "https" if args.ssl_certfile else "http"
    print(f"serving {model_path.name} on {scheme}://{args.host}:{args.port}/ (API docs at /docs) "
          f"with {args.workers} worker(s){'; /v1 needs the bearer token' if args.token else ''}", flush=True)
    hosts = "any" if "*" in args.allowed_hosts else ", ".join(
        (["any IP address"] if args.allow_ip_hosts else []) + list(args.allowed_hosts))
    print(f"answering Host: {hosts} (more with --allowed-host)", flush=True)
    if args.collect:
        print(f"collecting: POST /v1/collect saves images in {args.collect}/LABEL/", flush=True)
    options = dict(factory=True, host=args.host, port=args.port, http=protocols.PROTOCOL, ws="none",
                   h11_max_incomplete_event_size=args.max_header_bytes, timeout_keep_alive=5,
                   timeout_graceful_shutdown=5, access_log=args.access_log, server_header=False,
                   ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, log_level="info")
    try:
        if sock is None:
            uvicorn.run(APP, **options)
        else:  # uvicorn.run's branch for workers, with our socket
            Multiprocess(uvicorn.Config(APP, workers=args.workers, **options), sockets=[sock]).run()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
