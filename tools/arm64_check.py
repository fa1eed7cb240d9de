"""`make arm64-check`: run the runtime and the camera demo on arm64 Debian bookworm (the base of
Raspberry Pi OS 64-bit) under qemu user emulation, and check they give the x86 answers.

What it does, in order:
1. builds (once; cached) an arm64 bookworm root filesystem with debootstrap;
2. copies the working tree into it and installs `.[tflite,camera]` (what a Pi needs: no
   TensorFlow) plus the runtime tests' `.[test]`, at the versions of requirements.lock (the
   lock x86 installs too), so the CPU architecture is the only difference;
3. runs the runtime tests there (qemu emulating a Cortex-A72, the Pi 4's core), then the same
   probes on x86 and on arm64 as a Cortex-A72 and as a Cortex-A76 (Pi 5): `python -m runtime`
   on a few images with every bundled model, the headless camera demo with the int8 TFLite
   (the default) and int8 ONNX models over a generated video and over its frames as PNG files,
   and the video's decoded frames;
4. compares: same labels, same object_found, probabilities within PROB_TOL (FRAME_PROB_TOL for
   camera frames); writes a JSON report and prints a table; exits 1 on any mismatch or failure.

Emulation says whether it works and what it answers, not how fast a Pi is: the report's
Raspberry Pi 4/5 frame rates are an estimate on paper (see PI_ESTIMATE).

Needs root (debootstrap, chroot, mounts), debootstrap, qemu-user-static (binfmt_misc is
registered here if it is not), and network access to deb.debian.org and PyPI.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runtime.files import write_json

ROOT = Path(__file__).resolve().parents[1]
ROOTFS = Path(os.environ.get("ARM64_ROOTFS", Path.home() / ".cache" / "fashion-edge" / "arm64-bookworm"))
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
# python3-venv: the Pi's own Python; libgl1 + libglib2.0-0: opencv-python's GUI build links
# them (Raspberry Pi OS desktop has them, Lite may not); the data set for the runtime tests.
PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgl1", "libglib2.0-0", "dataset-fashion-mnist")
STAMP = ".fashion-edge-rootfs.json"  # written last: a rootfs without it is incomplete
GUEST_SRC, GUEST_VENV, GUEST_WORK = "/root/fashion-edge", "/opt/fashion-edge-venv", "/root/arm64-check"
LOCK = "requirements.lock"  # one lock for x86_64 and arm64: `make lock`
REPORTED = ("fashion-edge", "numpy", "onnxruntime", "ai-edge-litert", "opencv-python", "onnx", "pytest")
MODELS = ("fashion_int8.tflite", "fashion_int8.onnx", "fashion_float.onnx")
DEMO_MODELS = (None, "fashion_int8.onnx")  # None: the default, int8 TFLite when LiteRT is installed
TESTS = ("tests/test_runtime.py", "tests/test_bundled_models.py", "tests/test_camera_demo.py",
         "tests/test_environment.py")  # the last: the guest has the lock's versions
# Deselected under emulation: `slow` (another pip install) and the two full-test-set accuracy
# tests (30,000 emulated inferences, over an hour); the probes below compare answers instead.
DESELECT = "-m 'not slow' -k 'not meet_the_bar and not float_onnx_agrees'"
# qemu's default CPU ("max") has SVE and i8mm, which no Pi has, so XNNPACK and onnxruntime would
# pick kernels a Pi never runs: emulate the Pis' own cores instead.
CPUS = {"Pi 4": "cortex-a72", "Pi 5": "cortex-a76"}
TEST_CPU = "cortex-a72"  # the older core (no dot-product instructions)
VIDEO = {"garments": 20, "hold": 4}  # 80 frames of 640x480
# Probabilities are compared after the CLI's and demo's rounding to 4 decimals.
# 28x28 arrays go to the model as they are: 0.01 (about 2.5 steps of an int8 output, 1/256) leaves
# room for one requantisation rounding difference between x86 and arm kernels (measured: none).
PROB_TOL = 0.01
# Camera frames first go through float preprocessing (background-plane fit, INTER_AREA resize),
# where numpy/OpenCV may round differently on arm64; a 28x28 pixel off by one grey level moves the
# int8 output by a step or a few. Measured on identical PNG frames: up to 0.024. Over the .mp4
# each side also decodes the video itself (MPEG-4 allows IDCT rounding differences; the frames
# differ by ~1 grey level on average): up to 0.039. Labels must still agree on every frame.
FRAME_PROB_TOL = 0.05
HOST_CA_BUNDLE = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
GUEST_CA_BUNDLE = "/etc/ssl/certs/host-ca-bundle.crt"
PASSED_ENV = {"http_proxy", "https_proxy", "no_proxy", "pip_index_url", "pip_default_timeout"}
XNNPACK_LOG = "Created TensorFlow Lite XNNPACK delegate"
BIN_PATH = f"{GUEST_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Frame checksums of a video as this OpenCV build decodes it (run on both sides).
DECODE_CODE = """
import hashlib, json, sys, cv2
cap = cv2.VideoCapture(sys.argv[1])
while True:
    ok, frame = cap.read()
    if not ok:
        break
    print(json.dumps({"md5": hashlib.md5(frame.tobytes()).hexdigest(), "mean": float(frame.mean())}))
