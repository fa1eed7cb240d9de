"""python -m export: QAT model -> int8 TFLite / float + int8 ONNX, then the parity gate.

Exit codes: 0 exported and the parity gate passed, 1 the gate failed, 2 a usage error, no
model or data, or --out cannot be written (read-only, full disk: the models already there
are left as they were), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from export.formats import FAMILIES, check_name, exported, model_name

GOLDEN = "qat_test_predictions.npy"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    p.add_argument("--format", choices=(*FAMILIES, "all"), default="all")
    p.add_argument("--model", type=Path, default=Path("artifacts/qat_model.h5"),
                   help="the QAT model written by `python -m train`")
    p.add_argument("--out", type=Path, default=None, help="default: the model's directory")
    p.add_argument("--name", default=None,
                   help="the start of the files' names (NAME_int8.tflite, ...); default: fashion for Fashion-MNIST, "
                        "model for a folder of your own")
    p.add_argument("--calibration-size", type=int, default=1000,
                   help="training images (stratified, at least one per class) to calibrate int8 ranges")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--check", action="store_true",
                   help="only run the parity gate on the models already in --out")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error("--opset must be 17 or newer")
    if args.seed < 0:
        p.error("--seed must be 0 or more")
    if args.calibration_size < 2:
        p.error("--calibration-size must be at least one image per class")
    if args.name is not None:
        try:
            check_name(args.name)
        except ValueError as e:
            p.error(str(e))
    args.out = args.out or args.model.parent
    return args


def export(args, qat_model, dataset) -> dict[str, Path]:
    """Write the formats asked for; returns {format name: path}."""
    from export.calibration import calibration_images
    from export.formats import Job, selected
    from export.metadata import build_metadata, model_version, training_summary

    contract = dataset.contract
    version = model_version(args.model)
    training = training_summary(args.model.parent / "train_report.json")
    job = Job(qat_model, training.get("architecture") or "edge", contract,
              calibration_images(dataset.train_images, dataset.train_labels, args.calibration_size,
                                 contract, args.seed),
              lambda fmt: build_metadata(fmt, version, training, contract), args.out, name=args.name,
              opset=args.opset)
    for fmt in selected(args.format):
        job.source(fmt.name)
    for path in job.written.values():
        print(f"wrote {path}")
    return job.written


def parity(args, qat_model, dataset, models: dict[str, Path]) -> int:
    """Gate ``models`` ({format name: path}) against the QAT model; exit code 0 or 1."""
    from export import parity as gate
    from runtime.files import atomic_path, write_json

    if not models:
        print(f"error: no exported models in {args.out}: run `python -m export --format all`",
              file=sys.stderr)
        return 2
    contract = dataset.contract
    every, test = gate.every_image(dataset), gate.Images(dataset.test_images, dataset.test_labels)
    reference = gate.predictions(lambda x: qat_model.predict(x, batch_size=1000, verbose=0), every, test,
                                 contract)
    results = gate.evaluate(reference, args.model.stat().st_size, models, every, test, contract)
    # golden file: the QAT model's top-1 on the test set, for tests of the bundled models
    with atomic_path(args.out / GOLDEN) as tmp:
        np.save(tmp, reference[1].argmax(1).astype(contract.label_dtype))
    problems = gate.failures(results)
    test_is_validation = dataset.test_is_validation
    where, every_where = describe_sets(dataset, test_is_validation)
    payload = {"model": args.name, "test_images": len(test), "test_set": where,
               "test_is_validation": test_is_validation,
               "agreement_images": len(every), "agreement_set": every_where,
               "reference": gate.REFERENCE, "formats": results,
               "int8_vs_float_per_class": gate.int8_vs_float(results),
               "thresholds": {"max_int8_accuracy_drop": gate.MAX_INT8_ACCURACY_DROP,
                              "accuracy_drop_judged_by": "one-sided 95% lower confidence bound "
                                                         f"(z={gate.Z_ONE_SIDED_95}) of the paired drop",
                              "min_int8_top1_agreement": gate.min_agreement(len(every))},
               "passed": not problems, "failures": problems}
    write_json(args.out / "parity.json", payload)
    if len(test) < 200:
        logging.getLogger(__name__).warning(
            "the accuracy check has only %d labelled images: only a large int8 drop can fail it; more "
            "labelled images in test/ make it finer", len(test))
    print(f"\nParity with {gate.REFERENCE}: accuracy on {where} ({len(test)} images),\n"
          f"top-1 agreement on {every_where} ({len(every)} images):")
    print(gate.table(results))
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"parity {'FAILED' if problems else 'passed'}; wrote {args.out / 'parity.json'}")
    return 1 if problems else 0


def describe_sets(dataset, test_is_validation: bool) -> tuple[str, str]:
    """In words: the images accuracy is measured on, and those agreement is measured on."""
    from train.datasets import kind_of

    kind = kind_of(dataset)
    if not kind.agree_on_every_image:
        return kind.test_set, kind.test_set
    test = (f"{dataset.source}'s validation images (no test/)" if test_is_validation else
            f"{dataset.source}'s test images")
    return test, (f"every image of {dataset.source} (training and validation)" if test_is_validation else
                  f"every image of {dataset.source} (training, validation and test)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not args.model.is_file():
        print(f"error: no QAT model at {args.model}: run `python -m train` or pass --model",
              file=sys.stderr)
        return 2
    from train.data import DataError
    from train.datasets import FOLDER, kind_of
    from train.folders import load_recorded
    from runtime.files import check_writable, write_error
    from train.trainer import load_qat_model

    try:
        check_writable(args.out)  # before the conversions, not after them
    except OSError as e:
        print(f"error: {write_error(e, args.out)}", file=sys.stderr)
        return 2
    started = time.time()
    try:
        report_path = args.model.parent / "train_report.json"
        try:
            recorded = json.loads(report_path.read_text()).get("data") if report_path.is_file() else None
        except ValueError as e:
            print(f"error: {report_path} is not valid JSON ({e}); re-run `python -m train`", file=sys.stderr)
            return 2
        dataset = load_recorded(recorded if isinstance(recorded, dict) else None, args.data_dir)
        kind = kind_of(dataset)
        if args.name is None and not args.check:  # the files are named after the data
            args.name = kind.model_name
        if kind is FOLDER:
            print(f"data: the folder {dataset.source} ({len(dataset.contract.labels)} classes, "
                  f"{dataset.contract.height}x{dataset.contract.width} {dataset.contract.color}), as trained")
        try:
            qat_model = load_qat_model(args.model)
        except (OSError, ValueError) as e:
            print(f"error: {args.model} is not a readable QAT model ({e}); re-run `python -m train`",
                  file=sys.stderr)
            return 2
        if args.calibration_size < len(dataset.contract.labels):
            print(f"error: --calibration-size must be at least {len(dataset.contract.labels)} "
                  "(one image per class)", file=sys.stderr)
            return 2
        if args.check:
            args.name = model_name(args.out, args.name)  # the one model whose files are there
            models = exported(args.out, args.name)
        else:
            models = export(args, qat_model, dataset)
        code = parity(args, qat_model, dataset, models)
    except (DataError, ValueError) as e:  # ValueError: a QAT model of an unknown architecture
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: no partial model was left; existing models are unchanged",
              file=sys.stderr)
        return 130
    except OSError as e:  # e.g. the disk filled up during a write
        print(f"error: {write_error(e, args.out)}; no partial file was left and the models already in "
              f"{args.out} are unchanged", file=sys.stderr)
        return 2
    print(f"done in {time.time() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
