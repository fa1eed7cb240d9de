"""Reading the metadata every model carries: the contract, plus version and provenance.

ONNX models keep it as the JSON value of ``metadata_props[METADATA_KEY]``; TFLite models
as the zip member ``METADATA_MEMBER`` appended to the flatbuffer (the same trick as
tflite-support's associated files), readable with the standard library alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from runtime.contract import Contract, ContractError
from runtime.integrity import graph_digest

METADATA_KEY = "fashion_edge"
METADATA_MEMBER = "fashion_edge.json"
LABELS_MEMBER = "labels.txt"  # the standard TFLite metadata's label file (export.tflite_metadata)
# Ours take a few KB (labels, contract, provenance); 10,000 labels of 50 characters fit in 1 MiB.
# A zip member is read no further than this, however large it says it is or inflates to.
MAX_METADATA_BYTES = 1 << 20
# Set to 1 to refuse models without a checksum (made by other tools, or with the key removed).
REQUIRE_INTEGRITY_ENV = "FASHION_EDGE_REQUIRE_INTEGRITY"


class ModelError(RuntimeError):
    """A model file is missing, truncated, corrupt, unsupported or lacks our metadata."""


@dataclass(frozen=True)
class ModelInfo:
    contract: Contract
    version: str
    test_accuracy: float | None
    raw: dict  # the whole metadata, as embedded

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @classmethod
    def from_json(cls, text: str, path: Path) -> ModelInfo:
        if len(text) > MAX_METADATA_BYTES:
            raise ModelError(f"{path}: its metadata is larger than {MAX_METADATA_BYTES} bytes: not ours; "
                             "re-export the model with `python -m export`")
        try:
            meta = json.loads(text)
            contract = Contract.from_metadata(meta)
        except (ValueError, TypeError, RecursionError) as e:  # ContractError is a ValueError
            raise ModelError(f"{path}: invalid embedded metadata: {e}; re-export the model with "
                             "`python -m export` (the keys are in docs/model-contract.md)") from e
        training = meta.get("training")
        accuracy = training.get("test_accuracy") if isinstance(training, dict) else None
        return cls(contract, str(meta.get("model_version", "unknown")),
                   accuracy if isinstance(accuracy, (int, float)) else None, meta)

    def check_integrity(self, path: Path, graph: bytes | None = None) -> None:
        """Verify ``integrity.sha256`` when the metadata has one (our exports since format 2); with
        ``FASHION_EDGE_REQUIRE_INTEGRITY=1`` a model without one is refused too. ``graph``: the bytes
        hashed, when they are not the file's (runtime.integrity)."""
        integrity = self.raw.get("integrity")
        if integrity is None:
            if os.environ.get(REQUIRE_INTEGRITY_ENV, "") not in ("", "0"):
                raise ModelError(f"{path}: no checksum in its metadata, and {REQUIRE_INTEGRITY_ENV} is set: "
                                 "use a model exported by `python -m export`, or unset it")
            return
        expected = integrity.get("sha256") if isinstance(integrity, dict) else None
        try:
            actual = hashlib.sha256(graph).hexdigest() if graph is not None else graph_digest(path)
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: cannot read the graph to verify its checksum ({e}); "
                             "the file is corrupt: re-export or re-download it") from None
        if actual != expected:
            raise ModelError(f"{path}: the graph's SHA-256 does not match the checksum in its metadata: "
                             "the file is corrupt or was changed after export; re-export or re-download it")

    def check_graph(self, input_shape: list, output_shape: list, path: Path) -> None:
        """Refuse a model whose metadata does not describe its graph."""
        try:
            self.contract.check_graph(input_shape, output_shape)
        except ContractError as e:
            raise ModelError(f"{path}: {e}; fix the metadata or re-export the model") from None


def read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes | None:
    """A zip member's bytes, bounded whatever it inflates to; None when there is none; ModelError when
    there are two (which one a reader takes is the zip library's choice)."""
    count = archive.namelist().count(name)
    if count > 1:
        raise ModelError(f"{path}: {count} members named {name}: the file was changed after export; re-export it")
    if count == 0:
        return None
    with archive.open(name) as member:
        return member.read(MAX_METADATA_BYTES + 1)


def read_tflite_metadata(path: Path) -> str:
    """Our metadata (JSON text) from the zip appended to a .tflite; ModelError when there is none, or
    when the standard ``labels.txt`` beside it names other labels (MediaPipe would show those)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = read_member(archive, METADATA_MEMBER, path)
            labels = read_member(archive, LABELS_MEMBER, path)
            if data is None:
                raise KeyError(METADATA_MEMBER)
    except ModelError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, NotImplementedError, EOFError,
            zlib.error) as e:
        raise ModelError(f"{path}: no readable {METADATA_MEMBER} inside; export models with "
                         "`python -m export --format tflite`") from e
    if len(data) > MAX_METADATA_BYTES:
        raise ModelError(f"{path}: its {METADATA_MEMBER} is larger than {MAX_METADATA_BYTES} bytes: not our "
                         "metadata; re-export the model with `python -m export --format tflite`")
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise ModelError(f"{path}: its {METADATA_MEMBER} is not UTF-8 text; re-export the model") from e
    if labels is not None:
        try:
            ours = json.loads(text).get("labels")
        except (ValueError, AttributeError, RecursionError):
            ours = None  # invalid metadata: ModelInfo.from_json says what is wrong
        if ours is not None and labels.decode(errors="replace").splitlines() != ours:
            raise ModelError(f"{path}: its {LABELS_MEMBER} names other labels than its {METADATA_MEMBER}: the file "
                             "was changed after export; re-export it")
    return text
