"""python -m camera_demo: classify webcam frames in real time (window or headless).

Keys in the window: q or Esc quits, s saves a screenshot, space pauses, c (with --collect)
saves the guide box's crop as a training image.

Collecting (``--collect DIR --label NAME``): the guide box's crop (the whole frame for files)
goes to DIR/NAME/NAME_YYYYmmdd_HHMMSS_NNNN.png, the layout ``python -m train --data DIR`` reads:
with the c key in the window, every ``--collect-every`` frames with --headless.
Exit codes: 0 the stream ended or you quit, 2 no source/model, or --record cannot be written
(read-only, full disk: a file already there is left as it was), 3 the camera was lost,
130 interrupted (Ctrl-C or SIGTERM).

A closed stdout (``python -m camera_demo --headless | head -1``) is the reader saying it
has had enough, like q in the window: the demo stops quietly (no traceback, no summary
line) and exits 0, with the recording finalised. (Not 141, the shell's code for a death by
SIGPIPE: with ``set -o pipefail`` a pipeline that took what it wanted still succeeds.)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from camera_demo.capture import CaptureThread
from camera_demo.output import emit_json_line, frame_record, roi_crop, save_screenshot, save_training_image
from camera_demo.overlay import FpsMeter, advice, draw_note, draw_overlay, guide_box
from camera_demo.sources import Source, SourceError, open_source
from camera_demo.video import CannotWrite, Recorder, check_record_path, video_writer
from runtime import ModelError, Prediction, Predictor, Roi
from runtime.collect import check_label
from runtime.files import check_writable

EXIT_OK, EXIT_NO_SOURCE, EXIT_LOST, EXIT_INTERRUPTED = 0, 2, 3, 130
EXIT_CANNOT_WRITE = 2
EXIT_CODES = {"lost": EXIT_LOST, "no-display": EXIT_NO_SOURCE, "interrupted": EXIT_INTERRUPTED}
# "closed": stdout was closed by its reader; like "ended" and "quit", exit 0
WINDOW = "fashion-edge camera demo"
RECORD_FPS = 30.0
KEYS = {ord("q"): "quit", 27: "quit", ord("s"): "screenshot", ord(" "): "pause",  # 27: Esc
        ord("c"): "collect"}


# --- the command line ---------------------------------------------------------------------

def roi_arg(text: str) -> Roi:
    """``--roi x,y,w,h`` as a ``Roi``; argparse reports a malformed one as a usage error."""
    try:
        return Roi.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def label_arg(text: str) -> str:
    """``--label NAME``: a class folder's name; argparse reports a bad one as a usage error."""
    try:
        return check_label(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m camera_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="a model file, or a bundled model by name (default: edge)")
    p.add_argument("--source", default="0",
                   help="camera index, 'picamera2', 'synthetic', a video file or an image directory")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--roi", type=roi_arg, default=None,
                   help="x,y,w,h where to look (default: the centred guide box for a live camera, "
                        "the whole frame for files)")
    p.add_argument("--top-k", type=int, default=3,
                   help="labels listed in the window (at most as many as the model has)")
    p.add_argument("--headless", action="store_true", help="no window; one JSON line per frame")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--record", type=Path, default=None, help="write the annotated video (.mp4)")
    p.add_argument("--json", action="store_true", help="JSON lines also with a window")
    p.add_argument("--screenshots", type=Path, default=Path("."), help="where 's' saves PNGs")
    p.add_argument("--reconnect", type=float, default=5.0,
                   help="seconds to wait for a vanished camera to come back")
    p.add_argument("--collect", type=Path, default=None, metavar="DIR",
                   help="save training images into DIR/LABEL/ (the layout `python -m train --data DIR` reads): "
                        "the guide box's crop (the whole frame for files) with the c key, or every "
                        "--collect-every frames with --headless")
    p.add_argument("--label", type=label_arg, default=None, metavar="NAME",
                   help="the class of the collected images: their folder's name (letters, digits, spaces; "
                        "no / or \\, no leading dot, at most 64 characters)")
    p.add_argument("--collect-every", type=int, default=10, metavar="N",
                   help="with --headless, save every N-th frame (default 10)")
    args = p.parse_args(argv)
    if (args.collect is None) != (args.label is None):
        p.error("--collect DIR and --label NAME go together")
    if args.collect_every < 1:
        p.error("--collect-every must be at least 1")
    if args.top_k < 1:
        p.error("--top-k must be at least 1")
    if args.width < 32 or args.height < 32:
        p.error("--width and --height must be at least 32")
    return args


# --- the steps of one frame ------------------------------------------------------------------

