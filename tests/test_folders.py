"""Your own classes: python -m train --data DIR on small generated folders of images."""

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.collect import check_label
from train import folder_files, folders
from train.folders import FolderError, load_folder

ROOT = Path(__file__).parents[1]
LABELS = ("disc", "horizontal bar", "vertikal ä")  # sorted; a space and a non-ASCII letter
# Labels POST /v1/collect once accepted and training then refused or read as splits: NBSP, a line separator, an RTL
# mark, a zero-width joiner, a BOM, an unassigned code point, a private-use character, split names in any case.
REFUSED_LABELS = ["shirt\u00a0", "shirt\u2028", "a\u200fb", "a\u200db", "\ufeffshirt", "a\u0378", "a\ue000", "train",
                  "val", "Validation", "TEST"]
JUNK_LABELS = ["thumbs.db", "__MACOSX", "Desktop.ini"]  # ...or skipped: the uploads lost


def shape(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A bright shape on a dark, noisy background: a disc, a horizontal or a vertical bar."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-3, 3, 2)
    if kind == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (size * rng.uniform(0.22, 0.32)) ** 2
    elif kind == "horizontal bar":
        mask = (np.abs(yy - cy) < size * 0.1) & (np.abs(xx - cx) < size * 0.4)
    else:
        mask = (np.abs(xx - cx) < size * 0.1) & (np.abs(yy - cy) < size * 0.4)
    image = rng.normal(30, 8, (size, size)) + mask * rng.uniform(150, 210)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class=24, labels=LABELS, seed=0, size=32) -> Path:
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else dict.fromkeys(labels, per_class)
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(shape(label, rng, size)).save(root / label / f"{i:03d}.png")
    return root


def test_one_folder_per_class(tmp_path):
    data = load_folder(make_folder(tmp_path / "shapes"))
    assert data.contract.labels == LABELS
    assert (data.contract.height, data.contract.width, data.contract.channels) == (32, 32, 1)
    assert data.contract.preprocessing == "resize" and data.contract.color == "gray"
    assert data.train_images.shape == (72, 32, 32) and data.train_images.dtype == np.uint8
    assert np.bincount(data.train_labels).tolist() == [24, 24, 24]
    assert data.val_images is None and data.val_labels is None
    assert data.test_is_validation  # no test/: the test figures are on the validation images
    assert np.bincount(data.test_labels, minlength=3).min() >= 1
    assert data.counts == {"train": dict.fromkeys(LABELS, 24)} and data.skipped == []
    assert len(data.checksums["files"]) == 64 and data.source == tmp_path / "shapes"


def test_the_runtime_prepares_every_image(tmp_path):
    """An image of another size is stored exactly as runtime.preprocess.prepare makes it."""
    from runtime.preprocess import prepare

    root = make_folder(tmp_path / "shapes", per_class=4)
    big = shape("disc", np.random.default_rng(5), 80)
    Image.fromarray(big).save(root / "disc" / "zz_big.png")
    data = load_folder(root)
    expected = np.round(prepare(big, data.contract).image[..., 0] * 255).astype(np.uint8)
    assert np.array_equal(data.train_images[4], expected)  # sorted: the disc's 5th file


def test_train_val_test_folders(tmp_path):
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        make_folder(tmp_path / "d" / split, per_class=n, seed=len(split))
    data = load_folder(tmp_path / "d")
    assert data.train_images.shape[0] == 30 and data.val_images.shape[0] == 9 and data.test_images.shape[0] == 12
    assert not data.test_is_validation
    assert data.counts["val"] == dict.fromkeys(LABELS, 3) and data.counts["test"] == dict.fromkeys(LABELS, 4)

    from train.trainer import TrainConfig, make_splits

    splits = make_splits(data, TrainConfig())
    assert len(splits.y_train) == 30 and len(splits.y_val) == 9 and len(splits.y_test) == 12
    assert splits.repeats is None


def test_train_and_val_without_test(tmp_path):
    make_folder(tmp_path / "d" / "train", per_class=6)
    make_folder(tmp_path / "d" / "validation", per_class=2, seed=1)
    data = load_folder(tmp_path / "d")
    assert data.test_is_validation and np.array_equal(data.test_images, data.val_images)


