"""Baselines for your own classes: what a folder gives without our pipeline, to set our int8
model beside (benchmarks/own_classes.py runs both after our own training run).

- ``classic``: scikit-learn on exactly our model's inputs (the crops the runtime prepares, at the
  size, colour and preprocessing our training run recorded): standardised pixels, principal
  components, then an RBF SVM and a logistic regression, each tuned by cross-validation on the
  training images only.
- ``keras_tutorial``: the Keras tutorial's way ("Image classification from scratch" / "Load and
  preprocess images"): ``image_dataset_from_directory`` at 180 x 180, its small augmented CNN,
  Adam, trained epoch after epoch for the same wall time our training and export took.

Both score the folder's test/ images.

    python benchmarks/baselines.py /tmp/folders/digits --budget-s 240 [--report OUT/train_report.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.files import write_json  # noqa: E402

COMPONENTS = 100  # principal components the classic classifiers see: SVM fits in seconds on 2 cores
# On digits and faces 50, 100 and 150 components scored alike in cross-validation.
FOLDS = 3  # cross-validation folds (fewer when a class has fewer training images)
SVM_C = (1, 10, 100)
GAMMA_FACTORS = (0.25, 1, 4)  # times 1 / (the components' total variance): sklearn's "scale" and around it
LOGISTIC_C = (0.01, 0.1, 1, 10)
TUTORIAL_SIZE, TUTORIAL_BATCH, TUTORIAL_SEED = 180, 32, 123  # the tutorial's values
TUTORIAL_VALIDATION = 0.2


def held_out(folder: Path) -> tuple[list[Path], list[str]]:
    """The test/ images and their labels (folder names), hidden files skipped."""
    paths, labels = [], []
    for class_dir in sorted((folder / "test").iterdir()):
        if class_dir.is_dir() and not class_dir.name.startswith("."):
            for path in sorted(class_dir.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    paths.append(path)
                    labels.append(class_dir.name)
    return paths, labels


def scores(answers: list, labels: list[str]) -> dict:
    """Accuracy, recall per class and the worst class; an answer of None (unreadable) is wrong."""
    answers, truth = np.array(answers, dtype=object), np.array(labels, dtype=object)
    per_class = {name: float(np.mean(answers[truth == name] == name)) for name in sorted(set(labels))}
    return {"accuracy": float(np.mean(answers == truth)), "per_class": per_class,
            "worst_class": min(per_class, key=per_class.get)}


def test_crops(folder: Path, contract) -> tuple[np.ndarray, list[bool], list[str]]:
    """The test/ images as the Predictor sees them (``runtime.images`` reads, ``runtime.preprocess.prepare``
    crops): (crops of the readable ones, flattened in [0, 1]; which were readable; labels)."""
    from runtime.images import BadImage, load
    from runtime.preprocess import prepare

    paths, labels = held_out(folder)
    crops, readable = [], []
    for path in paths:
        try:
            image = load(path)
        except BadImage:
            image = None
        readable.append(image is not None)
        if image is not None:
            crops.append(prepare(image, contract).image.reshape(-1))
    return np.array(crops, np.float32), readable, labels


def tuned(estimator, grid: dict, features: np.ndarray, labels: np.ndarray):
    """``estimator`` refitted with the grid's best cross-validated parameters; (search, seconds)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = min(FOLDS, int(np.bincount(labels).min()))
    started = time.time()
    search = GridSearchCV(estimator, grid, cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    search.fit(features, labels)
    return search, time.time() - started


def classic(folder: Path, data: dict) -> dict:
    """An RBF SVM and a logistic regression on our model's own inputs.

    ``data``: the training report's "data" (image_size, color, preprocess; missing ones are
    chosen from the folder as training does). They train on the train/ images (val/ too, when
    there is one: cross-validation does the model selection) and are tuned on them only."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from train.folders import load_folder

    loaded = load_folder(folder, image_size=data.get("image_size"), color=data.get("color"),
                         preprocess=data.get("preprocess"))
    names = loaded.contract.labels
    images, labels = loaded.train_images, loaded.train_labels
    if loaded.val_images is not None:
        images, labels = np.concatenate([images, loaded.val_images]), np.concatenate([labels, loaded.val_labels])
    pixels = images.reshape(len(images), -1) / np.float32(255)
    test, readable, truth = test_crops(folder, loaded.contract)

    started = time.time()  # the components are fitted on the training images only, once for every fold
    front = make_pipeline(StandardScaler(), PCA(min(COMPONENTS, *pixels.shape), random_state=0)).fit(pixels)
    front_s = time.time() - started
    features, test_features = front.transform(pixels), front.transform(test)
    scale = 1 / float(front[-1].explained_variance_.sum())
    models = {"svm": (SVC(kernel="rbf"), {"C": SVM_C, "gamma": [scale * f for f in GAMMA_FACTORS]}),
              "logistic": (LogisticRegression(max_iter=5000), {"C": LOGISTIC_C})}
    result = {"image_shape": list(loaded.contract.image_shape), "preprocess": loaded.contract.preprocessing,
              "train_images": len(labels), "test_images": len(truth), "unreadable": readable.count(False),
              "components": front[-1].n_components_}
    for name, (estimator, grid) in models.items():
        search, fit_s = tuned(estimator, grid, features, labels)
        predicted = iter(search.predict(test_features))
        answers = [names[next(predicted)] if ok else None for ok in readable]
        result[name] = {**scores(answers, truth), "fit_s": round(front_s + fit_s, 1),
                        "params": {k: float(v) for k, v in search.best_params_.items()},
                        "cv_accuracy": float(search.best_score_)}
    return result


def tutorial_model(keras, classes: int, size: int):
    """The tutorial's network: augmentation, rescaling, three convolutions, dropout, two dense layers."""
    layers = keras.layers
    return keras.Sequential([
        layers.RandomFlip("horizontal", input_shape=(size, size, 3)),
        layers.RandomRotation(0.1),
        layers.RandomZoom(0.1),
        layers.Rescaling(1 / 255),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(classes),
    ])


def keras_tutorial(folder: Path, budget_s: float, image_size: int = TUTORIAL_SIZE) -> dict:
    """The tutorial's approach for ``budget_s`` seconds of wall time (loading included); the
    weights of the epoch with the best validation accuracy are scored on test/.

    An epoch is started only when the previous one's time still fits in the budget (at least
    one always runs). A file ``image_dataset_from_directory`` cannot decode fails the baseline:
    the result says why instead of raising (the tutorial has no way around it)."""
    from train.keras_env import keras, tf

    started = time.time()
    result = {"budget_s": round(budget_s, 1), "image_size": image_size}
    try:
        keras.utils.set_random_seed(TUTORIAL_SEED)
        train, val = keras.utils.image_dataset_from_directory(
            Path(folder) / "train", validation_split=TUTORIAL_VALIDATION, subset="both", seed=TUTORIAL_SEED,
            image_size=(image_size, image_size), batch_size=TUTORIAL_BATCH)
        names = train.class_names
        model = tutorial_model(keras, len(names), image_size)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        train = train.cache().shuffle(1000).prefetch(tf.data.AUTOTUNE)
        val = val.cache().prefetch(tf.data.AUTOTUNE)
        epochs, last_s, best = 0, 0.0, None
        while epochs == 0 or time.time() - started + last_s <= budget_s:
            epoch_started = time.time()
            accuracy = model.fit(train, validation_data=val, epochs=1, verbose=0).history["val_accuracy"][0]
            last_s, epochs = time.time() - epoch_started, epochs + 1
            if best is None or accuracy >= best[0]:  # a tie goes to the longer-trained weights
                best = (accuracy, epochs, model.get_weights())
        result.update(epochs=epochs, train_s=round(time.time() - started, 1), best_epoch=best[1],
                      val_accuracy=float(best[0]))
        model.set_weights(best[2])
        test = keras.utils.image_dataset_from_directory(
            Path(folder) / "test", class_names=names, shuffle=False, image_size=(image_size, image_size),
            batch_size=TUTORIAL_BATCH)
        predicted = np.argmax(model.predict(test, verbose=0), axis=1)
        truth = np.concatenate([labels.numpy() for _, labels in test])
    except (tf.errors.OpError, ValueError) as e:
        return {**result, "failed": failure(e), "accuracy": None}
    return {**result, **scores([names[i] for i in predicted], [names[i] for i in truth]), "failed": None,
            "test_images": len(truth)}


def failure(error: Exception) -> str:
    """One line saying why: TensorFlow puts the cause ("Input is empty.") last, after the
    names of the functions it passed through and before the failing node's."""
    from train.keras_env import tf

    text = str(error).strip()
    if isinstance(error, tf.errors.OpError):
        text = text.split("\n\t [[")[0].splitlines()[-1].rsplit(": ", 1)[-1]
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="train/ + test/ folders of class folders")
    p.add_argument("--report", type=Path, help="a train_report.json: the classic baselines take its data options "
                   "(else chosen from the folder as `python -m train --data` does)")
    p.add_argument("--budget-s", type=float, default=180.0, help="the Keras tutorial's wall time (seconds)")
    p.add_argument("--image-size", type=int, default=TUTORIAL_SIZE, help="the Keras tutorial's input side")
    p.add_argument("--out", type=Path, help="JSON results (default: artifacts/baselines/<folder>.json)")
    args = p.parse_args(argv)
    if not (args.folder / "test").is_dir():
        p.error(f"{args.folder} has no test/ folder of held-out images")
    data = json.loads(args.report.read_text())["data"] if args.report else {}
    results = {"folder": str(args.folder), "classic": classic(args.folder, data),
               "keras_tutorial": keras_tutorial(args.folder, args.budget_s, args.image_size)}
    out = args.out or ROOT / "artifacts" / "baselines" / f"{args.folder.name}.json"
    write_json(out, results)
    c, k = results["classic"], results["keras_tutorial"]
    print(f"\n{'folder':<12}{'input':>10}{'SVM':>8}{'logistic':>10}{'Keras tutorial':>18}{'worst (SVM)':>20}")
    keras_text = "failed" if k["failed"] else f"{k['accuracy']:.2%} ({k['epochs']} ep)"
    worst = f"{c['svm']['worst_class']} {c['svm']['per_class'][c['svm']['worst_class']]:.1%}"
    print(f"{args.folder.name:<12}{'x'.join(map(str, c['image_shape'])):>10}{c['svm']['accuracy']:>8.2%}"
          f"{c['logistic']['accuracy']:>10.2%}{keras_text:>18}{worst:>20}")
    if k["failed"]:
        print(f"the Keras tutorial failed: {k['failed']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