"""

# The inputs, made once on x86 and copied to the guest: dataset images (one per class) and
# 640x480 camera-like frames as PNG (lossless), and an .mp4 of camera-like garments.
INPUTS_CODE = """
import sys
from pathlib import Path
import cv2, numpy as np
from simulator.make_video import make_video
from camera_demo.sources import SAMPLES
from simulator import camera_sim
out = Path(sys.argv[1])
samples = np.load(SAMPLES)
for c in np.unique(samples["labels"]):
    i = int(np.flatnonzero(samples["labels"] == c)[0])
    cv2.imwrite(str(out / f"class{c}.png"), samples["images"][i])
rng = np.random.default_rng(5)
for k, i in enumerate((3, 47, 101, 188)):
    cv2.imwrite(str(out / f"frame{k}.png"), camera_sim.render(samples["images"][i], rng))
make_video(out / "garments.mp4", garments=int(sys.argv[2]), hold=int(sys.argv[3]))
# the same frames as x86 decodes them, as PNG: identical inputs for the demo on both sides
(out / "frames").mkdir()
cap, n = cv2.VideoCapture(str(out / "garments.mp4")), 0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    cv2.imwrite(str(out / "frames" / f"{n:04d}.png"), frame)
    n += 1
"""

# An estimate on paper, not a measurement. Per-core ratio: the single-threaded 7-Zip rating
# (the per-core figure sbc-bench publishes for every board) of each Pi over this machine's.
# It tracks integer code; the SIMD-bound parts (int8 kernels: AVX-512 VNNI here, 128-bit NEON
# there, no dot-product instructions on the A72; OpenCV; MPEG-4 decoding) likely fare worse,
# so the "conservative" column halves it (a judgement, not a measurement).
SBC_BENCH = "https://github.com/ThomasKaiser/sbc-bench/blob/master/Sorted-Results.md"
PI_ESTIMATE = {
    "basis": "7-Zip single-threaded total rating (MIPS), Pi / this machine",
    "reference": {"machine": "this machine: AMD EPYC (Zen 4: family 25, model 17), 1 of 2 vCPUs",
                  "7zip_single_mips": 3800, "source": "`7zz b -mmt1`, 7-Zip 26.02 (Debian 12 7zip), 2026-11-26"},
    "boards": {
        "Raspberry Pi 4 B (Cortex-A72 1.8 GHz)": {
            "7zip_single_mips": 1769, "source": f"sbc-bench, Pi OS Bullseye arm64, results/3OBF.txt ({SBC_BENCH})"},
        "Raspberry Pi 5 B (Cortex-A76 2.4 GHz)": {
            "7zip_single_mips": 3305, "source": f"sbc-bench, Bookworm arm64, results/8-NK.txt ({SBC_BENCH})"},
    },
    # the README's measurements on the reference machine, one thread
    "x86_measured": {"predict_int8_tflite_us": 95, "predict_int8_onnx_us": 126,
                     "preprocess_640x480_ms": [0.47, 0.73], "demo_fps": [760, 900]},
    "caveats": ["sbc-bench ran p7zip 16.02 on the Pis, 7-Zip 26.02 ran here (newer x86 code paths: "
                "the ratio is if anything low)",
                "integer ratio; SIMD-bound kernels likely worse, hence the conservative column",
                "a live camera delivers 30 frames/s (typically): that caps the real demo"],
}


class CheckError(RuntimeError):
    """A precondition or step failed; the message says what to do."""


# ---------------------------------------------------------------- host preconditions

def preflight() -> None:
    if platform.system() != "Linux":
        raise CheckError("needs Linux (debootstrap, chroot, binfmt_misc)")
    if os.geteuid() != 0:
        raise CheckError("needs root: debootstrap, chroot and mounts do (run `sudo make arm64-check`)")
    missing = [tool for tool in ("debootstrap", "chroot", "mount", "umount") if not shutil.which(tool)]
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        missing.append("qemu-aarch64-static")
    if missing:
        raise CheckError(f"missing {', '.join(missing)}: apt-get install debootstrap qemu-user-static binfmt-support")
    ensure_binfmt()


def ensure_binfmt() -> None:
    """Register qemu-aarch64 with flag F (the interpreter is opened now, so the chroot needs no copy)."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if entry.exists() and entry.read_text().startswith("enabled"):
        return
    register = Path("/proc/sys/fs/binfmt_misc/register")
    if not register.exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.exists():
        raise CheckError(f"{conf} is missing: apt-get install qemu-user-static")
    line = next(x for x in conf.read_text().splitlines() if x.startswith(":qemu-aarch64:"))
    fields = line.split(":")  # :name:type:offset:magic:mask:interpreter:flags
    fields[-2], fields[-1] = "/usr/bin/qemu-aarch64-static", "F"
    try:
        register.write_text(":".join(fields))
    except OSError as e:
        raise CheckError(f"cannot register qemu-aarch64 with binfmt_misc ({e}): is this a container "
                         "without binfmt_misc? run `update-binfmts --enable qemu-aarch64` on the host") from e


