import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train import data
from train.data import FILES, DataError, parse_idx, read_verified

LABELS = FILES["test_labels"]


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def test_official_files_verify(fashion):
    assert fashion.train_images.shape == (60000, 28, 28)
    assert fashion.test_images.shape == (10000, 28, 28)
    assert fashion.train_images.dtype == np.uint8
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert fashion.checksums == {s.name: s.sha256 for s in FILES.values()}
    # DESIGN.md's reference statistics of the training pixels
    x = fashion.train_images / 255.0
    assert x.mean() == pytest.approx(0.2860406, abs=1e-6)
    assert x.std() == pytest.approx(0.3530242, abs=1e-6)


def test_parse_idx_accepts_a_well_formed_file(tmp_path):
    raw = idx_bytes(0x0801, (10000,), bytes(range(10)) * 1000)
    labels = parse_idx(raw, LABELS, tmp_path / "x")
    assert labels.shape == (10000,) and labels[:3].tolist() == [0, 1, 2]


@pytest.mark.parametrize("raw, message", [
    (b"\x00\x00", "truncated"),
    (idx_bytes(0x0803, (10000,), b""), "magic"),
    (idx_bytes(0x0801, (9999,), bytes(9999)), "dimensions"),
    (idx_bytes(0x0801, (10000,), bytes(9000)), "truncated or padded"),
    (idx_bytes(0x0801, (10000,), bytes(10001)), "truncated or padded"),
])
def test_parse_idx_refuses_malformed_headers(tmp_path, raw, message):
    with pytest.raises(DataError, match=message) as err:
        parse_idx(raw, LABELS, tmp_path / "bad-file")
    assert "bad-file" in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_checksum_mismatch_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x0801, (10000,), bytes(10000))))
    with pytest.raises(DataError, match="SHA-256") as err:
        read_verified(path, LABELS)
    assert str(path) in str(err.value)


def test_truncated_gzip_is_refused(tmp_path, fashion):
    good = gzip.compress(idx_bytes(0x0801, (10000,), fashion.test_labels.tobytes()))
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot be read or decompressed"):
        read_verified(path, LABELS)
    path.write_bytes(good)
    labels, digest = read_verified(path, LABELS)  # raw and gzip give the same checksum
    assert digest == LABELS.sha256 and (labels == fashion.test_labels).all()


def test_explicit_dir_with_a_corrupt_file_is_an_error(tmp_path, fashion, monkeypatch):
    for spec in FILES.values():  # copy the real files uncompressed
        key = next(k for k, v in FILES.items() if v is spec)
        array = getattr(fashion, key)
        (tmp_path / spec.name).write_bytes(
            struct.pack(f">I{array.ndim}I", spec.magic, *array.shape) + array.tobytes())
    assert data.load(tmp_path).checksums == fashion.checksums
    corrupt = bytearray((tmp_path / "train-labels-idx1-ubyte").read_bytes())
    corrupt[-1] ^= 1
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes(corrupt))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: SHA-256"):
        data.load()


def test_no_local_copy_and_no_download_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "candidate_dirs", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        data.load(allow_download=False)


def test_failed_download_leaves_no_partial_file(tmp_path):
    with pytest.raises(DataError, match="cannot download"):
        data.download(tmp_path, mirror="http://127.0.0.1:9/")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=6),
       fraction=st.floats(0.05, 0.5), seed=st.integers(0, 2**16))
def test_stratified_split_is_a_seeded_partition(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    keep, held = data.stratified_split(labels, fraction, seed)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(len(labels)))
    for c, n in enumerate(counts):
        assert (labels[held] == c).sum() == round(n * fraction)
    again = data.stratified_split(labels, fraction, seed)
    assert (again[0] == keep).all() and (again[1] == held).all()


def gzip_bomb(path, decompressed: int):
    """A small .gz that decompresses to ``decompressed`` zero bytes (written in chunks)."""
    chunk = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        for _ in range(decompressed // len(chunk)):
            f.write(chunk)
    return path


def test_a_gzip_bomb_is_refused_after_the_expected_size(tmp_path):
    import tracemalloc

    bomb = gzip_bomb(tmp_path / "t10k-labels-idx1-ubyte.gz", 256 << 20)  # 256 MB from about 250 KB
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="more than the 10008 bytes of t10k-labels-idx1-ubyte"):
            read_verified(bomb, LABELS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes held to refuse a 10 kB file"
    raw = tmp_path / "t10k-labels-idx1-ubyte"  # an oversized raw file: the same cap
    raw.write_bytes(idx_bytes(0x0801, (10000,), bytes(10000)) + bytes(1 << 20))
    with pytest.raises(DataError, match="more than the 10008 bytes"):
        read_verified(raw, LABELS)


class FakeResponse:
    """What urlopen returns: ``body`` in chunks, or endless bytes; counts what was read."""

    def __init__(self, body: bytes | None, length: int | None = None):
        self.body, self.sent = body, 0
        self.headers = {"Content-Length": str(length)} if length else {}

    def read(self, n: int) -> bytes:
        if self.body is None:  # a server that never stops
            chunk = b"\x1f" * n
        else:
            chunk = self.body[self.sent:self.sent + n]
        self.sent += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_urlopen(monkeypatch, response: FakeResponse) -> list[str]:
    urls = []

    def urlopen(url, timeout):
        urls.append(url)
        return response

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(data, "FILES", {"test_labels": LABELS})  # one small file
    return urls


def test_the_download_is_https_and_verified(tmp_path, monkeypatch, fashion):
    assert data.MIRRORS and all(url.startswith("https://") for url in data.MIRRORS)
    body = gzip.compress(idx_bytes(0x0801, (10000,), fashion.test_labels.tobytes()))
    urls = fake_urlopen(monkeypatch, FakeResponse(body, len(body)))
    assert data.download(tmp_path) == tmp_path
    assert urls == [f"{data.MIRRORS[0]}t10k-labels-idx1-ubyte.gz"]
    assert read_verified(tmp_path / "t10k-labels-idx1-ubyte.gz", LABELS)[1] == LABELS.sha256


def test_an_endless_download_is_cut_at_the_cap_and_deleted(tmp_path, monkeypatch):
    endless = FakeResponse(None)
    urls = fake_urlopen(monkeypatch, endless)
    cap = data.download_cap(LABELS)
    assert LABELS.size < cap < 2 * LABELS.size
    with pytest.raises(DataError, match=f"more than the {cap} bytes a Fashion-MNIST file can take"):
        data.download(tmp_path)
    assert len(urls) == len(data.MIRRORS) and endless.sent == (cap + 1) * len(urls)  # each mirror, no more
    assert list(tmp_path.iterdir()) == []


def test_a_download_announced_too_large_is_refused_unread(tmp_path, monkeypatch):
    response = FakeResponse(bytes(100), length=10 << 30)
    fake_urlopen(monkeypatch, response)
    with pytest.raises(DataError, match="10737418240 bytes announced"):
        data.download(tmp_path)
    assert response.sent == 0 and list(tmp_path.iterdir()) == []
