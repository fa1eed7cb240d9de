"""Defaults chosen from a folder (train.recipe), --init bundled (train.backbone), and the shipped recipe
(train.config) that python -m train and Python both train with."""

import dataclasses

import numpy as np
import pytest

from train import backbone, recipe
from train.augment import PRESETS
from train.folders import load_folder
from train.model import build

from test_folders import make_folder
from test_teacher import LABELS, splits


def test_batch_and_epochs_follow_the_folder_size():
    assert [recipe.batch_size(n) for n in (50, 999, 1000, 3999, 4000, 20000)] == [16, 16, 32, 32, 64, 128]
    # a tiny folder gets the most epochs, a large one the fewest, both within bounds
    assert recipe.epochs_for(100, 16, recipe.STEPS, recipe.EPOCHS) == recipe.EPOCHS[1]
    assert recipe.epochs_for(100_000, 128, recipe.STEPS, recipe.EPOCHS) == recipe.EPOCHS[0]
    assert recipe.epochs_for(1500, 32, recipe.STEPS, recipe.EPOCHS) == 54  # 47 steps an epoch


def glyphs(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left- and right-facing wedges: classes that a mirror swaps."""
    yy, xx = np.mgrid[:16, :16]
    images, labels = [], []
    for i in range(n):
        label = i % 2
        wedge = (np.abs(yy - 8) < (xx if label == 0 else 15 - xx) / 2).astype(np.float32)
        images.append(np.clip(255 * wedge + rng.normal(0, 20, (16, 16)), 0, 255).astype(np.uint8))
        labels.append(label)
    return np.array(images), np.array(labels)


def test_flips_only_where_a_mirror_keeps_the_class(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = glyphs(rng, 60)
    assert recipe.flip_score(images, labels) < 0.2  # a mirrored wedge is the other class
    folder = load_folder(make_folder(tmp_path / "shapes", per_class=12))  # discs and bars: symmetric
    assert recipe.flip_score(folder.train_images, folder.train_labels) > 0.9
    assert recipe.for_folder(folder).augment.flip
    assert not recipe.for_folder(folder, flip="off").augment.flip


def test_folder_recipe_and_overrides(tmp_path, caplog):
    folder = load_folder(make_folder(tmp_path / "shapes", per_class=12))
    with caplog.at_level("INFO"):
        config = recipe.for_folder(folder, seed=3)
    assert "recipe for 36 images: batch 16" in caplog.text
    assert (config.batch_size, config.epochs) == (16, recipe.EPOCHS[1])
    assert (config.init, config.monitor) == ("bundled", "val_loss")
    assert config.augment.rotation == 0 and config.augment.zoom == 0 and config.seed == 3  # shifts, erasing
    config = recipe.for_folder(folder, epochs=5, qat_epochs=0, batch=8, learning_rate=0.01, init="scratch")
    assert (config.epochs, config.qat_epochs, config.batch_size) == (5, 0, 8)
    assert (config.learning_rate, config.init) == (0.01, "scratch")
    assert recipe.for_folder(folder, arch="lenet").init == "scratch"  # no bundled layers to start from
    with pytest.raises(backbone.BackboneError, match="--arch edge"):
        recipe.for_folder(folder, arch="edge:width=1.5", init="bundled")


def test_the_bundled_convolutions_reproduce_the_bundled_network():
    """The conv features of a model started from the bundled network equal the bundled ONNX's."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = build("edge", (28, 28, 1), 10)
    assert backbone.load_bundled(model) == 4
    graph = onnx.load(str(backbone.BUNDLED))
    last_pool = [n for n in graph.graph.node if n.op_type == "MaxPool"][-1].output[0]
    graph.graph.output.append(helper.make_tensor_value_info(last_pool, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString())
    x = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    expected = session.run([last_pool], {session.get_inputs()[0].name: x})[0]
    if expected.shape[1] != 3:  # NCHW inside the graph
        expected = expected.transpose(0, 2, 3, 1)
    pool = [layer for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D"][-1]
    from train.keras_env import keras

    features = keras.Model(model.inputs, pool.output)(x, training=False).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-4)


def test_colour_and_other_sizes_take_the_bundled_convolutions():
    gray, colour = build("edge", (40, 40, 1), 3), build("edge", (40, 40, 3), 3)
    backbone.load_bundled(gray)
    backbone.load_bundled(colour)
    x = np.random.default_rng(1).uniform(0, 1, (2, 40, 40, 1)).astype(np.float32)
    conv = [layer for layer in gray.layers if layer.__class__.__name__ == "Conv2D"][0]
    conv3 = [layer for layer in colour.layers if layer.__class__.__name__ == "Conv2D"][0]
    # a gray picture given as colour gives the gray model's first features
    np.testing.assert_allclose(conv3(np.repeat(x, 3, axis=-1)).numpy(), conv(x).numpy(), atol=1e-5)


def test_only_the_edge_architecture_takes_the_bundled_layers():
    with pytest.raises(backbone.BackboneError, match="--init scratch"):
        backbone.load_bundled(build("lenet", (28, 28, 1), 3))
    with pytest.raises(backbone.BackboneError):
        backbone.check_arch("edge:width=0.5")
    backbone.check_arch("edge:dropout=0.3")


def test_cli_refuses_bundled_init_for_another_architecture(tmp_path, capsys):
    from train.__main__ import main

    data = make_folder(tmp_path / "shapes", per_class=4)
    for data_args in (["--data", str(data)], []):
        assert main([*data_args, "--arch", "lenet", "--init", "bundled", "--out", str(tmp_path / "out")]) == 2
        assert "--init scratch" in capsys.readouterr().err


def test_qat_ranges_start_at_the_float_activations():
    """tfmot's [-6, 6] start would waste levels on negatives and clip above 6 (train.trainer.start_ranges)."""
    from train.keras_env import keras
    from train.trainer import quantize

    keras.utils.set_random_seed(0)  # the same weights whatever ran before (this head gives logits of both signs)
    model = build("edge", (16, 16, 3), 4)
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = quantize(model, x)
    relu_layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.ReLU))
    head = model.layers[-1]

    def ranges(quantized, layer):
        return {v.name.split("/")[-1]: float(v.numpy())
                for v in quantized.get_layer("quant_" + layer.name).weights if v.shape == ()}

    relu = keras.Model(model.inputs, relu_layer.output).predict(x, verbose=0)
    started = ranges(qat, relu_layer)
    assert started["output_min:0"] == 0 and started["output_max:0"] == pytest.approx(relu.max(), rel=1e-5)
    logits = ranges(qat, head)
    assert logits["pre_activation_min:0"] < 0 < logits["pre_activation_max:0"] < 6
    assert head.activation is keras.activations.softmax  # the float model restored
    assert ranges(quantize(model), relu_layer)["output_min:0"] == -6  # tfmot's start, untouched