def test_validation_is_carved_from_train_with_every_class(tmp_path):
    from train.trainer import TrainConfig, make_splits

    data = load_folder(make_folder(tmp_path / "d", per_class={"disc": 2, "horizontal bar": 30, "vertikal ä": 3}))
    splits = make_splits(data, TrainConfig())
    assert np.bincount(splits.y_val, minlength=3).min() >= 1
    assert np.bincount(splits.y_train, minlength=3).min() >= 1
    assert len(splits.y_train) + len(splits.y_val) == 35
    # no test/: the report's test images are the validation images, the same ones as load_folder's
    assert np.array_equal(splits.y_test, splits.y_val)
    assert np.array_equal(np.sort(data.test_labels), np.sort(splits.y_val))


def test_fashion_mnist_split_is_unchanged():
    """A class of at least two images on each side: the official 500 of 6,000 per class stay the same."""
    from train.data import stratified_split

    labels = np.repeat(np.arange(10), 6000).astype(np.uint8)
    old = stratified_split(labels, 1 / 12, 42)
    new = stratified_split(labels, 1 / 12, 42, min_each=1)
    assert all(np.array_equal(a, b) for a, b in zip(old, new)) and len(new[1]) == 5000
    assert folders.oversampling(labels, 10) is None


def test_junk_files_are_skipped_with_one_warning(tmp_path, caplog):
    root = make_folder(tmp_path / "d", per_class=4)
    (root / "disc" / "empty.png").write_bytes(b"")
    (root / "disc" / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    Image.fromarray(shape("disc", np.random.default_rng(1))).save(buffer, format="PNG")
    (root / "horizontal bar" / "truncated.png").write_bytes(buffer.getvalue()[:200])
    (root / "disc" / ".DS_Store").write_bytes(b"\0\1junk")  # hidden: skipped silently
    (root / "disc" / ".thumbnails").mkdir()
    (root / "disc" / ".thumbnails" / "x.png").write_bytes(b"junk")
    (root / ".git").mkdir()  # a hidden folder is no class
    with caplog.at_level(logging.INFO, logger="train.folders"):
        data = load_folder(root)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "skipped 3" in message and "empty.png" in message and "truncated.png" in message
    assert ".DS_Store" not in message and "x.png" not in message
    assert sorted(p for p, _ in data.skipped) == ["disc/empty.png", "disc/notes.txt", "horizontal bar/truncated.png"]
    assert data.contract.labels == LABELS and len(data.train_labels) == 12


def test_imbalance_is_reported_and_weighted(tmp_path):
    from train.pipeline import data_record
    from train.trainer import TrainConfig, make_splits

    counts = {"disc": 24, "horizontal bar": 24, "vertikal ä": 6}
    data = load_folder(make_folder(tmp_path / "d", per_class=counts))
    assert data.counts["train"] == counts
    splits = make_splits(data, TrainConfig())
    n, have = len(splits.y_train), np.bincount(splits.y_train)
    assert splits.repeats == {0: 1, 1: 1, 2: round(have[0] / have[2])} and splits.repeats[2] >= 3
    epoch = np.bincount(splits.y_train[splits.epoch_indices()])
    assert epoch.max() <= 1.5 * epoch.min()  # balanced sampling
    record = data_record(data, splits)
    assert record["kind"] == "folder" and record["folder_counts"]["train"] == counts
    assert set(record["oversampling"]) == set(LABELS)
    assert sum(record["per_class"]["train"].values()) == record["train"] == n
    json.dumps(record)  # goes into train_report.json


def test_gray_colour_rgba_16_bit_and_palette(tmp_path):
    root = make_folder(tmp_path / "d", per_class=3)
    rng = np.random.default_rng(2)
    disc = shape("disc", rng)
    Image.fromarray((disc.astype(np.uint16) * 257)).save(root / "disc" / "sixteen.png")  # I;16
    Image.fromarray(disc).convert("P").save(root / "disc" / "palette.png")
    Image.fromarray(np.stack([disc] * 3, -1)).save(root / "disc" / "gray_as_rgb.jpg", quality=100)
    rgba = np.zeros((32, 32, 4), np.uint8)  # fully transparent: white once composited
    Image.fromarray(rgba, "RGBA").save(root / "horizontal bar" / "clear.png")
    assert folders.decode(root / "horizontal bar" / "clear.png").min() == 255
    assert np.abs(folders.decode(root / "disc" / "sixteen.png").astype(int) - disc).max() <= 1
    assert load_folder(root).contract.channels == 1  # all gray, whatever their mode

    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 200  # red
    Image.fromarray(colour).save(root / "vertikal ä" / "red.png")
    data = load_folder(root)
    assert data.contract.channels == 3 and data.train_images.shape[1:] == (32, 32, 3)
    red = data.train_images[data.train_labels == 2][-1]  # sorted after the numbered files
    assert red[..., 0].mean() > 190 and red[..., 1:].max() < 10  # RGB order in the model's input
    gray = load_folder(root, color="gray", image_size=28, preprocess="object")
    assert gray.contract.image_shape == (28, 28, 1) and gray.contract.preprocessing == "object"
    assert gray.train_images.shape[1:] == (28, 28)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "tall.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(path, exif=exif)
    assert folders.decode(path).shape == (40, 20)


def test_image_size_from_the_data():
    assert folders.choose_size([32] * 5) == 32
    assert folders.choose_size([10, 12, 20]) == 28
    assert folders.choose_size([500, 640, 480]) == 64
    assert folders.choose_size([41, 42, 43]) == 44
    assert folders.choose_size([50]) % 4 == 0


@pytest.mark.parametrize("setup, words", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: make_folder(root, labels=("only",)), "add a sub-folder of images for at least one more class"),
    (lambda root: make_folder(root, per_class={"disc": 5, "horizontal bar": 1}), "'horizontal bar' has 1"),
    (lambda root: make_folder(root, per_class={"disc": 5, "horizontal bar": 0}), "'horizontal bar' has 0"),
    (lambda root: (make_folder(root / "train", per_class=3), make_folder(root / "val", 2, labels=LABELS[:2])),
     "add val/vertikal ä/"),
    (lambda root: make_folder(root / "test", per_class=3), "no train/"),
])
def test_errors_say_what_to_add(tmp_path, setup, words):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(FolderError, match=words.replace("(", r"\(")) as error:
        load_folder(root)
    assert isinstance(error.value, ValueError)