def frame_roi(requested: Roi | None, source: Source, width: int, height: int) -> Roi | None:
    """Where to look in a ``width`` x ``height`` frame: ``--roi`` clipped to the frame, else the
    guide box of a live camera, else (a recorded source) the whole frame (None)."""
    if requested is not None:
        return requested.clipped(width, height)
    # the guide box is where a person holds the object up to a live camera; recorded
    # sources are framed by whoever made them, so they are searched whole
    return guide_box(width, height) if source.live else None


def shown_top_k(requested: int, labels: tuple[str, ...]) -> int:
    """How many labels the overlay lists: ``--top-k``, capped at the model's labels."""
    return min(requested, len(labels))


def classify(predictor: Predictor, frame: np.ndarray, roi: Roi | None) -> tuple[Prediction, float]:
    """The prediction for ``frame`` and how long inference took, in milliseconds."""
    t0 = time.perf_counter()
    prediction = predictor.predict(frame, roi=roi)
    return prediction, (time.perf_counter() - t0) * 1e3


def handle_key(key: int) -> str | None:
    """A key pressed in the window (``cv2.waitKey`` & 0xFF): "quit", "screenshot", "pause", "collect" or None."""
    return KEYS.get(key)


# --- the loop --------------------------------------------------------------------------------

class StopFlag:
    """Ctrl-C and SIGTERM end the loop between frames, so no output line is cut in half."""

    def __init__(self):
        self.signal: str | None = None  # the name of the signal that asked to stop

    def set(self, number: int, _frame: object = None) -> None:
        self.signal = signal.Signals(number).name

    def install(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> StopFlag:
        for sig in signals:
            signal.signal(sig, self.set)
        return self


@dataclass
class Demo:
    """One run of the demo: what it reads with, and what it carries from frame to frame."""
    args: argparse.Namespace
    predictor: Predictor
    source: Source
    resources: ExitStack  # closes the recording (renamed, or removed on an error) at the end
    started: float = field(default_factory=time.perf_counter)
    frames: int = 0
    latencies: list[float] = field(default_factory=list)
    paused: bool = False
    prediction: Prediction | None = None
    infer_ms: float = 0.0
    recorder: Recorder | None = None
    fps: FpsMeter = field(default_factory=FpsMeter)
    collected: int = 0  # training images saved (--collect)
    crop: np.ndarray | None = None  # the current frame's clean guide-box crop, while collecting

    def __post_init__(self):
        self.top_k = shown_top_k(self.args.top_k, self.predictor.contract.labels)
        self.emit = self.args.headless or self.args.json
        self.window = None if self.args.headless else WINDOW
        self.collect_folder = self.args.collect / self.args.label if self.args.collect is not None else None

    def loop(self, capture: CaptureThread, stop: StopFlag) -> str:
        """Take frames until something stops the demo; the reason."""
        try:
            while self.args.max_frames is None or self.frames < self.args.max_frames:
                if stop.signal:
                    return "interrupted"
                item = capture.take(timeout=0.5)
                if item is None:
                    if capture.ended:
                        return "lost" if capture.lost else "ended"
                    continue
                reason = self.on_frame(*item)
                if reason:
                    return reason
            return "max-frames"
        except KeyboardInterrupt:
            return "interrupted"

    def on_frame(self, frame: np.ndarray, stamp: float) -> str | None:
        """Classify, draw, record, log and show one frame; a reason to stop, if any."""
        height, width = frame.shape[:2]
        roi = frame_roi(self.args.roi, self.source, width, height)
        if self.collect_folder is not None:
            self.crop = roi_crop(frame, roi)  # before the overlay is drawn on the frame
        if not self.paused:
            self.prediction, self.infer_ms = classify(self.predictor, frame, roi)
        note = advice(frame, self.prediction, roi)  # before the overlay is drawn on the frame
        draw_overlay(frame, self.prediction, roi, self.fps.tick(), self.infer_ms, self.top_k, note)
        latency_ms = (time.perf_counter() - stamp) * 1e3
        self.latencies.append(latency_ms)
        self.frames += 1
        saved = None
        if self.collect_folder is not None and self.args.headless and self.frames % self.args.collect_every == 0:
            saved = self.collect()
        if self.collect_folder is not None:
            draw_note(frame, f"{self.args.label}: {self.collected} saved")
        self.record(frame)
        reason = None
        if self.window:  # before the JSON line, which then says what the c key saved
            reason, saved = self.show(frame)
        line = frame_record(self.frames, time.perf_counter() - self.started, self.prediction, latency_ms,
                            self.infer_ms, note)
        if saved is not None:
            line["saved"] = str(saved)
        if self.emit and not emit_json_line(line):
            return "closed"
        return reason

    def collect(self) -> Path | None:
        """Save the current crop into the label's folder; its path, or None when it could not be written."""
        saved = save_training_image(self.crop, self.collect_folder, self.args.label, self.collected + 1)
        if saved is not None:
            self.collected += 1
        return saved

    def record(self, frame: np.ndarray) -> None:
        """Append to ``--record``, opened at the first frame's size; a frame of another size (an
        image folder) is letterboxed into it, so every frame shown is a frame recorded."""
        if self.args.record is None:
            return
        if self.recorder is None:
            height, width = frame.shape[:2]
            self.recorder = self.resources.enter_context(
                video_writer(self.args.record, RECORD_FPS, (width, height)))
        self.recorder.write(frame)

    def show(self, frame: np.ndarray) -> tuple[str | None, Path | None]:
        """Show the frame and act on a key: a reason to stop ("no-display" or "quit"), if any, and
        the training image the c key saved, if any."""
        try:
            cv2.imshow(self.window, frame)
        except cv2.error:
            print("error: cannot open a window (no display?): use --headless", file=sys.stderr)
            return "no-display", None
        action = handle_key(cv2.waitKey(1) & 0xFF)
        saved = None
        if action == "screenshot":
            save_screenshot(frame, self.args.screenshots, self.frames)
        elif action == "pause":
            self.paused = not self.paused
        elif action == "collect" and self.collect_folder is not None:
            saved = self.collect()
        return ("quit" if action == "quit" else None), saved


# --- the end ---------------------------------------------------------------------------------

def summary(frames: int, elapsed_s: float, latencies: list[float], dropped: int, source: str,
            model: Path, reason: str) -> dict:
    """The last JSON line (``--headless``/``--json``), or the stderr line otherwise."""
    return {"summary": True, "frames": frames, "fps": round(frames / elapsed_s, 1) if elapsed_s else 0.0,
            "p95_latency_ms": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
            "median_latency_ms": round(float(np.median(latencies)), 3) if latencies else None,
            "dropped": dropped, "source": source, "model": str(model), "reason": reason}


def report(result: dict, emit: bool, reconnect_s: float) -> None:
    """The summary as JSON or as a sentence, and why a lost camera ended the demo."""
    if result["reason"] == "closed":
        return  # nobody reads stdout any more
    if emit:
        emit_json_line(result, flush=True)
    else:
        print(f"{result['frames']} frames at {result['fps']} FPS, p95 latency {result['p95_latency_ms']} ms "
              f"({result['reason']})", file=sys.stderr)
    if result["reason"] == "lost":
        print(f"error: {result['source']} disappeared and did not come back within {reconnect_s:.0f} s; "
              "check the cable or --source", file=sys.stderr)


def exit_code(reason: str) -> int:
    """0 ended/quit/max-frames/closed (stdout), 2 no display, 3 the camera was lost, 130 interrupted."""
    return EXIT_CODES.get(reason, EXIT_OK)


# --- the whole run ---------------------------------------------------------------------------

def open_inputs(args: argparse.Namespace) -> tuple[Predictor, Source] | None:
    """The model and the frame source; None (after saying why on stderr) when either fails."""
    try:
        return Predictor(args.model, num_threads=args.threads), open_source(args.source, args.width, args.height)
    except (ModelError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    try:
        if args.record is not None:
            check_record_path(args.record)  # before the model and the camera, not at the first frame
    except CannotWrite as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    if args.collect is not None:
        folder = args.collect / args.label
        try:
            check_writable(folder)  # before the model and the camera, not at the first saved frame
        except OSError as e:
            print(f"error: cannot write {folder}: {e.strerror or e}", file=sys.stderr)
            return EXIT_CANNOT_WRITE
    opened = open_inputs(args)
    if opened is None:
        return EXIT_NO_SOURCE
    stop = StopFlag().install()
    try:
        with ExitStack() as resources:  # unwound in reverse: the recording, the capture, the window
            demo = Demo(args, *opened, resources)
            if demo.window:
                resources.callback(cv2.destroyAllWindows)
            capture = CaptureThread(demo.source, reconnect_s=args.reconnect).start()
            resources.callback(capture.stop)
            reason = demo.loop(capture, stop)
    except CannotWrite as e:  # the recording failed: its temporary file is gone, an older one intact
        print(f"error: {e}; {args.record} was left as it was", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    result = summary(demo.frames, time.perf_counter() - demo.started, demo.latencies, capture.dropped,
                     demo.source.name, demo.predictor.model_path, reason)
    if demo.collect_folder is not None:
        result["collected"] = demo.collected
    report(result, demo.emit, args.reconnect)
    if demo.collect_folder is not None and not demo.emit and reason != "closed":
        print(f"{demo.collected} images saved in {demo.collect_folder}", file=sys.stderr)
    return exit_code(reason)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
