"""python -m camera_demo: classify webcam frames in real time (window or headless).

Keys in the window: q or Esc quits, s saves a screenshot, space pauses.
Exit codes: 0 the stream ended or you quit, 2 no source/model, 3 the camera was lost,
130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_NO_SOURCE, EXIT_LOST, EXIT_INTERRUPTED = 0, 2, 3, 130


def parse_roi(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--roi wants x,y,w,h in pixels, got {text!r}") from None
    if w < 1 or h < 1 or x < 0 or y < 0:
        raise argparse.ArgumentTypeError(f"--roi {text}: needs x, y >= 0 and w, h >= 1")
    return x, y, w, h


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m camera_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="default: the bundled int8 model")
    p.add_argument("--source", default="0",
                   help="camera index, 'picamera2', 'synthetic', a video file or an image directory")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--roi", type=parse_roi, default=None,
                   help="x,y,w,h where to look (default: the centred guide box for a live camera, "
                        "the whole frame for files)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--headless", action="store_true", help="no window; one JSON line per frame")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--record", type=Path, default=None, help="write the annotated video (.mp4)")
    p.add_argument("--json", action="store_true", help="JSON lines also with a window")
    p.add_argument("--screenshots", type=Path, default=Path("."), help="where 's' saves PNGs")
    p.add_argument("--reconnect", type=float, default=5.0,
                   help="seconds to wait for a vanished camera to come back")
    args = p.parse_args(argv)
    if not 1 <= args.top_k <= 10:
        p.error("--top-k must be between 1 and 10")
    if args.width < 32 or args.height < 32:
        p.error("--width and --height must be at least 32")
    return args


class Recorder:
    """Annotated frames to an .mp4, written under a temporary name and renamed when closed."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import cv2

        self.path, self.tmp = path, path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise OSError(f"cannot write video {path}")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()
        os.replace(self.tmp, self.path)


def run(args: argparse.Namespace) -> int:
    import cv2

    from camera_demo.capture import CaptureThread
    from camera_demo.overlay import FpsMeter, draw_overlay, guide_box
    from camera_demo.sources import SourceError, open_source
    from runtime import ModelError, Predictor

    try:
        predictor = Predictor(args.model, num_threads=args.threads)
        source = open_source(args.source, args.width, args.height)
    except (ModelError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NO_SOURCE
    emit = args.headless or args.json
    window = None if args.headless else "fashion-edge camera demo"
    # Ctrl-C and SIGTERM end the loop between frames, so no output line is cut in half
    stop = {"signal": None}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: stop.update(signal=signal.Signals(number).name))
    capture = CaptureThread(source, reconnect_s=args.reconnect).start()
    fps_meter, latencies, recorder = FpsMeter(), [], None
    frames, paused, reason, prediction, infer_ms = 0, False, "ended", None, 0.0
    started = time.perf_counter()
    try:
        while args.max_frames is None or frames < args.max_frames:
            if stop["signal"]:
                reason = "interrupted"
                break
            item = capture.take(timeout=0.5)
            if item is None:
                if capture.ended:
                    reason = "lost" if capture.lost else "ended"
                    break
                continue
            frame, stamp = item
            height, width = frame.shape[:2]
            # the guide box is where a person holds the garment up to a live camera; recorded
            # sources are framed by whoever made them, so they are searched whole
            if args.roi:
                roi = clip_roi(args.roi, width, height)
            else:
                roi = guide_box(width, height) if source.live else None
            if not paused:
                t0 = time.perf_counter()
                prediction = predictor.predict(frame, roi=roi)
                infer_ms = (time.perf_counter() - t0) * 1e3
            draw_overlay(frame, prediction, roi, fps_meter.tick(), infer_ms, args.top_k)
            latency_ms = (time.perf_counter() - stamp) * 1e3
            latencies.append(latency_ms)
            frames += 1
            if args.record and recorder is None:
                recorder = Recorder(args.record, 30.0, (width, height))
            if recorder:
                recorder.write(frame)
            if emit:
                print(json.dumps({"frame": frames, "t": round(time.perf_counter() - started, 4),
                                  "label": prediction.label, "index": prediction.index,
                                  "confidence": round(prediction.confidence, 4),
                                  "object_found": prediction.object_found,
                                  "latency_ms": round(latency_ms, 3), "infer_ms": round(infer_ms, 3)}),
                      flush=False)
            if window:
                try:
                    cv2.imshow(window, frame)
                except cv2.error:
                    print("error: cannot open a window (no display?): use --headless", file=sys.stderr)
                    reason = "no-display"
                    break
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    reason = "quit"
                    break
                if key == ord("s"):
                    shot = args.screenshots / f"camera_demo_{time.strftime('%Y%m%d_%H%M%S')}_{frames}.png"
                    cv2.imwrite(str(shot), frame)
                    print(f"saved {shot}", file=sys.stderr)
                if key == ord(" "):
                    paused = not paused
        else:
            reason = "max-frames"
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        capture.stop()
        if recorder:
            recorder.close()
        if window:
            cv2.destroyAllWindows()
    elapsed = time.perf_counter() - started
    summary = {"summary": True, "frames": frames, "fps": round(frames / elapsed, 1) if elapsed else 0.0,
               "p95_latency_ms": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
               "median_latency_ms": round(float(np.median(latencies)), 3) if latencies else None,
               "dropped": capture.dropped, "source": source.name, "model": str(predictor.model_path),
               "reason": reason}
    if emit:
        print(json.dumps(summary), flush=True)
    else:
        print(f"{frames} frames at {summary['fps']} FPS, p95 latency {summary['p95_latency_ms']} ms "
              f"({reason})", file=sys.stderr)
    if reason == "lost":
        print(f"error: {source.name} disappeared and did not come back within {args.reconnect:.0f} s; "
              "check the cable or --source", file=sys.stderr)
        return EXIT_LOST
    if reason == "no-display":
        return EXIT_NO_SOURCE
    return EXIT_INTERRUPTED if reason == "interrupted" else EXIT_OK


def clip_roi(roi: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The requested box, clipped to the frame (frames may be smaller than asked)."""
    x, y, w, h = roi
    x, y = min(x, width - 1), min(y, height - 1)
    return x, y, max(1, min(w, width - x)), max(1, min(h, height - y))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
