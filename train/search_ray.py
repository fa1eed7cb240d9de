"""python -m train.search --backend ray: the same trials, scheduled by Ray Tune with ASHA.

The trials are those of the local search (trial 0 the shipped recipe, then the seeded
samples), one Tune trial each. Every trial runs in its own Ray worker process with
``--cpus-per-trial`` CPUs and as many TensorFlow threads, so trials side by side do not
fight over cores; it reports its validation accuracy after every epoch, and ASHA stops the
trials in the bottom half at 1, 2, 4, ... epochs. ``search.json`` has the local search's
format (plus ``backend`` and each trial's ``epochs_run``) and is rewritten as trials finish.

Ctrl-C stops the search; the same command resumes it (finished trials are kept, unfinished
ones start again) from Tune's experiment folder beside ``--out``. On a cluster
(``--address``), every node needs this package and the data (see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path

from ray import tune  # pip install .[distributed]

log = logging.getLogger(__name__)


def trial_fn(config: dict) -> None:
    """One trial, in a Ray worker process: its own TensorFlow thread budget, then train."""
    from train.keras_env import keras, tf

    threads = int(config["threads"])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from train import data as fmnist
    from train.model import count_macs
    from train.trials import run_trial, search_splits

    splits = search_splits(fmnist.load(config["data_dir"], allow_download=False), config["limit"], config["seed"])
    started, scores = time.time(), []

    class Report(keras.callbacks.Callback):
        """After every epoch, the trial's record so far: ASHA may stop the trial at any report."""

        def on_train_begin(self, logs=None):
            self.facts = {"parameters": int(self.model.count_params()), "macs": count_macs(self.model)}

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {}).get("val_accuracy", 0.0))
            scores.append(value if math.isfinite(value) else 0.0)
            tune.report({"val_accuracy": max(scores), "final_val_accuracy": scores[-1], **self.facts,
                         "epochs_run": len(scores), "wall_time_s": round(time.time() - started, 1)})

    with tempfile.TemporaryDirectory() as work:
        run_trial(config["params"], splits, config["epochs"], config["seed"], Path(work), [Report()])


def record(config: dict, result: dict, plan: list[dict]) -> dict | None:
    """search.json's record of a Tune trial (finished, or stopped early by ASHA) from its last result."""
    from train.model import spec

    if not result or "val_accuracy" not in result:
        return None
    params = plan[config["trial"]]
    return {"trial": config["trial"], "params": params,
            "arch": spec("edge", width=params["width"], dropout=params["dropout"]),
            **{key: result.get(key) for key in ("parameters", "macs", "val_accuracy", "final_val_accuracy")},
            "wall_time_s": result.get("wall_time_s"), "epochs_run": result.get("epochs_run"),
            "stopped_early": result.get("epochs_run", 0) < config["epochs"]}


def finished_trials(path: Path) -> dict[int, dict]:
    """The trials search.json at ``path`` already holds, by number."""
    try:
        return {t["trial"]: t for t in json.loads(path.read_text())["trials"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class WriteResults(tune.Callback):
    """A Tune callback: search.json rewritten with every trial that finishes (or ASHA stops).

    Tune pickles it with the experiment and brings it back on a resume, so it keeps no trials
    itself: it adds each one to what search.json holds."""

    def __init__(self, out: Path, budget: dict, plan: list[dict]):
        self.out, self.budget, self.plan, self.started = out, budget, plan, time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        from runtime.files import write_json
        from train.trials import payload

        entry = record(trial.config, trial.last_result, self.plan)
        if entry is None:
            return
        done = {**finished_trials(self.out), entry["trial"]: entry}
        write_json(self.out, payload(self.budget, list(done.values()), time.time() - self.started, backend="ray",
                                     scheduler="ASHA (reduction factor 2, grace period 1 epoch)"))


def main(args: argparse.Namespace) -> int:
    import ray
    from ray.tune.schedulers import ASHAScheduler

    from train import data as fmnist
    from train.trials import budget, candidates, search_splits

    try:
        dataset = fmnist.load(args.data_dir)  # here first: fetched once, and a clear error if it is missing
    except fmnist.DataError as e:
        print(f"error: {e}")
        return 2
    splits = search_splits(dataset, args.limit, args.seed)
    data_dir = None if args.data_dir is None else str(args.data_dir.resolve())
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    storage, name = out.parent / "ray_results", f"{out.stem}-seed{args.seed}"
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    started = time.time()
    space = {"trial": tune.grid_search(list(range(args.trials))), "epochs": args.epochs, "limit": args.limit,
             "seed": args.seed, "data_dir": data_dir, "threads": args.cpus_per_trial}
    plan = candidates(args.trials, args.seed)

    def trainable(config):
        trial_fn({**config, "params": plan[config["trial"]]})

    trainable = tune.with_resources(trainable, {"cpu": args.cpus_per_trial})
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=args.epochs, grace_period=1, reduction_factor=2)
    path = str(storage / name)
    if tune.Tuner.can_restore(path):
        print(f"resuming the search in {path}")
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True, param_space=space)
    else:
        out.unlink(missing_ok=True)  # a new search: no trials of an older one
        callback = WriteResults(out, budget(args, splits), plan)
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=scheduler, reuse_actors=False,
                                        time_budget_s=None if args.max_minutes is None else 60 * args.max_minutes),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=[callback], verbose=1))
    try:
        tuner.fit()  # Ctrl-C: Tune saves its state and returns
    except KeyboardInterrupt:
        pass
    finally:
        ray.shutdown()
    finished = finished_trials(out)
    over_budget = args.max_minutes is not None and time.time() - started >= 60 * args.max_minutes
    if len(finished) < args.trials and not over_budget:
        print(f"\ninterrupted: {len(finished)} of {args.trials} trials finished (in {out}); "
              "run the same command again to resume")
        return 130
    if not finished:
        print("error: no trial finished (see the Ray log above)")
        return 1
    best = max(finished.values(), key=lambda t: t["val_accuracy"])
    print(f"\nbest of {len(finished)}: trial {best['trial']} val {best['val_accuracy']:.4f} {best['params']}")
    print(f"wrote {out} in {(time.time() - started) / 60:.1f} min")
    return 0