def test_cli_refuses_an_output_inside_the_data(tmp_path, capsys):
    from train.__main__ import main

    data = make_folder(tmp_path / "shapes", per_class=4)
    assert main(["--data", str(data), "--out", str(data / "disc" / "run")]) == 2
    assert "inside --data" in capsys.readouterr().err and not (data / "disc" / "run").exists()


# --- the shipped recipe: one configuration for python -m train and for Python ---------------------

def fake_run(seen: dict):
    """train.pipeline.run that keeps what python -m train asked it to train, and trains nothing."""
    def run(config, dataset, out, cluster):
        seen.update(config=config, dataset=dataset)
        return {stage: {"test_accuracy": 0.0, "test_loss": 0.0} for stage in ("float", "qat")}

    return run


def test_python_m_train_trains_the_shipped_recipe(fashion, tmp_path, monkeypatch):
    """The contract: `python -m train --out X` (no flags) trains ``TrainConfig.shipped()``, which is what
    ``train.datasets.recipe`` gives Python for Fashion-MNIST; the help shows its values."""
    import train.data
    import train.pipeline
    from train import datasets
    from train.__main__ import main, parse_args
    from train.config import CAMERA_FRAMES, WATCH_FROM, TrainConfig

    seen: dict = {}
    monkeypatch.setattr(train.pipeline, "run", fake_run(seen))
    monkeypatch.setattr(train.data, "load", lambda data_dir=None, **kwargs: fashion)
    assert main(["--out", str(tmp_path / "out")]) == 0
    shipped = TrainConfig.shipped()
    assert seen["config"] == shipped and seen["dataset"] is fashion
    assert datasets.recipe(fashion) == shipped == TrainConfig(camera_frames=CAMERA_FRAMES, watch_from=WATCH_FROM)
    # the recipe changed once (early stopping watches the second half): its runs start over, once;
    # configurations without that field keep the fingerprint they always had
    assert shipped.fingerprint() == "eab065864355d96c"
    assert dataclasses.replace(shipped, watch_from=0).fingerprint() == "b07ccee3de49fca2"
    args = parse_args(["--out", "X"])
    assert (args.arch, args.seed) == (shipped.arch, shipped.seed)
    # what the flags change, from the command line and from Python alike
    flags = ["--epochs", "3", "--augment", "camera", "--flip", "off", "--camera-frames", "0", "--seed", "7",
             "--weight-decay", "1e-4"]
    assert main([*flags, "--out", str(tmp_path / "out2")]) == 0
    python = datasets.recipe(fashion, epochs=3, augment="camera", flip="off", camera_frames=0, seed=7,
                             weight_decay=1e-4)
    camera = dataclasses.replace(PRESETS["camera"], flip=False)
    assert seen["config"] == python == TrainConfig.shipped(epochs=3, camera_frames=0, seed=7, augment=camera,
                                                           weight_decay=1e-4)
    assert python.fingerprint() != dataclasses.replace(python, weight_decay=0).fingerprint()