def require_network(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise CheckError(f"cannot reach {host}:{port} ({e}): the rootfs build needs deb.debian.org "
                         "and the install needs PyPI") from e


def run(cmd: list[str], timeout: float = 3600, capture: bool = False, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, timeout=timeout, cwd=cwd, text=True,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        tail = (result.stderr or "")[-3000:] if capture else ""
        raise CheckError(f"`{' '.join(map(str, cmd))[:300]}` exited {result.returncode}\n{tail}")
    return result


# ---------------------------------------------------------------- the root filesystem

def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")  # \040 is a space
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        if subprocess.run(["umount", point], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False)
    if mounts_under(path):
        raise CheckError(f"cannot unmount {mounts_under(path)}: unmount them by hand")


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount (a bind-mounted /dev would be emptied)."""
    if path.exists():
        unmount_all(path)
        shutil.rmtree(path)


def rootfs_config() -> dict:
    return {"suite": SUITE, "arch": "arm64", "variant": "minbase", "packages": list(PACKAGES)}


def rootfs_ready(rootfs: Path) -> bool:
    try:
        return json.loads((rootfs / STAMP).read_text()) == rootfs_config()
    except (OSError, ValueError):
        return False


def build_rootfs(rootfs: Path) -> None:
    """debootstrap into a temporary directory, then rename: an interrupted build leaves nothing half-made."""
    require_network("deb.debian.org", 80)
    partial = rootfs.with_name(rootfs.name + ".partial")
    remove_tree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the arm64 {SUITE} rootfs in {rootfs} (once; about 10 minutes)", flush=True)
    try:
        run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            SUITE, str(partial), MIRROR])
    finally:
        unmount_all(partial)  # debootstrap mounts /proc and /sys inside; a failure can leave them
    (partial / STAMP).write_text(json.dumps(rootfs_config()))
    remove_tree(rootfs)
    partial.rename(rootfs)


class Chroot:
    """/proc and /dev mounted inside the rootfs for the duration; always unmounted again."""

    def __init__(self, rootfs: Path):
        self.rootfs = rootfs

    def __enter__(self) -> "Chroot":
        unmount_all(self.rootfs)  # a run killed with SIGKILL can have left them mounted
        run(["mount", "-t", "proc", "proc", str(self.rootfs / "proc")])
        run(["mount", "--bind", "/dev", str(self.rootfs / "dev")])
        # no /sys: with it, cpuinfo (onnxruntime, XNNPACK) crashes on the host's x86 /proc/cpuinfo
        # (qemu-user passes it through); without it, it fails cleanly and they use HWCAP flags
        shutil.copy("/etc/resolv.conf", self.rootfs / "etc" / "resolv.conf")  # pip needs DNS
        # the host's trust store too: an egress proxy may re-sign TLS with a local CA
        shutil.copy(HOST_CA_BUNDLE, self.rootfs / GUEST_CA_BUNDLE.lstrip("/"))
        return self

    def __exit__(self, *exc) -> None:
        unmount_all(self.rootfs)

    def path(self, guest: str) -> Path:
        return self.rootfs / guest.lstrip("/")

    def sh(self, script: str, timeout: float = 3600, capture: bool = True, check: bool = True,
           cpu: str = TEST_CPU) -> subprocess.CompletedProcess:
        env = ["env", "-i", f"QEMU_CPU={cpu}", "HOME=/root", f"PATH={BIN_PATH}", "LANG=C.UTF-8",
               "PYTHONDONTWRITEBYTECODE=1", "PIP_DISABLE_PIP_VERSION_CHECK=1", "TF_CPP_MIN_LOG_LEVEL=2",
               f"SSL_CERT_FILE={GUEST_CA_BUNDLE}", f"PIP_CERT={GUEST_CA_BUNDLE}",
               *[f"{k}={v}" for k, v in os.environ.items() if k.lower() in PASSED_ENV]]
        return run(["chroot", str(self.rootfs), *env, "/bin/bash", "-ec", script], timeout=timeout,
                   capture=capture, check=check)


# ---------------------------------------------------------------- install into the guest

def working_tree_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as a clone would see it."""
    try:
        out = run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  capture=True).stdout
        return sorted({name for name in out.split("\0") if name and (root / name).is_file()})
    except (CheckError, FileNotFoundError):
        skip = {".git", ".venv", "artifacts", "build", "__pycache__", ".pytest_cache", ".hypothesis"}
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and not skip & set(p.relative_to(root).parts))


