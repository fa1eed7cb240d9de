"""The domain: one worker's model and what is done with an upload, without HTTP.

``Service`` holds the model (a Predictor and its contract) and the server's limits; it decodes
for the model (each image shrunk to the working size as it is decoded; a batch's pixels budgeted
as a whole), classifies, saves collected images and shapes the answers. It knows no HTTP: what it
refuses, it raises as a ``ServiceError`` (runtime.serve.errors) whose ``status`` the routes answer
with. A test or a script can call it directly.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import shutil
from pathlib import Path
from time import perf_counter

import numpy as np
from PIL import Image

from runtime import collect as collecting
from runtime.files import atomic_path
from runtime.images import BadImage, Decoded, OverBudget, decode
from runtime.predictor import Prediction, Predictor, is_model_pixels
from runtime.preprocess import Prepared, prepare
from runtime.roi import Roi
from runtime.serve import metrics
from runtime.serve.config import ServeConfig
from runtime.serve.errors import BadUpload, CannotSave, LimitReached, Unprocessable
from runtime.serve.memory import release_memory
from runtime.serve.work import WorkQueue

log = logging.getLogger(__name__)
WORK_THREADS = 1  # decodes + inferences at once per worker process (one worker per core)
QUEUE_BODIES = 4  # requests waiting for the worker thread hold at most this many --max-bytes of bodies
DEFAULT_TOP_K = 3  # or every label, for a model with fewer
JPEG_QUALITY = 92  # a lossy upload stored again: about its own size, for a phone's or a browser's JPEG
STORED_TTL = 2.0  # seconds between counts of the collect folder's bytes
MIN_FREE_BYTES = 256 << 20  # collect refuses (507) to leave the disk with less free than this
STORED_PER_UPLOADED, STORED_SLACK = 4, 64 << 10  # a collected image is stored in at most 4x its upload + 64 KB


class Service:
    """One worker's model (a Predictor, safe to share between threads, and its contract) and the
    server's limits.

    Methods raise a ``ServiceError`` (its ``status``: the 4xx or 5xx that says the same) for what
    they refuse; everything else is plain Python, so tests can call ``classify_bytes`` and friends
    without a client.
    """

    def __init__(self, config: ServeConfig, predictor: Predictor | None = None):
        self.config = config
        self.predictor = predictor or Predictor(config.model, num_threads=config.threads, spin=False)
        self.info = self.predictor.info
        self.contract = self.predictor.contract
        self.max_top_k = len(self.contract.labels)
        self.default_top_k = min(DEFAULT_TOP_K, self.max_top_k)
        self.model = {"file": self.predictor.model_path.name, "version": self.info.version}
        self.max_batch_pixels = config.max_batch_pixels or 4 * config.max_pixels
        # at most --max-concurrent requests wait (the same bound as the middleware's), within a body budget
        self.work = WorkQueue(WORK_THREADS, config.max_concurrent, QUEUE_BODIES * config.max_bytes)
        self.stored = (0, -float("inf"))  # the collect folder's bytes, and when they were counted

    def metadata(self) -> dict:
        """GET /v1/model: the embedded metadata as it is, the file name, and the contract in one
        normalised shape whatever the metadata's format_version (what the web page reads)."""
        c = self.contract
        contract = {"labels": list(c.labels),
                    "input": {"height": c.height, "width": c.width, "channels": c.channels,
                              "range": list(c.value_range)},
                    "preprocessing": {"kind": c.preprocessing}}
        return {"file": self.model["file"], **self.info.raw, "contract": contract,
                "collect": self.config.collect is not None}

    def collect_bytes(self, data: bytes, label: str) -> dict:
        """One uploaded image -> an image in the collect folder's ``label`` sub-folder (the answer of
        POST /v1/collect). Decoded like an image to classify (the same limits, shrunk to the working
        size) but in colour, whatever the current model takes, since the folder may train a colour
        model; encoded again (the client's bytes are never stored as they are): PNG, or JPEG for a
        lossy upload (JPEG, lossy WebP), which a lossless format would store many times larger.

        Slow (decoding, encoding, the disk): call it in a worker thread (``WorkQueue.run``)."""
        root = Path(self.config.collect)
        folder = root / label
        try:
            count = collecting.count_images(folder)
            new_label = count == 0 and not folder.is_dir()
            labels = collecting.count_labels(root) if new_label else 0
            stored, free = self.stored_bytes(root), shutil.disk_usage(root).free
        except OSError as e:  # an unreadable folder
            raise cannot_save(label, e) from None
        if stored >= self.config.collect_max_bytes:
            raise LimitReached(f"the collect folder holds {stored:,} bytes of images, the most this server keeps "
                               "(--collect-max-bytes)")
        if free < MIN_FREE_BYTES:
            raise cannot_save(label, OSError(errno.ENOSPC, "the disk is almost full"))
        if count >= self.config.collect_max:
            raise LimitReached(f"{label!r} has {count:,} images, the most this server keeps per label "
                               "(--collect-max)")
        if new_label and labels >= self.config.collect_max_labels:
            raise LimitReached(f"there are {labels:,} labels already, the most this server keeps "
                               "(--collect-max-labels)")
        decoded = self.decode(data, channels=3)
        try:
            pixels = decoded.pixels[..., ::-1]  # BGR -> RGB
            image = Image.fromarray(np.ascontiguousarray(pixels))
            lossy = decoded.lossy
            kind, suffix, options = ("JPEG", ".jpg", {"quality": JPEG_QUALITY}) if lossy else ("PNG", ".png", {})
            path = collecting.new_image_path(folder, label, count + 1, unique=True, suffix=suffix)
            encoded = io.BytesIO()
            image.save(encoded, kind, **options)
            if encoded.tell() > STORED_PER_UPLOADED * len(data) + STORED_SLACK:
                raise BadUpload(f"stored as {kind} this image would take {encoded.tell():,} bytes, more than "
                                f"{STORED_PER_UPLOADED} times the {len(data):,} sent; send it as {kind}", 413)
            with atomic_path(path) as tmp:
                tmp.write_bytes(encoded.getvalue())
            self.stored = (self.stored[0] + encoded.tell(), self.stored[1])
            count = collecting.count_images(folder)
        except OSError as e:  # a full disk, a read-only folder, a file in the way
            raise cannot_save(label, e) from None
        finally:
            release_memory(decoded.declared_pixels)
        return {"saved": f"{label}/{path.name}", "label": label, "count": count}

    def stored_bytes(self, root: Path) -> int:
        """What the collect folder holds: counted again at most every STORED_TTL seconds (the other workers
        write too), this worker's own images added meanwhile."""
        if perf_counter() - self.stored[1] > STORED_TTL:
            self.stored = (collecting.stored_bytes(root), perf_counter())
        return self.stored[0]

    def decode(self, data: bytes, prefix: str = "", budget: int | None = None,
               channels: int | None = None) -> Decoded:
        """Image bytes -> the pixels the model's contract takes (gray or BGR, or ``channels``; at most
        about twice the working size); BadUpload (a 4xx) when unusable or too costly. ``budget``: the
        pixels a batch has left."""
        try:
            return decode(data, self.config.max_pixels, channels or self.contract.channels, budget)
        except OverBudget as e:
            raise BadUpload(f"{prefix}the batch's images add up to more than {self.max_batch_pixels:,} "
                            f"pixels ({e})", 413) from None
        except BadImage as e:
            raise BadUpload(prefix + str(e), e.status) from None

    def classify_bytes(self, data: bytes, top_k: int, roi: Roi | None, started: float) -> dict:
        """One uploaded image -> the answer of POST /v1/classify (``roi`` in the upload's pixels).

        Slow (decoding, preprocessing): call it in a worker thread (``WorkQueue.run``)."""
        decoded = self.decode(data)
        try:
            region = decoded_region(roi, decoded)
            prediction = self.predictor.predict(decoded.pixels, region)
        except ValueError as e:  # a roi outside the image
            raise Unprocessable(str(e)) from None
        finally:
            release_memory(decoded.declared_pixels)
        return self.answer(prediction, decoded, top_k, started)

    def classify_batch(self, images: list[bytes], top_k: int, started: float) -> dict:
        """Several uploaded images, one inference call -> the answer of POST /v1/classify/batch.

        The images' declared pixels may add up to ``max_batch_pixels``; each is decoded, shrunk and
        prepared for the model as it comes, so only model-sized arrays wait for the inference.
        Slow: call it in a worker thread (``WorkQueue.run``)."""
        budget, inputs = self.max_batch_pixels, []
        try:
            for i, data in enumerate(images):
                decoded = self.decode(data, f"image {i + 1}: ", budget)
                budget -= decoded.declared_pixels
                inputs.append(self.batch_input(decoded))
                del decoded
            try:
                predictions = self.predictor.predict_batch([pixels for pixels, _, _ in inputs])
            except ValueError as e:
                raise Unprocessable(str(e)) from None
        finally:
            release_memory(self.max_batch_pixels - budget)
        results = [self.answer(with_prepared(p, prepared), decoded, top_k, started)
                   for p, (_, prepared, decoded) in zip(predictions, inputs)]
        return {"results": results, "model": self.model, "latency_ms": elapsed_ms(started)}

    def batch_input(self, decoded: Decoded) -> tuple[np.ndarray, Prepared | None, Decoded]:
        """What a batch keeps of one decoded image until the inference: pixels of the model's input
        size as they are, anything else prepared for the model now (and the decoded pixels dropped).

        A prepared image is of the model's size, so ``predict_batch`` only rescales it: given in
        OpenCV's BGR order (it swaps colour to the model's RGB), exactly the same model input."""
        if is_model_pixels(decoded.pixels, self.contract):
            return decoded.pixels, None, decoded
        prepared = prepare(decoded.pixels, self.contract)
        image = prepared.image if self.contract.channels == 1 else prepared.image[..., ::-1]
        return image, prepared, dataclasses.replace(decoded, pixels=np.empty((0, 0), np.uint8))

    def answer(self, prediction: Prediction, decoded: Decoded, top_k: int, started: float) -> dict:
        """One image's JSON answer; the box back in the uploaded image's pixels."""
        box = prediction.box
        if box is not None and decoded.scale != 1:
            width, height = decoded.size
            x, y, w, h = (round(v / decoded.scale) for v in box)
            x, y = min(x, width - 1), min(y, height - 1)
            box = (x, y, max(1, min(w, width - x)), max(1, min(h, height - y)))
        metrics.PREDICTIONS.labels(prediction.label).inc()
        return {"label": prediction.label, "index": prediction.index, "confidence": round(prediction.confidence, 6),
                "top_k": [{"label": label, "confidence": round(p, 6)} for label, p in prediction.top_k(top_k)],
                "object_found": prediction.object_found, "box": box, "model": self.model,
                "latency_ms": elapsed_ms(started)}


def cannot_save(label: str, error: OSError) -> CannotSave:
    """A collected image the disk would not take (logged with the path; the message names the label only)."""
    log.warning("cannot save a collected image of %r: %s", label, error)
    return CannotSave(f"cannot save the image under {label}/: {error.strerror or type(error).__name__}")


def with_prepared(prediction: Prediction, prepared: Prepared | None) -> Prediction:
    """A batch image's prediction with what its early preparation found (and where, in decoded pixels)."""
    if prepared is None:
        return prediction
    return dataclasses.replace(prediction, object_found=prepared.found, box=prepared.box)


def decoded_region(roi: Roi | None, decoded: Decoded) -> Roi | None:
    """A roi in the uploaded image's pixels -> the same region in the decoded pixels.

    Checked against the upload's own size (so the message speaks in the user's pixels), then
    scaled; clipped, so rounding at a downscaled JPEG's edge cannot push it out."""
    if roi is None:
        return None
    height, width = decoded.pixels.shape[:2]
    return roi.check_inside(*decoded.size).scaled(decoded.scale).clipped(width, height)


def elapsed_ms(started: float) -> float:
    return round((perf_counter() - started) * 1000, 3)
