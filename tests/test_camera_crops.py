"""Preprocessing in the loop (train.camera_crops): training images as the runtime crops them."""

import numpy as np
import pytest

pytest.importorskip("cv2")

from runtime.contract import Contract  # noqa: E402
from train import camera_crops  # noqa: E402


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_a_crop_is_the_garment_framed_like_the_dataset(fashion):
    from runtime import Predictor

    images, labels = fashion.train_images[:60], fashion.train_labels[:60]
    crops = camera_crops.crops(images, fashion.contract, seed=0, workers=1)
    assert crops.shape == images.shape and crops.dtype == np.uint8
    assert not np.array_equal(crops, images)  # rotated, rescaled, blurred: not the image itself
    # ...but still that garment: more like its own image than like the others, and recognised
    like = np.array([[correlation(c, i) for i in images] for c in crops])
    assert np.median(np.diag(like)) > 0.6 > np.median(like[~np.eye(len(images), dtype=bool)])
    guesses = np.array([p.index for p in Predictor().predict_batch(crops)])
    assert (guesses == labels).mean() >= 0.65


def test_crops_are_reproducible_whatever_the_number_of_processes(fashion, monkeypatch):
    monkeypatch.setattr(camera_crops, "CHUNK", 8)  # several chunks from a few images
    images = fashion.train_images[:20]
    one = camera_crops.crops(images, fashion.contract, seed=5, workers=1)
    two = camera_crops.crops(images, fashion.contract, seed=5, workers=2)
    assert np.array_equal(one, two)
    assert not np.array_equal(one, camera_crops.crops(images, fashion.contract, seed=6, workers=1))


def test_crops_are_cached_for_the_same_images_and_rendered_again_for_others(fashion, tmp_path, monkeypatch):
    images = fashion.train_images[:10]
    first = camera_crops.crops(images, fashion.contract, seed=0, cache_dir=tmp_path, workers=1)
    assert (tmp_path / camera_crops.CACHE).exists()

    def no_rendering(*args):
        raise AssertionError("rendered again")

    monkeypatch.setattr(camera_crops, "render_chunk", no_rendering)
    assert np.array_equal(camera_crops.crops(images, fashion.contract, seed=0, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError, match="rendered again"):  # other images: not the cached crops
        camera_crops.crops(fashion.train_images[10:20], fashion.contract, seed=0, cache_dir=tmp_path)


def test_a_damaged_cache_is_rendered_again(fashion, tmp_path):
    (tmp_path / camera_crops.CACHE).write_bytes(b"not an npz")
    images = fashion.train_images[:5]
    crops = camera_crops.crops(images, fashion.contract, seed=0, cache_dir=tmp_path, workers=1)
    assert np.array_equal(crops, camera_crops.crops(images, fashion.contract, seed=0, workers=1))


def test_camera_views_replace_exactly_the_chosen_number_of_images(fashion):
    images = fashion.train_images[:30]
    views = camera_crops.camera_views(images, fashion.contract, 12, seed=1)
    changed = np.any(views != images, axis=(1, 2))
    assert changed.sum() == 12
    assert np.array_equal(camera_crops.camera_views(images, fashion.contract, 12, seed=1), views)
    assert np.any(camera_crops.camera_views(images, fashion.contract, 100, seed=1) != images, axis=(1, 2)).all()


@pytest.mark.parametrize("channels, kind", [(3, "object"), (1, "resize")])
def test_only_a_grayscale_object_contract_takes_camera_crops(fashion, channels, kind):
    contract = Contract(labels=("a", "b"), height=28, width=28, channels=channels, preprocessing=kind)
    with pytest.raises(ValueError, match="without camera crops"):
        camera_crops.crops(fashion.train_images[:2], contract, seed=0)


def test_training_shows_each_rendered_image_as_its_crop_with_the_mix_chance(fashion, tmp_path):
    from train.trainer import TrainConfig, make_splits, training_data

    config = TrainConfig(limit=300, camera_frames=40)
    splits = make_splits(fashion, config, tmp_path)
    assert (tmp_path / camera_crops.CACHE).exists()
    differs = np.any(splits.x_camera != splits.x_train, axis=(1, 2, 3))
    assert differs.sum() == 40  # the others stay themselves
    idx = np.arange(len(splits.y_train))
    for mix, expected in ((0.0, splits.x_train), (1.0, splits.x_camera)):
        config.camera_mix = mix
        shown = np.concatenate([x.numpy() for x, _ in training_data(splits, config, idx, 64)])
        assert sorted(map(bytes, shown)) == sorted(map(bytes, expected))
    config.camera_mix = 0.5
    shown = {bytes(x) for batch, _ in training_data(splits, config, idx, 64) for x in batch.numpy()}
    crops_shown = sum(bytes(x) in shown for x in splits.x_camera[differs])
    assert 8 <= crops_shown <= 32  # about half of the 40, drawn anew each epoch


def test_a_run_without_camera_crops_keeps_its_fingerprint():
    from train.trainer import TrainConfig

    config = TrainConfig()
    assert config.fingerprint() != TrainConfig(camera_frames=100).fingerprint()
    # the fingerprint before camera crops existed: an older run in --out still resumes
    assert config.fingerprint() == "49a92961e2e16c73"


def test_camera_frames_are_for_fashion_mnist_only(tmp_path, capsys):
    from train.__main__ import parse_args

    for argv, message in ((["--data", str(tmp_path), "--camera-frames", "10"], "for Fashion-MNIST"),
                          (["--camera-frames", "-1"], "must be >= 0")):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert parse_args(["--data", str(tmp_path), "--camera-frames", "0"]).camera_frames == 0


def test_the_camera_mix_experiment_fine_tunes_each_share_and_scores_held_out_frames(quick_run, tmp_path, capsys):
    import json

    from experiments.camera_mix import main

    assert main(["--model", str(quick_run / "float_model.h5"), "--limit", "300", "--frames", "20", "--epochs", "1",
                 "--mixes", "0,1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "camera_mix.json").read_text())["rows"]
    assert [row["camera_share"] for row in rows] == [0.0, 1.0]
    for row in rows:
        assert set(row) == {"camera_share", "arrays", "standard", "desk", "cluttered", "official test"}
        assert row["arrays"] > 0.5 and row["official test"] > 0.5  # a trained model, not chance
    assert "| 100% |" in capsys.readouterr().out