def test_python_m_train_on_a_folder_trains_what_python_gets(tmp_path, monkeypatch):
    import train.pipeline
    from train import datasets
    from train.__main__ import main

    folder = make_folder(tmp_path / "shapes", per_class=12)
    seen: dict = {}
    monkeypatch.setattr(train.pipeline, "run", fake_run(seen))
    assert main(["--data", str(folder), "--seed", "3", "--epochs", "4", "--out", str(tmp_path / "out")]) == 0
    dataset = datasets.open_dataset(folder, seed=3)
    config = datasets.recipe(dataset, seed=3, epochs=4)
    assert seen["config"] == config and config.fingerprint() == seen["config"].fingerprint()
    assert config.camera_frames == 0 and config.data_id.startswith(dataset.checksums["files"][:16])
    assert config == recipe.for_folder(dataset, seed=3, epochs=4, data_id=config.data_id)


def test_weight_decay_is_adamw_s_and_none_is_plain_adam():
    from train.config import TrainConfig
    from train.keras_env import keras
    from train.model import build
    from train.trainer import compile_model

    model = build("linear", (28, 28, 1), 10)
    compile_model(model, 1e-3, TrainConfig(weight_decay=1e-4))
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and model.optimizer.weight_decay == pytest.approx(1e-4)
    compile_model(model, 1e-3, TrainConfig())
    assert type(model.optimizer) is keras.optimizers.Adam


@pytest.mark.parametrize("watch_from, epochs_run", [(0.0, 2), (0.5, 5)])
def test_early_stopping_watches_from_its_share_of_the_schedule(tmp_path, watch_from, epochs_run):
    """With no learning (a learning rate of 1e-12) nothing improves after the first epoch watched."""
    from train.config import TrainConfig
    from train.trainer import fit

    config = TrainConfig(patience=1, watch_from=watch_from, batch_size=16, label_smoothing=0)
    fitted = fit(build("linear", (12, 12, 1), len(LABELS)), splits(), config, stage="float", epochs=6,
                 peak_lr=1e-12, augment=False, backup_dir=tmp_path / "backup")
    assert len(fitted.history["loss"]) == epochs_run
