"""One training run end to end: splits, float + QAT training, evaluation, report, plots."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np

from runtime.files import write_json
from train import report as rep
from train.data import FashionMNIST
from train.model import count_macs
from train.trainer import FLOAT_MODEL, QAT_MODEL, TrainConfig, TrainingDiverged, make_splits, train

log = logging.getLogger(__name__)
REPORT = "train_report.json"


def run(config: TrainConfig, dataset: FashionMNIST, out: Path) -> dict:
    started = time.time()
    splits = make_splits(dataset, config)
    log.info("train %d, validation %d (from the training set), test %d (report only)",
             len(splits.y_train), len(splits.y_val), len(splits.y_test))
    out.mkdir(parents=True, exist_ok=True)
    contract = splits.contract
    rep.plot_samples(dataset.train_images, dataset.train_labels, contract.labels, out / "samples.png")

    results = train(config, splits, out)
    float_model = results["float"][0]
    report: dict = {
        "config": {**config.__dict__, "augment": config.augment.__dict__},
        "architecture": config.arch,
        "contract": contract.to_metadata(),  # what export embeds in every model
        "parameters": int(float_model.count_params()),
        "macs": count_macs(float_model),
        "data": {"source": str(dataset.source), "sha256": dataset.checksums,
                 "train": len(splits.y_train), "validation": len(splits.y_val),
                 "test": len(splits.y_test)},
        "models": {"float": FLOAT_MODEL, "qat": QAT_MODEL},
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
    }
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
                       f"QAT model on the official test set "
                       f"(accuracy {report['qat']['test_accuracy']:.2%})")
    write_json(out / REPORT, report)
    return report
