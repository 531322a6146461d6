"""Where training runs: a ``tf.distribute`` strategy chosen by name, checked before any work.

* ``"none"``: TensorFlow's default strategy (one device).
* ``"mirrored"``: ``MirroredStrategy`` over all local GPUs, or over
  ``cpu_devices`` logical CPU devices (to test on a CPU machine).
* ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the machines that
  the standard ``TF_CONFIG`` environment variable describes, e.g.
  ``{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}``.
  Every worker runs the same command; the chief (task type ``chief``, or
  worker 0 when the cluster has none) is the one that writes outputs.

A global batch of ``B`` images is split into ``B / replicas`` images per
replica (Keras splits every batch of a distributed dataset in order, and
shards it over the workers); gradients are summed over the replicas, so
``MultiExitModel.train_step`` divides its loss by their number.
"""

import dataclasses
import json
import os
import re

import tensorflow as tf

from rdinet_lite.errors import InputError
from rdinet_tf.catalog import STRATEGIES

TF_CONFIG = "TF_CONFIG"
_ADDRESS = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}")


@dataclasses.dataclass(frozen=True)
class Placement:
    """A strategy and where this process stands in it."""

    name: str
    strategy: tf.distribute.Strategy
    replicas: int
    workers: int = 1
    worker: int = 0  # this process's index among the workers
    is_chief: bool = True

    def per_replica_batch(self, global_batch, option="--batch-size"):
        """The per-replica share of ``global_batch``; one clear error unless it splits evenly."""
        if global_batch < self.replicas or global_batch % self.replicas:
            raise InputError(f"{option} {global_batch} (the global batch) must be a multiple of the "
                             f"{self.replicas} replicas of --distribute {self.name}; pass e.g. "
                             f"{option} {max(1, global_batch // self.replicas) * self.replicas}")
        return global_batch // self.replicas

    def wait_for_all(self):
        """Block until every worker reaches this point (at once on one worker).

        A worker that ends early would be reported as crashed to the others, so
        each worker calls this last: the chief after writing the outputs.
        """
        if self.workers > 1:
            self.strategy.reduce("SUM", self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    def to_dict(self):
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers,
                "worker": self.worker, "is_chief": self.is_chief}


def check(name, cpu_devices=None, environ=None):
    """One clear error for a strategy request that cannot work; no TensorFlow state is touched.

    Returns the parsed ``TF_CONFIG`` for ``multi_worker`` (else None).
    """
    environ = os.environ if environ is None else environ
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    if cpu_devices is not None and name != "mirrored":
        raise InputError("--cpu-devices N mirrors over N logical CPU devices: give it with --distribute mirrored")
    if cpu_devices is not None and cpu_devices < 1:
        raise InputError(f"--cpu-devices must be 1 or more; got {cpu_devices}")
    if name != "multi_worker":
        return None
    return _tf_config(environ.get(TF_CONFIG))


def _tf_config(text):
    fix = ('set TF_CONFIG to e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
           '"task": {"type": "worker", "index": 0}} on each machine (its own index)')
    if not text:
        raise InputError(f"--distribute multi_worker needs the {TF_CONFIG} environment variable; {fix}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], task["index"]
        members = cluster[task_type]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{TF_CONFIG} is malformed ({type(error).__name__}: {error}); {fix}") from None
    if not isinstance(members, list):
        raise InputError(f"{TF_CONFIG} cluster {task_type!r} must be a list of \"host:port\" strings; got "
                         f"{json.dumps(members)[:100]}; {fix}")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(members):
        raise InputError(f"{TF_CONFIG} task index {index!r} is not among the {len(members)} "
                         f"{task_type!r} addresses; {fix}")
    if not set(cluster) <= {"chief", "worker"} or task_type not in cluster:
        raise InputError(f"{TF_CONFIG} cluster may hold only 'chief' and 'worker' tasks and must hold "
                         f"this task's type; got {sorted(cluster)} and {task_type!r}")
    addresses = []
    for kind in sorted(cluster):
        members = cluster[kind]
        if not isinstance(members, list) or not all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in members):
            raise InputError(f"{TF_CONFIG} cluster {kind!r} must be a list of \"host:port\" strings; got "
                             f"{json.dumps(members)[:100]}; {fix}")
        addresses += members
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise InputError(f"{TF_CONFIG} lists the address {duplicates[0]} more than once: every task needs its own "
                         f"host:port; {fix}")
    if len(addresses) < 2:
        raise InputError(f"{TF_CONFIG} describes a cluster of one task ({addresses[0]}): multi_worker needs two or "
                         "more; on one machine use --distribute none or mirrored")
    return config


def place(name, cpu_devices=None, environ=None):
    """The :class:`Placement` for strategy ``name``; call it before any other TensorFlow work."""
    config = check(name, cpu_devices, environ)
    if name == "none":
        return Placement(name, tf.distribute.get_strategy(), 1)
    if name == "mirrored":
        if cpu_devices is None:
            return _placement(name, tf.distribute.MirroredStrategy())
        return _placement(name, tf.distribute.MirroredStrategy(
            _logical_cpus(cpu_devices), cross_device_ops=tf.distribute.ReductionToOneDevice()))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task_type, index = config["task"]["type"], config["task"]["index"]
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in config["cluster"])
    workers = sum(len(members) for members in config["cluster"].values())
    worker = index + (len(config["cluster"].get("chief", [])) if task_type == "worker" else 0)
    return Placement(name, strategy, strategy.num_replicas_in_sync, workers, worker, is_chief)


def _placement(name, strategy):
    return Placement(name, strategy, strategy.num_replicas_in_sync)


def _logical_cpus(count):
    """The names of ``count`` logical CPU devices, splitting the physical CPU if TensorFlow has not started."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # devices are initialised: only an existing split of the same size can be used
        pass
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) != count:
        raise InputError(f"--cpu-devices {count}: TensorFlow already runs on {len(logical)} CPU device(s) in "
                         "this process; split the CPU before any other TensorFlow work (start a new process)")
    return [device.name for device in logical]
