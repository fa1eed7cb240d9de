"""Distillation (train.teacher, --teacher): the targets mix the teacher's answers on the very
batches the student sees; a teacher that cannot teach is refused before any training."""

import dataclasses

import numpy as np
import pytest

from runtime.contract import Contract
from train.config import TrainConfig
from train.inputs import Splits, datasets
from train.keras_env import keras
from train.model import build
from train.teacher import TeacherError, load_teacher

LABELS = tuple("abcd")


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "float_model.h5"
    build("linear", (12, 12, 1), len(LABELS)).save(path)
    return path


def splits(n: int = 40) -> Splits:
    rng = np.random.default_rng(0)
    x = rng.random((n, 12, 12, 1), dtype=np.float32)
    y = np.arange(n) % len(LABELS)
    return Splits(Contract(LABELS, 12, 12, 1), x, y, x[:8], y[:8], x[:8], y[:8])


def test_targets_mix_the_teachers_answers_on_the_batches_the_student_sees(teacher_file):
    data = splits()
    config = TrainConfig(teacher=str(teacher_file), teacher_weight=0.25, batch_size=16)
    teacher = keras.models.load_model(teacher_file, compile=False)
    plain, _ = datasets(data, dataclasses.replace(config, teacher=None), augment=True)
    taught, val = datasets(data, config, augment=True)
    for (x, y), (_, y_plain) in zip(taught, plain):
        expected = 0.75 * np.eye(len(LABELS))[np.argmax(y, axis=1)] + 0.25 * teacher(x, training=False).numpy()
        np.testing.assert_allclose(y.numpy(), expected, atol=1e-6)  # the teacher saw the augmented images
        np.testing.assert_allclose(y.numpy().sum(axis=1), 1, atol=1e-5)
        assert np.all(y_plain.numpy().max(axis=1) == 1)  # without a teacher: one-hot labels
    x_val, y_val = next(iter(val))
    assert np.all(y_val.numpy().max(axis=1) == 1)  # validation keeps the true labels


def test_a_teacher_of_other_images_or_classes_is_refused(teacher_file, tmp_path):
    assert load_teacher(str(teacher_file), Contract(LABELS, 12, 12, 1)).output_shape[-1] == 4
    with pytest.raises(TeacherError, match=r"takes \(12, 12, 1\) images and gives 4 classes; this run's model "
                                           r"takes \(28, 28, 1\) and gives 10"):
        load_teacher(str(teacher_file), Contract(tuple("abcdefghij"), 28, 28, 1))
    with pytest.raises(TeacherError, match="gives 4 classes; .* gives 3"):
        load_teacher(str(teacher_file), Contract(LABELS[:3], 12, 12, 1))
    (tmp_path / "notes.h5").write_text("not a model")
    with pytest.raises(TeacherError, match="not a Keras model file"):
        load_teacher(str(tmp_path / "notes.h5"), Contract(LABELS, 12, 12, 1))
    with pytest.raises(TeacherError, match="no such file"):
        load_teacher(str(tmp_path / "missing.h5"), Contract(LABELS, 12, 12, 1))


def test_the_command_line_refuses_a_teacher_that_cannot_teach_before_training(teacher_file, tmp_path, capsys,
                                                                              monkeypatch):
    import train.pipeline
    from train.__main__ import main

    monkeypatch.setattr(train.pipeline, "run", lambda *a, **k: pytest.fail("trained"))
    out = str(tmp_path / "out")
    assert main(["--teacher", str(teacher_file), "--limit", "100", "--out", out]) == 2  # Fashion-MNIST: 28x28, 10
    assert "this run's model takes (28, 28, 1) and gives 10" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--teacher-weight", "0.3", "--out", out])
    assert exit_.value.code == 2 and "give --teacher MODEL too" in capsys.readouterr().err
    for weight in ("0", "1.5", "nan"):
        with pytest.raises(SystemExit):
            main(["--teacher", str(teacher_file), "--teacher-weight", weight, "--out", out])


def test_a_teacher_changes_the_fingerprint_and_runs_without_one_keep_theirs():
    shipped = TrainConfig.shipped()
    assert shipped.fingerprint() == "eab065864355d96c"  # as before teachers existed
    taught = dataclasses.replace(shipped, teacher="/runs/big/float_model.h5")
    assert taught.fingerprint() != shipped.fingerprint()
    assert dataclasses.replace(taught, teacher_weight=0.7).fingerprint() != taught.fingerprint()

