"""Load test: our server (python -m runtime.serve) against the seeds' Flask + Keras, same run.

    python benchmarks/serve_load.py [--duration 15] [--connections 32] [--workers 2] [--out artifacts/serve_load.json]

Each server runs in its own processes on this machine; wrk (Debian's `wrk`, a C load
generator) shares the same cores, with 32 concurrent connections (clients) for --duration
seconds after a short warm-up. Payloads: 200 official test images as 28x28 PNG, and 50
camera-like 640x480 JPEG frames of test images (simulator.camera_sim). Every answer of ours
is checked against the runtime before the load. Prints a Markdown table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # the clone: simulator/ is not installed

from runtime import Predictor  # noqa: E402
from runtime.files import write_json  # noqa: E402
from simulator.camera_sim import render  # noqa: E402
from train import data  # noqa: E402

LUA = HERE / "wrk_post.lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def write_payloads(directory: Path) -> dict[str, tuple[Path, str, list[bytes], list[str]]]:
    """name -> (list file for wrk, content type, bodies, the runtime's labels for them)."""
    fashion = data.load(allow_download=False)
    rng = np.random.default_rng(0)
    predictor = Predictor()
    picks = rng.choice(len(fashion.test_labels), 200, replace=False)
    sets = {"28x28 PNG": ("image/png", [cv2.imencode(".png", fashion.test_images[i])[1].tobytes() for i in picks])}
    frames = [render(fashion.test_images[i], rng) for i in picks[:50]]
    sets["640x480 JPEG"] = ("image/jpeg", [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
                                           for f in frames])
    payloads = {}
    for name, (content_type, bodies) in sets.items():
        paths = []
        for i, body in enumerate(bodies):
            paths.append(directory / f"{name.split()[0]}_{i}.bin")
            paths[-1].write_bytes(body)
        listing = directory / f"{name.split()[0]}.txt"
        listing.write_text("\n".join(map(str, paths)) + "\n")
        labels = [predictor.predict(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE)).label
                  for b in bodies]
        payloads[name] = (listing, content_type, bodies, labels)
    return payloads


def start(command: list[str], url: str, probe: bytes) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            post(url, probe, "image/png")
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}") from None
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{' '.join(command)} did not answer within 120 s")


def wrk(url: str, listing: Path, content_type: str, connections: int, duration: int) -> dict:
    env = {**os.environ, "BODIES": str(listing), "CONTENT_TYPE": content_type}
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(LUA), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["error_count"] = sum(result["errors"].values())
    return result


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="our server's worker processes")
    p.add_argument("--keras-model", type=Path, default=Path("artifacts/float_model.h5"))
    p.add_argument("--no-flask", action="store_true", help="skip the Flask + Keras baseline")
    p.add_argument("--out", type=Path, default=Path("artifacts/serve_load.json"))
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        payloads = write_payloads(Path(tmp))
        png_probe = payloads["28x28 PNG"][2][0]

        def measure(server: str, command: list[str], port: int, path: str, names: list[str], check: bool) -> None:
            url = f"http://127.0.0.1:{port}{path}"
            process = start(command, url, png_probe)
            try:
                for name in names:
                    listing, content_type, bodies, labels = payloads[name]
                    if check:  # the server answers what the runtime answers, before any load
                        got = [post(url, body, content_type)[1]["label"] for body in bodies]
                        assert got == labels, f"{server} disagrees with the runtime on {name}"
                    wrk(url, listing, content_type, args.connections, 2)  # warm-up
                    result = wrk(url, listing, content_type, args.connections, args.duration)
                    runs.append({"server": server, "payload": name, **result})
                    print(f"{server:<40} {name:<14} {result['requests_per_s']:>9.1f} req/s  "
                          f"p99 {result['p99_us'] / 1000:.1f} ms  errors {result['error_count']}", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=30)

        port = free_port()
        measure(f"runtime.serve, {args.workers} workers, int8 TFLite",
                [sys.executable, "-m", "runtime.serve", "--port", str(port), "--workers", str(args.workers)],
                port, "/v1/classify", ["28x28 PNG", "640x480 JPEG"], check=True)
        if not args.no_flask:
            flask = [sys.executable, str(HERE / "flask_keras_server.py"), "--keras-model", str(args.keras_model)]
            for mode, extra in (("model.predict", []), ("model(x)", ["--call"])):
                port = free_port()
                measure(f"Flask + Keras float, {mode}", [*flask, "--port", str(port), *extra], port, "/predict",
                        ["28x28 PNG"], check=False)

    baseline = next((r["requests_per_s"] for r in runs if r["server"].endswith("model.predict")), None)
    print(f"\n{args.connections} concurrent connections, {args.duration} s each, wrk on the same machine\n")
    print("| server | payload | requests/s | p50 ms | p95 ms | p99 ms | errors | vs Flask + `predict` |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        ratio = f"{r['requests_per_s'] / baseline:.0f}x" if baseline and r["payload"] == "28x28 PNG" else ""
        print(f"| {r['server']} | {r['payload']} | {r['requests_per_s']:,.0f} | {r['p50_us'] / 1000:.1f} | "
              f"{r['p95_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} | {r['error_count']} | {ratio} |")
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                                                   "python": platform.python_version()},
              "connections": args.connections, "duration_s": args.duration, "runs": runs}
    write_json(args.out, report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
