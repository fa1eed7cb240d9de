"""Training on more than one device or machine: ``--strategy`` and ``TF_CONFIG``.

``default`` is plain Keras (no ``tf.distribute``), exactly the one-process run. ``mirrored``
is ``tf.distribute.MirroredStrategy`` over this machine's devices. ``multi-worker`` is
``tf.distribute.MultiWorkerMirroredStrategy``: one process per worker, every one started
with the same command and its own ``TF_CONFIG``, e.g. for the second of two workers

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 1}}'

Worker 0 (or the task of type ``chief``) is the chief: it alone writes the models, the
report and the plots. Every worker reads and writes ``--out/backup`` (``BackupAndRestore``
restores all workers from the chief's checkpoint), so ``--out`` must be one shared folder
(the same path on every machine: NFS, a shared volume). See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

STRATEGIES = ("default", "mirrored", "multi-worker")
PEER_LOST = 75  # exit code (EX_TEMPFAIL): a worker was lost; restart every worker with the same command


class ClusterError(ValueError):
    """TF_CONFIG is missing or does not describe this worker."""


@dataclass
class Cluster:
    """The strategy of a run and this process's place in it."""

    strategy: object | None = None  # a tf.distribute.Strategy; None: the default, no tf.distribute
    workers: int = 1
    index: int = 0  # 0 is the chief

    @property
    def distributed(self) -> bool:
        return self.strategy is not None

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def scratch(self, out: Path) -> Path:
        """Where a non-chief worker saves what every worker must save (saving reads variables that
        are all-reduced across workers, so all of them take part) and then throws it away."""
        return Path(out) / f".worker-{self.index}"

    def cleanup(self, out: Path) -> None:
        if not self.is_chief:
            shutil.rmtree(self.scratch(out), ignore_errors=True)


LOCAL = Cluster()


TASK_TYPES = ("chief", "worker")  # MultiWorkerMirroredStrategy's; no parameter servers, no evaluator


def tf_config() -> dict:
    """The parsed ``TF_CONFIG``, checked enough to say what is wrong in one line."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ClusterError("--strategy multi-worker needs TF_CONFIG: the cluster's workers and this one's place, "
                           'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                           '"task": {"type": "worker", "index": 0}}\' (see docs/distributed.md)')
    try:
        config = json.loads(raw)
    except ValueError:
        raise ClusterError(f"TF_CONFIG is not JSON: {raw}") from None
    problem = tf_config_problem(config)
    if problem:
        raise ClusterError(f"TF_CONFIG does not name this task in its cluster ({problem}): {raw}")
    return config


def tf_config_problem(config: object) -> str | None:
    """What is wrong with a parsed TF_CONFIG for multi-worker training, or None."""
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not isinstance(config.get("task"), dict):
        return 'it needs a "cluster" object and a "task" object'
    cluster, task = config["cluster"], config["task"]
    others = sorted(set(cluster) - set(TASK_TYPES))
    if others or task.get("type") not in TASK_TYPES:
        return (f"task types {others or [task.get('type')]} are not supported: multi-worker training runs "
                f"only {' and '.join(TASK_TYPES)} tasks (no parameter servers, no evaluator)")
    for kind in TASK_TYPES:
        members = cluster.get(kind, [])
        if not isinstance(members, list) or not all(isinstance(m, str) and m.strip() for m in members):
            return f'cluster.{kind} must be a list of "host:port" strings, got {members!r}'
    if len(cluster.get("chief", [])) > 1:
        return "a cluster has at most one chief"
    index, members = task.get("index"), cluster.get(task["type"], [])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(members):
        return f"task.index must be a whole number from 0 to {len(members) - 1} for its {len(members)} " \
               f"{task['type']} task(s), got {index!r}"
    return None


def chief_index(config: dict) -> tuple[int, int]:
    """(this task's index among all workers, with the chief first; the number of workers)."""
    cluster, task = config["cluster"], config["task"]
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    return order.index((task["type"], int(task["index"]))), len(order)


def make_cluster(name: str) -> Cluster:
    """Create the strategy; for multi-worker before any other TensorFlow work (it starts a server)."""
    if name == "default":
        return LOCAL
    if name not in STRATEGIES:
        raise ClusterError(f"unknown strategy {name!r}: one of {', '.join(STRATEGIES)}")
    config = tf_config() if name == "multi-worker" else None  # checked before TensorFlow starts
    from train.keras_env import tf

    if name == "mirrored":
        return Cluster(tf.distribute.MirroredStrategy())
    index, workers = chief_index(config)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)  # CPU: ring all-reduce
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return Cluster(strategy, workers, index)


def peer_lost_errors() -> tuple[type[BaseException], ...]:
    """What a collective raises when another worker died (or never came)."""
    from train.keras_env import tf

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError, tf.errors.InternalError)


def free_ports(n: int) -> list[int]:
    """``n`` ports free on 127.0.0.1 now (held open together, so they differ)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(workers: int) -> list[str]:
    """One TF_CONFIG per worker of a cluster on this machine (tests, benchmarks, trying it out)."""
    hosts = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(workers)]