def test_only_junk_in_a_class_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", per_class={"disc": 4, "horizontal bar": 0})
    (root / "horizontal bar" / "a.png").write_bytes(b"")
    (root / "horizontal bar" / "b.png").write_text("x")
    with pytest.raises(FolderError, match="'horizontal bar' has 0 readable images"):
        load_folder(root)


def test_the_report_reloads_the_same_data(tmp_path):
    data = load_folder(make_folder(tmp_path / "d", per_class=6), image_size=28, seed=7)
    again = folders.load_recorded(json.loads(json.dumps(data.describe())))
    assert again.contract == data.contract
    assert np.array_equal(again.test_images, data.test_images) and np.array_equal(again.test_labels, data.test_labels)


def test_cli_options(tmp_path, capsys):
    from train.__main__ import main, parse_args

    args = parse_args(["--data", str(tmp_path), "--image-size", "40", "--color", "rgb", "--preprocess", "object"])
    assert (args.data, args.image_size, args.color, args.preprocess) == (str(tmp_path), 40, "rgb", "object")
    assert parse_args([]).data == "fashion-mnist"
    with pytest.raises(SystemExit):
        parse_args(["--color", "rgb"])  # only for a folder
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_train_export_and_run_a_folder(tmp_path):
    """python -m train --data DIR, python -m export (no data flag), then the runtime classifies."""
    from runtime import Predictor

    data_dir = make_folder(tmp_path / "shapes", per_class=40)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    train = subprocess.run([sys.executable, "-m", "train", "--data", str(data_dir), "--epochs", "2",
                            "--qat-epochs", "1", "--batch-size", "4", "--out", str(out)],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    report = json.loads((out / "train_report.json").read_text())
    assert report["data"]["kind"] == "folder" and report["data"]["source"] == str(data_dir)
    assert report["data"]["test_is_validation"] and report["contract"]["labels"] == list(LABELS)

    export = subprocess.run([sys.executable, "-m", "export", "--out", str(out), "--model",
                             str(out / "qat_model.h5"), "--calibration-size", "30"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-3000:]
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["test_is_validation"]
    assert parity["test_images"] == report["data"]["test"] == sum(report["data"]["per_class"]["test"].values())

    from export.formats import FORMATS

    predictor = Predictor(out / FORMATS["tflite-int8"].file)
    assert tuple(predictor.contract.labels) == LABELS
    images, truth = [], []
    for index, label in enumerate(LABELS):
        for path in sorted((data_dir / label).glob("*.png")):
            images.append(np.asarray(Image.open(path)))
            truth.append(index)
    predicted = [LABELS.index(predictor.predict(image).label) for image in images]
    accuracy = np.mean(np.array(predicted) == truth)
    print(f"int8 accuracy on the folder: {accuracy:.3f}")
    assert accuracy > 0.7  # chance: 1/3


def test_symbolic_links_are_read_once_and_never_loop(tmp_path):
    root = make_folder(tmp_path / "d", per_class=4)
    bar = root / "horizontal bar"
    (bar / "again").symlink_to(".")  # a loop to itself
    (bar / "up").symlink_to("..")  # a loop through the root: would read every class into this one
    (bar / "disc too").symlink_to(root / "disc")  # another class's images, read once here too
    data = load_folder(root)
    assert data.counts["train"] == {"disc": 4, "horizontal bar": 8, "vertikal ä": 4}
    (root / "bar alias").symlink_to(bar)
    with pytest.raises(FolderError, match="horizontal bar/ and bar alias/ are the same folder"):  # two labels
        load_folder(root)


def test_a_test_split_linked_to_train_is_refused(tmp_path):
    make_folder(tmp_path / "d" / "train", per_class=4)
    (tmp_path / "d" / "test").mkdir()
    for label in LABELS:
        (tmp_path / "d" / "test" / label).symlink_to(tmp_path / "d" / "train" / label)
    with pytest.raises(FolderError, match="same folder"):
        load_folder(tmp_path / "d")


def test_train_beside_other_folders_is_refused(tmp_path):
    make_folder(tmp_path / "d" / "train", per_class=3)
    make_folder(tmp_path / "d" / "test", per_class=2)
    (tmp_path / "d" / "extras").mkdir()
    with pytest.raises(FolderError, match="train/ beside extras/"):
        load_folder(tmp_path / "d")


def test_labels_with_control_characters_are_refused(tmp_path):
    root = make_folder(tmp_path / "d", per_class=2)
    (root / "line\nbreak").mkdir()
    with pytest.raises(FolderError, match="control"):
        load_folder(root)


def test_names_that_are_not_utf8_and_oversized_images(tmp_path):
    root = make_folder(tmp_path / "d", per_class=3)
    name = os.fsdecode(b"caf\xe9.png")  # a file name from a Windows zip
    Image.fromarray(shape("disc", np.random.default_rng(0))).save(root / "disc" / name)
    Image.new("L", (8000, 6000)).save(root / "disc" / "huge.png")  # 48 MP: a few KB of PNG
    data = load_folder(root)
    assert data.counts["train"]["disc"] == 4
    reasons = [reason for _, reason in data.skipped]
    assert reasons == ["ValueError: 8000x6000 is over 40,000,000 pixels: make it smaller"]


def test_the_checksum_follows_the_contents_and_export_refuses_changed_classes(tmp_path):
    root = make_folder(tmp_path / "d", per_class=3)
    before = load_folder(root)
    first, second = root / "disc" / "000.png", root / "vertikal ä" / "000.png"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)  # same names, same sizes, other contents
    assert load_folder(root).checksums != before.checksums
    record = json.loads(json.dumps(before.describe()))
    (root / "disc").rename(root / "circle")
    with pytest.raises(FolderError, match="changed since training"):
        folders.load_recorded(record)


# --- one label rule for the server, the camera demo and training ---------------------------------------------------

@pytest.mark.parametrize("label", REFUSED_LABELS)
def test_a_label_the_collector_refuses_training_refuses(tmp_path, label):
    with pytest.raises(ValueError):
        check_label(label)
    root = make_folder(tmp_path / "d", per_class={LABELS[0]: 2, LABELS[1]: 2, label: 2})
    with pytest.raises(FolderError, match=re.escape(repr(label)[1:-1])):  # the folder is named
        load_folder(root)


@pytest.mark.parametrize("label", JUNK_LABELS)
def test_an_os_name_the_collector_refuses_training_skips_and_says_so(tmp_path, caplog, label):
    with pytest.raises(ValueError, match="operating system"):
        check_label(label)
    root = make_folder(tmp_path / "d", per_class={LABELS[0]: 2, LABELS[1]: 2, label: 2})
    with caplog.at_level(logging.WARNING, logger="train.folders"):
        data = load_folder(root)
    assert data.contract.labels == LABELS[:2]
    assert [r.getMessage() for r in caplog.records if f"skipped {label}/" in r.getMessage()]


def test_nfd_and_nfc_are_one_label_for_the_collector_and_training(tmp_path):
    nfc, nfd = "café", "cafe\u0301"
    assert check_label(nfd) == check_label(nfc) == nfc  # the collector stores both in one folder
    root = make_folder(tmp_path / "d", per_class={LABELS[0]: 2, nfd: 2})
    assert load_folder(root).contract.labels == (nfc, LABELS[0])
    make_folder(root, per_class={nfc: 2})  # both spellings side by side: one label in two folders
    with pytest.raises(FolderError, match="same label"):
        load_folder(root)


def test_leading_or_trailing_spaces_are_refused_not_stripped(tmp_path):
    root = make_folder(tmp_path / "d", per_class={LABELS[0]: 2, "shirt ": 2})
    with pytest.raises(FolderError, match="space"):
        load_folder(root)


# --- only regular files inside the folder ------------------------------------------------------------------------

def load_within(root: Path, seconds: float = 60) -> folders.ImageFolder:
    """load_folder, failing (not hanging) if it blocks: a FIFO opened for reading waits for a writer forever."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(data=load_folder(root)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in root.rglob("*"):  # let a reader blocked on a FIFO go (a writer opens, then closes: EOF)
            if fifo.is_fifo():
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"load_folder({root}) still running after {seconds} s")
    return result["data"]


def test_fifos_and_links_out_of_the_folder_are_skipped_unopened(tmp_path, caplog):
    root = make_folder(tmp_path / "d", per_class=2)
    os.mkfifo(root / "disc" / "pipe.png")
    (root / "vertikal ä" / "pipe again.png").symlink_to(root / "disc" / "pipe.png")  # inside, still a FIFO
    (root / "disc" / "kmsg.png").symlink_to("/proc/kmsg")  # reading it blocks (as root) until the kernel logs
    (root / "horizontal bar" / "etc").symlink_to("/etc")
    with caplog.at_level(logging.WARNING, logger="train.folders"):
        data = load_within(root)
    assert data.counts["train"] == dict.fromkeys(LABELS, 2)
    reasons = dict(data.skipped)
    assert sorted(reasons) == ["disc/kmsg.png", "disc/pipe.png", "horizontal bar/etc", "vertikal ä/pipe again.png"]
    assert "a FIFO" in reasons["disc/pipe.png"] and "a FIFO" in reasons["vertikal ä/pipe again.png"]
    assert "/proc/kmsg, outside the data folder" in reasons["disc/kmsg.png"]
    assert "/etc, outside the data folder" in reasons["horizontal bar/etc"]
    assert "skipped 4 files" in caplog.text and "horizontal bar/etc" in caplog.text


def test_a_class_folder_linked_out_of_the_folder_is_refused(tmp_path):
    make_folder(tmp_path / "elsewhere", per_class=2, labels=("coat",))
    root = make_folder(tmp_path / "d", per_class=2)
    (root / "coat").symlink_to(tmp_path / "elsewhere" / "coat")
    with pytest.raises(FolderError, match="coat is a link to .*elsewhere/coat, outside the data folder"):
        load_folder(root)


def test_a_huge_file_is_skipped_from_its_size_unread(tmp_path):
    root = make_folder(tmp_path / "d", per_class=2)
    with open(root / "disc" / "huge.png", "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GB that take no disk, and would take 3 GB of memory once read
    data = load_within(root)
    assert data.counts["train"]["disc"] == 2
    assert data.skipped == [("disc/huge.png", f"3,221,225,472 bytes, over {folder_files.MAX_IMAGE_BYTES:,}: not read; "
                                              "make it smaller")]


def test_more_than_256_classes(tmp_path):
    labels = [f"c{i:03d}" for i in range(257)]
    root = make_folder(tmp_path / "d", per_class=2, labels=labels, size=8)
    data = load_folder(root, image_size=28)
    assert data.contract.labels == tuple(labels)
    assert np.bincount(data.train_labels).tolist() == [2] * 257 and data.train_labels.max() == 256