def copy_tree(root: Path, dest: Path) -> int:
    remove_tree(dest)
    files = working_tree_files(root)
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name)
    return len(files)


def host_versions() -> dict[str, str]:
    versions = {}
    for name in REPORTED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def install_guest(chroot: Chroot) -> dict[str, str]:
    """A venv with the project as a Pi installs it, at the lock's versions (uv, as `make` installs:
    the version the host's venv has); returns the guest's package versions."""
    require_network("pypi.org", 443)
    uv = importlib.metadata.version("uv")
    chroot.sh(f"[ -x {GUEST_VENV}/bin/python ] || python3 -m venv {GUEST_VENV}")
    chroot.sh(f"pip install -q uv=={uv}", timeout=1800)
    # the project is always reinstalled from the copied tree; its dependencies only when missing
    install = f"uv pip install --quiet --python {GUEST_VENV}/bin/python --constraints {GUEST_SRC}/{LOCK}"
    chroot.sh(f"cd {GUEST_WORK} && {install} '{GUEST_SRC}[tflite,camera,test]'"
              f" && {install} --no-deps --reinstall {GUEST_SRC}", timeout=5400)
    listed = json.loads(chroot.sh("pip list --format json").stdout)
    wanted = {name.lower() for name in REPORTED}
    return {p["name"]: p["version"] for p in listed if p["name"].lower() in wanted}


# ---------------------------------------------------------------- probes (both sides)

