"""python -m runtime.serve: the HTTP API and web page on uvicorn, one Predictor per worker process."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from runtime.metadata import ModelError

TOKEN_ENV = "FASHION_EDGE_TOKEN"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runtime.serve.app import ServeConfig

    d = ServeConfig()
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__)
    p.add_argument("--model", default=None, help="an exported .tflite or .onnx (default: the bundled int8 model)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every network; default local only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (one per core is a good start)")
    p.add_argument("--threads", type=int, default=d.threads, help="inference threads per worker")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"require 'Authorization: Bearer TOKEN' on /v1 (default: ${TOKEN_ENV})")
    p.add_argument("--max-bytes", type=int, default=d.max_bytes, help="largest accepted body, bytes")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest accepted image, pixels")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="most images per batch request")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout, help="seconds a client may take to upload")
    p.add_argument("--max-connections", type=int, default=512,
                   help="per worker; beyond it new requests get 503 instead of queueing")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow browser pages from this origin (repeatable; default: no CORS)")
    p.add_argument("--ssl-certfile", help="serve HTTPS (phones only give a page the camera over HTTPS)")
    p.add_argument("--ssl-keyfile")
    p.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    args = p.parse_args(argv)
    for name in ("port", "workers", "threads", "max_bytes", "max_pixels", "max_batch", "max_connections"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.body_timeout <= 0:
        p.error("--body-timeout must be positive")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        p.error("--ssl-certfile and --ssl-keyfile go together")
    if args.token is not None and not args.token.strip():
        p.error("--token must not be empty")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        import uvicorn

        from runtime.predictor import Predictor
        from runtime.serve.app import CONFIG_ENV, ServeConfig
    except ImportError as e:
        print(f"error: the server needs the serve extra: pip install 'fashion-edge[serve]' ({e})", file=sys.stderr)
        return 2
    args = parse_args(argv)
    config = ServeConfig(model=args.model, token=args.token, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
                         max_batch=args.max_batch, body_timeout=args.body_timeout, threads=args.threads,
                         cors_origins=tuple(args.cors_origin))
    try:  # fail here, once, rather than in every worker
        model_path = Predictor(args.model, num_threads=1).model_path
    except (ModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.environ[CONFIG_ENV] = config.to_env()
    # Workers are separate processes: their Prometheus metrics meet in a shared directory.
    metrics_dir = tempfile.mkdtemp(prefix="fashion-edge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    scheme = "https" if args.ssl_certfile else "http"
    print(f"serving {model_path.name} on {scheme}://{args.host}:{args.port}/ (API docs at /docs) "
          f"with {args.workers} worker(s){'; /v1 needs the bearer token' if args.token else ''}", flush=True)
    try:
        uvicorn.run("runtime.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, limit_concurrency=args.max_connections, timeout_keep_alive=5,
                    timeout_graceful_shutdown=5, access_log=args.access_log, server_header=False,
                    ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, log_level="info")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
