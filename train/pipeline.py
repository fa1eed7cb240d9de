"""One training run end to end: splits, float + QAT training, evaluation, report, plots."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np

from runtime.files import write_json
from train import report as rep
from train.config import TrainConfig
from train.datasets import Dataset, test_set_name
from train.distributed import LOCAL, Cluster
from train.inputs import make_splits
from train.model import count_macs
from train.stages import FLOAT_MODEL, QAT_MODEL
from train.trainer import TrainingDiverged, train

log = logging.getLogger(__name__)
REPORT = "train_report.json"


def per_class(labels: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    counts = np.bincount(labels.astype(int), minlength=len(names))
    return {name: int(n) for name, n in zip(names, counts)}


def data_record(dataset: Dataset, splits) -> dict:
    """The report's "data": where the data came from (so export can load them again) and
    how many images of each class every split has."""
    names = splits.contract.labels
    counts = {"train": per_class(splits.y_train, names), "validation": per_class(splits.y_val, names),
              "test": per_class(splits.y_test, names)}
    record = dataset.describe()
    if "counts" in record:  # a folder's: the images of each class in each of its folders
        record["folder_counts"] = record.pop("counts")
    record.update(train=len(splits.y_train), validation=len(splits.y_val), test=len(splits.y_test),
                  per_class=counts, oversampling=None if splits.repeats is None else
                  {names[c]: r for c, r in splits.repeats.items()})
    return record


def run(config: TrainConfig, dataset: Dataset, out: Path, cluster: Cluster = LOCAL) -> dict | None:
    """Train ``dataset`` (Fashion-MNIST or a folder: ``train.datasets``) with ``config``: what
    ``python -m train`` does with the configuration its flags make (``train.datasets.recipe``).

    Under a multi-worker strategy every worker trains; only the chief evaluates and writes the
    report and plots (the others return None)."""
    started = time.time()
    splits = make_splits(dataset, config, out if cluster.is_chief else None)  # one writer of the crops cache
    log.info("train %d, validation %d (%s), test %d (%s)",
             len(splits.y_train), len(splits.y_val),
             "the folder's val/" if dataset.val_images is not None else "from the training set",
             len(splits.y_test), "= the validation images: no test/ folder" if dataset.test_is_validation
             else "report only")
    data = data_record(dataset, splits)
    for name in splits.contract.labels:
        log.info("  %-20s train %5d  validation %4d  test %4d", name, data["per_class"]["train"][name],
                 data["per_class"]["validation"][name], data["per_class"]["test"][name])
    if splits.repeats is not None:
        log.info("imbalanced classes (the largest has more than 1.5x the images of the smallest): "
                 "balanced sampling, each image of a class repeated in an epoch: %s",
                 ", ".join(f"{k} x{v}" for k, v in data["oversampling"].items()))
    out.mkdir(parents=True, exist_ok=True)
    contract = splits.contract
    if cluster.is_chief:
        rep.plot_samples(dataset.train_images, dataset.train_labels, contract.labels, out / "samples.png")

    results = train(config, splits, out, cluster)
    if not cluster.is_chief:
        return None
    float_model = results["float"][0]
    report: dict = {
        "config": {**config.__dict__, "augment": config.augment.__dict__},
        "architecture": config.arch,
        "contract": contract.to_metadata(),  # what export embeds in every model
        "parameters": int(float_model.count_params()),
        "macs": count_macs(float_model),
        "data": data,
        "models": {"float": FLOAT_MODEL, "qat": QAT_MODEL},
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
    }
    if cluster.distributed:  # a one-process run's report stays as it was
        report["distribution"] = {"strategy": type(cluster.strategy).__name__, "workers": cluster.workers,
                                  "replicas": int(cluster.strategy.num_replicas_in_sync)}
    for stage, (model, info) in results.items():
        probs = model.predict(splits.x_test, batch_size=512, verbose=0)
        if not np.isfinite(probs).all():  # never a NaN accuracy or loss in the report
            raise TrainingDiverged(f"the {stage} model outputs NaN or infinity on the test set: "
                                   f"delete {out} (or use another --out) and train again")
        metrics = rep.classification_metrics(probs, splits.y_test, contract.labels)
        report[stage] = {**metrics, "epochs_run": info["epochs_run"],
                         "wall_time_s": info["wall_time_s"], "history": info["history"]}
        log.info("%s: test accuracy %.4f, loss %.4f", stage, metrics["test_accuracy"],
                 metrics["test_loss"])
    report["wall_time_s"] = round(time.time() - started, 1)

    rep.plot_curves({s: report[s]["history"] for s in ("float", "qat")}, out / "curves.png")
    rep.plot_confusion(np.array(report["qat"]["confusion_matrix"]), contract.labels, out / "confusion.png",
                       f"QAT model on {test_set_name(dataset)} "
                       f"(accuracy {report['qat']['test_accuracy']:.2%})")
    write_json(out / REPORT, report)
    return report
