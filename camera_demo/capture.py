"""A capture thread that keeps only the newest frame, so lag never builds up."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from camera_demo.sources import Source

log = logging.getLogger(__name__)


class CaptureThread:
    """Reads ``source`` in the background.

    Live sources: the newest frame replaces an unread one (dropped frames are counted).
    Files: the reader waits until the previous frame was taken, so none is skipped.
    A live source that stops delivering is reopened every ``retry_s`` for ``reconnect_s``.
    """

    def __init__(self, source: Source, reconnect_s: float = 5.0, retry_s: float = 0.5):
        self.source, self.reconnect_s, self.retry_s = source, reconnect_s, retry_s
        self.condition = threading.Condition()
        self.frame: np.ndarray | None = None
        self.stamp = 0.0
        self.dropped = 0
        self.ended = False
        self.lost = False  # a live device vanished and did not come back
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> "CaptureThread":
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self.stopping:
                frame = self.source.read()
                if frame is None:
                    if self.source.live and self._reconnect():
                        continue
                    break
                self._publish(frame)
        except Exception:  # a driver error must end the loop cleanly, not hang the demo
            log.exception("capture failed")
            self.lost = self.source.live
        finally:
            with self.condition:
                self.ended = True
                self.condition.notify_all()

    def _publish(self, frame: np.ndarray) -> None:
        with self.condition:
            if not self.source.live:
                while self.frame is not None and not self.stopping:
                    self.condition.wait(0.1)
            elif self.frame is not None:
                self.dropped += 1
            self.frame, self.stamp = frame, time.perf_counter()
            self.condition.notify_all()

    def _reconnect(self) -> bool:
        log.warning("%s stopped delivering frames: reopening for up to %.0f s", self.source.name,
                    self.reconnect_s)
        deadline = time.monotonic() + self.reconnect_s
        while not self.stopping and time.monotonic() < deadline:
            self.source.close()
            if self.source.reopen():
                log.warning("%s is back", self.source.name)
                return True
            time.sleep(self.retry_s)
        self.lost = True
        return False

    def take(self, timeout: float = 1.0) -> tuple[np.ndarray, float] | None:
        """The newest unread frame and its capture time; None when the stream has ended."""
        with self.condition:
            deadline = time.monotonic() + timeout
            while self.frame is None and not self.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.condition.wait(remaining)
            if self.frame is None:
                return None
            frame, stamp, self.frame = self.frame, self.stamp, None
            self.condition.notify_all()
            return frame, stamp

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        self.thread.join(timeout=2.0)
        self.source.close()