def probe_commands(python: str, models_dir: str, inputs: str) -> dict[str, list[str]]:
    """The same commands for x86 and the guest, by probe name."""
    images = sorted(p.name for p in Path(INPUTS_DIR).glob("*.png"))
    probes = {}
    for model in MODELS:
        probes[f"cli {model}"] = [python, "-m", "runtime", *[f"{inputs}/{x}" for x in images],
                                  "--model", f"{models_dir}/{model}", "--json", "--top-k", "10", "--threads", "1"]
    for model in DEMO_MODELS:
        extra = ["--model", f"{models_dir}/{model}"] if model else []
        for source in ("garments.mp4", "frames"):
            probes[f"demo {model or 'default'} {source}"] = [
                python, "-m", "camera_demo", "--source", f"{inputs}/{source}", "--headless", "--threads", "1", *extra]
    probes["decode garments.mp4"] = [python, "-c", DECODE_CODE, f"{inputs}/garments.mp4"]
    return probes


INPUTS_DIR = ROOT / "artifacts" / "arm64_check" / "inputs"


def parse_probe(name: str, stdout: str) -> dict:
    """Records keyed for comparison, plus the demo's summary line."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    summary = next((x for x in lines if x.get("summary")), None)
    records = {}
    for i, x in enumerate(x for x in lines if not x.get("summary")):
        if name.startswith("cli"):
            key = Path(x["image"]).name
            probs = {t["label"]: t["confidence"] for t in x["top_k"]}
        elif name.startswith("demo"):
            key, probs = f"frame {x['frame']}", {x["label"]: x["confidence"]}
        else:
            key, probs = f"frame {i + 1}", {}
        records[key] = {"label": x.get("label"), "found": x.get("object_found"), "probs": probs,
                        "md5": x.get("md5"), "mean": x.get("mean")}
    return {"records": records, "summary": summary}


def run_probe(cmd: list[str], chroot: Chroot | None, cwd: Path,
              cpu: str = TEST_CPU) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    if chroot:
        result = chroot.sh(f"cd {GUEST_WORK} && exec " + " ".join(shell_quote(c) for c in cmd), check=False, cpu=cpu)
    else:
        result = run(cmd, capture=True, cwd=cwd, check=False)
    return result, time.perf_counter() - t0


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def compare(name: str, x86: dict, arm: dict) -> dict:
    a, b = x86["records"], arm["records"]
    keys = sorted(set(a) | set(b))
    labels = sum(a.get(k, {}).get("label") == b.get(k, {}).get("label") for k in keys)
    found = sum(a.get(k, {}).get("found") == b.get(k, {}).get("found") for k in keys)
    md5 = sum(a.get(k, {}).get("md5") == b.get(k, {}).get("md5") for k in keys)
    # each record's largest probability difference, over its tolerance: a camera frame's (the CLI's
    # frame*.png, every demo frame) went through float preprocessing, a dataset image did not
    diffs = {k: max((abs(a[k]["probs"].get(label, 0.0) - b[k]["probs"].get(label, 0.0))
                     for label in set(a[k]["probs"]) | set(b[k]["probs"])), default=0.0)
             for k in keys if k in a and k in b}
    tols = {k: FRAME_PROB_TOL if name.startswith("demo") or k.startswith("frame") else PROB_TOL for k in diffs}
    max_diff = max(diffs.values(), default=0.0)
    same = bool(keys) and set(a) == set(b) and labels == found == md5 == len(keys)
    if name.startswith("decode"):
        # reported, not gated: see FRAME_PROB_TOL
        means = [abs(a[k]["mean"] - b[k]["mean"]) for k in keys if k in a and k in b]
        return {"items": len(keys), "identical_frames": md5, "max_mean_grey_diff": round(max(means, default=0), 3),
                "ok": set(a) == set(b)}
    return {"items": len(keys), "same_label": labels, "same_object_found": found,
            "max_prob_diff": round(max_diff, 4), "tolerance": max(tols.values(), default=PROB_TOL),
            "ok": same and all(diffs[k] <= tols[k] for k in diffs)}


# ---------------------------------------------------------------- steps

def make_inputs(python: str) -> None:
    remove_tree(INPUTS_DIR)
    INPUTS_DIR.mkdir(parents=True)
    run([python, "-c", INPUTS_CODE, str(INPUTS_DIR), str(VIDEO["garments"]), str(VIDEO["hold"])],
        capture=True, cwd=ROOT)


def run_tests(chroot: Chroot) -> dict:
    t0 = time.perf_counter()
    result = chroot.sh(f"cd {GUEST_SRC} && python -m pytest -q -p no:cacheprovider {DESELECT} {' '.join(TESTS)}",
                       check=False, timeout=5400)
    summary = (result.stdout.strip().splitlines() or [""])[-1]
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-3000:], sep="\n")
    return {"files": list(TESTS), "cpu": TEST_CPU, "deselected": DESELECT,
            "summary": summary, "ok": result.returncode == 0, "seconds": round(time.perf_counter() - t0, 1)}


def estimate() -> dict:
    """Pi 4 / Pi 5 figures on paper from the x86 measurements and per-core ratios."""
    ref = PI_ESTIMATE["reference"]["7zip_single_mips"]
    x86 = PI_ESTIMATE["x86_measured"]
    boards = {}
    for board, info in PI_ESTIMATE["boards"].items():
        ratio = info["7zip_single_mips"] / ref
        fps = [round(f * ratio) for f in x86["demo_fps"]]
        boards[board] = {"per_core_ratio": round(ratio, 2),
                         "predict_int8_tflite_us": round(x86["predict_int8_tflite_us"] / ratio),
                         "predict_int8_onnx_us": round(x86["predict_int8_onnx_us"] / ratio),
                         "demo_fps_headless": fps,
                         "demo_fps_headless_conservative": [round(f / 2) for f in fps],
                         "demo_fps_with_a_30_fps_camera": 30}
    return {"ESTIMATE": "on paper, not measured on a Pi", **PI_ESTIMATE, "boards": boards}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/arm64_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rootfs", type=Path, default=ROOTFS, help=f"cached rootfs (default {ROOTFS}; env ARM64_ROOTFS)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the rootfs even if the cache is complete")
    p.add_argument("--report", type=Path, default=ROOT / "artifacts" / "arm64_check.json")
    p.add_argument("--python", default=sys.executable, help="the x86 Python to compare with")
    args = p.parse_args(argv)
    # SIGTERM/SIGHUP end like Ctrl-C, so the mounts are always undone
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        report = check(args)
    except CheckError as e:
        print(f"arm64-check: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arm64-check: interrupted (mounts undone)", file=sys.stderr)
        return 130
    return 0 if report["ok"] else 1


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def check(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    preflight()
    t0 = time.perf_counter()
    if args.rebuild or not rootfs_ready(args.rootfs):
        build_rootfs(args.rootfs)
    timings["rootfs"] = round(time.perf_counter() - t0, 1)
    make_inputs(args.python)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "command": "make arm64-check", "rootfs": str(args.rootfs),
                    "tolerance": {"labels": "identical", "object_found": "identical", "probabilities": PROB_TOL,
                                  "probabilities_camera_frames": FRAME_PROB_TOL},
                    "x86": {"machine": platform.machine(), "python": platform.python_version(),
                            "packages": host_versions()}}
    with Chroot(args.rootfs) as chroot:
        t0 = time.perf_counter()
        files = copy_tree(ROOT, chroot.path(GUEST_SRC))
        remove_tree(chroot.path(GUEST_WORK))
        shutil.copytree(INPUTS_DIR, chroot.path(f"{GUEST_WORK}/inputs"))
        print(f"copied {files} files of the working tree; installing .[tflite,camera] under emulation", flush=True)
        guest_packages = install_guest(chroot)
        timings["install"] = round(time.perf_counter() - t0, 1)
        uname = chroot.sh("uname -m; python3 --version; cat /etc/debian_version").stdout.split("\n")
        report["arm64"] = {"machine": uname[0], "python": uname[1], "debian": uname[2], "packages": guest_packages,
                           "emulator": "qemu-aarch64-static (user mode)"}
        print("running the runtime tests under emulation", flush=True)
        report["tests"] = run_tests(chroot)
        timings["tests"] = report["tests"]["seconds"]
        report["probes"] = run_probes(chroot, args.python)
    timings["total"] = round(time.perf_counter() - started, 1)
    report["estimate"] = estimate()
    report["timings_s"] = timings
    report["ok"] = report["tests"]["ok"] and all(p["ok"] for p in report["probes"].values())
    write_json(args.report, report)
    print_table(report, args.report)
    return report


def run_probes(chroot: Chroot, python: str) -> dict:
    host = probe_commands(python, str(ROOT / "runtime" / "models" / "edge"), str(INPUTS_DIR))
    guest = probe_commands("python", f"{GUEST_SRC}/runtime/models/edge", f"{GUEST_WORK}/inputs")
    results = {}
    for name in host:
        x86_run, x86_s = run_probe(host[name], None, ROOT)
        for board, cpu in CPUS.items():
            arm_run, arm_s = run_probe(guest[name], chroot, ROOT, cpu)
            outcome = {"cpu": cpu, "x86_exit": x86_run.returncode, "arm64_exit": arm_run.returncode,
                       "x86_s": round(x86_s, 2), "arm64_emulated_s": round(arm_s, 2),
                       # LiteRT logs this when XNNPACK is used; under qemu its cpuinfo cannot start
                       "xnnpack": {"x86": XNNPACK_LOG in x86_run.stderr, "arm64": XNNPACK_LOG in arm_run.stderr}}
            if x86_run.returncode or arm_run.returncode:
                outcome.update(ok=False, stderr=(x86_run.stderr[-1500:], arm_run.stderr[-1500:]))
            else:
                x86, arm = parse_probe(name, x86_run.stdout), parse_probe(name, arm_run.stdout)
                outcome.update(compare(name, x86, arm))
                if x86["summary"]:
                    outcome.update(x86_fps=x86["summary"]["fps"], arm64_emulated_fps=arm["summary"]["fps"],
                                   model=Path(arm["summary"]["model"]).name)
            results[f"{name} @ {board}"] = outcome
            print(f"probe {name} @ {board} ({cpu}): {'ok' if outcome['ok'] else 'MISMATCH'} "
                  f"({arm_s:.0f} s emulated)", flush=True)
    return results


def print_table(report: dict, path: Path) -> None:
    print(f"\narm64 check ({report['arm64']['debian']}, {report['arm64']['python']}, emulated) vs "
          f"x86 ({report['x86']['python']}); same labels required, probabilities within {PROB_TOL} "
          f"({FRAME_PROB_TOL} for camera frames: float preprocessing, video decoding)")
    print(f"{'probe':<38} {'items':>5} {'same':>5} {'max |dp|':>8} {'x86 s':>7} {'arm64 s':>8}  result")
    for name, p in report["probes"].items():
        labels = p.get("same_label", p.get("identical_frames", "-"))
        diff = p.get("max_prob_diff", p.get("max_mean_grey_diff", "-"))  # decode: mean grey level
        print(f"{name:<38} {p.get('items', '-'):>5} {labels!s:>5} {diff!s:>8} "
              f"{p['x86_s']:>7} {p['arm64_emulated_s']:>8}  {'ok' if p['ok'] else 'MISMATCH'}")
    tests = report["tests"]
    print(f"runtime tests (arm64, {tests['cpu']}): {tests['summary']}  {'ok' if tests['ok'] else 'FAILED'}")
    print("emulated speed says nothing about a Pi; estimate on paper (one core):")
    for board, e in report["estimate"]["boards"].items():
        (_, high), (c_low, c_high) = e["demo_fps_headless"], e["demo_fps_headless_conservative"]
        print(f"  {board}: ESTIMATE {c_low}-{high} frames/s headless (conservative {c_low}-{c_high}); "
              f"a 30 fps camera caps the live demo at 30")
    print(f"{'PASS' if report['ok'] else 'FAIL'}: report in {path} (total {report['timings_s']['total']} s)")


if __name__ == "__main__":
    sys.exit(main())
