"""Adversarial-training throughput: ours against a naive full-model version and the reference's algorithm in PyTorch.

max_average PGD training steps (PGD-10 at batch 128 by default: ResNet-38's and
MobileNetV2's paper recipes) on SmallCNN, ResNet-38 and MobileNetV2, every
implementation in the same process, their steps interleaved:

* ours: each exit's attack runs only the stages up to that exit, in inference
  mode with BatchNorm folded into the convs;
* ours, BatchNorm not folded: the same, with the inference-mode BatchNorms
  computed as layers of their own (what folding saves);
* naive: the same model, but every exit's attack runs the whole network (all
  stages and heads), as a straightforward implementation would;
* PyTorch: the reference's algorithm (full-model attacks, eval mode; the
  max-average pick; clean + adversarial loss in train mode; SGD momentum 0.9
  with L2 weight decay), written for this benchmark on the reference
  architectures of :mod:`rdinet_tf.models.torch_reference`, at PyTorch's default threads.

Every implementation starts from the same weights (the PyTorch model's
initialisation, imported with :func:`rdinet_tf.models.torch_checkpoint.load_state_dict`)
and trains on the same real batch (the first of the training split).

Each row also gives the step's executed work in GFLOP/s (the convolution and
dense multiply-accumulates it runs, x2, counted from the model: see
:func:`step_macs`) against 2048x2048 float32 matmuls timed between the steps
(interleaved like them). ``--profile`` adds where our step's time goes, by
TensorFlow op type, from one TensorFlow profiler trace.

A second table times the attacks alone (compiled, ``--attack-steps``, ``--attack-batch``):
each single-exit attack, their sum, max-average, and K times the last exit's
attack (what K full passes would cost), for ours and the naive version.

Usage: python benchmarks/train_throughput.py [--data-dir ../shared/data] [--models smallcnn,resnet38,mobilenetv2]
       [--steps 5] [--batch-size 128] [--attack-steps 10] [--attack-batch 32] [--profile] [--control]
"""

import argparse
import collections
import glob
import os
import platform
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf.architecture import flops
from rdinet_tf import attacks
from rdinet_tf.models.torch_checkpoint import load_state_dict
from rdinet_tf.models import MultiExitModel
from rdinet_tf.training import paper_optimizer
from timing import interleaved_seconds, median_seconds

MATMUL = "10 float32 2048x2048 matmuls (for scale)"
# TensorFlow op types that do the convolution and dense work (oneDNN's names included).
CONVOLUTION_OPS = ("Conv2D", "DepthwiseConv", "MatMul")


class FullForwardModel(MultiExitModel):
    """The same network, but every exit's logits come from a forward pass through all stages and heads."""

    def exit_logits(self, images, exits=None, training=False):
        logits = super().exit_logits(images, None, training)
        return [logits[k] for k in (range(self.num_exits) if exits is None else exits)]


class UnfoldedModel(MultiExitModel):
    """The same network, its inference-mode passes through the plain stages and heads (BatchNorm not folded)."""

    def inference_segments(self):
        return self.stages, self.heads


def step_macs(model, attack_steps, full_forward_attacks=False):
    """Multiply-accumulates per image that one max-average PGD training step of ``model`` executes.

    Attacks: per step, a forward pass and an input-gradient pass (about the
    forward's MACs again). The gradient of exit k's loss flows back only
    through head k and stages 1..k; the forward runs that far too, unless
    ``full_forward_attacks`` (PyTorch's eager forward computes every stage and
    head; TensorFlow's graph prunes what the loss does not use, so the naive
    row executes what ours does). Max-average pick: one whole forward per
    candidate. Update: clean and adversarial whole forwards in training mode,
    each with input and weight gradients (twice the forward's MACs).
    """
    stages, heads = (np.array([m.total for m in segment]) for segment in flops.segment_macs(model))
    whole = stages.sum() + heads.sum()
    to_exit = np.cumsum(stages) + heads
    forward = np.full(model.num_exits, whole) if full_forward_attacks else to_exit
    return attack_steps * (forward + to_exit).sum() + model.num_exits * whole + 2 * 3 * whole


def matmul_call(size=2048, repeats=10):
    """``(call, flops)``: ``repeats`` compiled ``size`` x ``size`` float32 matmuls (distinct: none is merged), and their FLOPs."""
    a = tf.random.stateless_normal((size, size), (0, 0))
    products = tf.function(lambda a: tf.add_n([tf.matmul(a + i, a) for i in range(repeats)]))
    return (lambda: products(a).numpy()), 2 * repeats * size**3


def torch_reference_step(name, images, labels, attack_steps):
    """``((label, step), weights)``: one step of the reference's max-average PGD training in PyTorch, and its
    initial weights as our model's ``get_weights()``; ``(None, a fresh model's weights)`` without torch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, models.build(name).get_weights()
    from rdinet_tf.models.torch_reference import REFERENCE_MODELS

    paper = models.MODELS[name].paper_recipe
    eps, step_size = paper.eps, paper.step_size
    model = REFERENCE_MODELS[name]()
    ours = models.build(name)
    load_state_dict(ours, {key: value.numpy() for key, value in model.state_dict().items()}, name)
    optimizer = torch.optim.SGD(model.parameters(), paper.learning_rate, momentum=0.9,
                                weight_decay=paper.weight_decay)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(0)

    def attack(exit_index):
        adversarial = (x + (2 * torch.rand(x.shape, generator=generator) - 1) * eps).clamp(0, 1)
        for _ in range(attack_steps):
            adversarial.requires_grad_(True)
            loss = F.cross_entropy(model(adversarial)[exit_index], y, reduction="sum")
            gradient, = torch.autograd.grad(loss, adversarial)
            adversarial = torch.min(torch.max(adversarial.detach() + step_size * gradient.sign(), x - eps),
                                    x + eps).clamp(0, 1)
        return adversarial.detach()

    def step():
        model.eval()
        with torch.no_grad():
            num_exits = len(model(x[:1]))
        candidates = [attack(k) for k in range(num_exits)]
        with torch.no_grad():
            scores = torch.stack([sum(F.cross_entropy(z, y, reduction="none") for z in model(c))
                                  for c in candidates])
        adversarial = torch.stack(candidates, 1)[torch.arange(len(y)), scores.argmax(0)]
        model.train()
        loss = sum(0.5 * F.cross_entropy(clean, y) + 0.5 * F.cross_entropy(adv, y)
                   for clean, adv in zip(model(x), model(adversarial)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return (f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads", step), ours.get_weights()


def op_time_table(model, images, labels):
    """Print our step's compute time by TensorFlow op type, from one profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    model.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        model.train_on_batch(images, labels)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    milliseconds = collections.Counter()
    for line in plane.lines:
        if line.name.startswith("tf_Compute"):  # the executor's threads; "Process" events enclose the ops
            for event in line.events:
                op_type = plane.event_metadata[event.metadata_id].name.split(":")[-1]
                if op_type != "Process":
                    milliseconds[op_type] += event.duration_ps / 1e9
    total = sum(milliseconds.values())
    convolution = sum(ms for op, ms in milliseconds.items() if any(c in op for c in CONVOLUTION_OPS))
    print(f"\n# {model.name}: one step's op time by type (both compute threads), {total:.0f} ms in all, "
          f"convolution and dense ops {100 * convolution / total:.0f}%")
    print("| op type | ms | share |")
    print("|---|---|---|")
    for op_type, ms in milliseconds.most_common(12):
        print(f"| {op_type} | {ms:.0f} | {100 * ms / total:.1f}% |")


def attack_seconds(model, images, labels, attack, objective, repeats):
    """Median seconds of ``repeats`` compiled attacks after one warm-up (seed a tensor: no retracing)."""
    run = attacks.attack_function(model, attack, objective)
    return median_seconds(lambda seed: np.asarray(run(images, labels, tf.constant(seed))), repeats)


def attack_table(names, batch_size, repeats, attack_steps):
    """Print the attack-cost table: single exits, their sum, max-average, K x last exit."""
    print(f"\n# attacks alone: PGD-{attack_steps}, batch {batch_size}, median of {repeats} after warm-up, seconds")
    print("| model | implementation | last exit | sum of single exits | max_average | K x last exit |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in names:
        spec = models.MODELS[name]
        images = tf.constant(rng.random((batch_size, *spec.input_shape), dtype=np.float32))
        labels = tf.constant(rng.integers(0, 10, batch_size))
        attack = attacks.PGD(spec.paper_recipe.eps, spec.paper_recipe.step_size, attack_steps)
        base = models.build(name)
        for label, cls in (("ours", MultiExitModel), ("naive", FullForwardModel)):
            model = cls(base.stages, base.heads, name=f"{name}_{label}")
            singles = [attack_seconds(model, images, labels, attack, f"exit_{k + 1}", repeats)
                       for k in range(model.num_exits)]
            max_average = attack_seconds(model, images, labels, attack, "max_average", repeats)
            print(f"| {name} | {label} | {singles[-1]:.3f} | {sum(singles):.3f} | {max_average:.3f} | "
                  f"{model.num_exits * singles[-1]:.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smallcnn,resnet38")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--attack-steps", type=int, default=10,
                        help="PGD steps of the training attack (the paper recipes: 10 for CIFAR-10, 40 for SmallCNN)")
    parser.add_argument("--attack-batch", type=int, default=32, help="batch of the attack-cost table (0: skip it)")
    parser.add_argument("--profile", action="store_true", help="also print our step's op time by type")
    parser.add_argument("--control", action="store_true",
                        help="add a second copy of ours, last in the interleaving: the spread between identical rows")
    parser.add_argument("--data-dir", default="../shared/data",
                        help="where mnist.npz / cifar10*.npz are: each step trains on the first training batch")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [name for name in names if name not in models.MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(models.MODELS)}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, tensorflow {tf.__version__}, "
          f"keras {keras.__version__}; max_average PGD-{args.attack_steps}, batch {args.batch_size}, "
          f"median of {args.steps} interleaved steps after warm-up, on real training images")
    print("| model | implementation | img/s | ours faster by | executed GFLOP/s | of matmul |")
    print("|---|---|---|---|---|---|")
    for name in names:
        spec = models.MODELS[name]
        paper = spec.paper_recipe
        splits = data.load(spec.dataset, data_dir=args.data_dir)
        images, labels = splits.x_train[:args.batch_size], splits.y_train[:args.batch_size].astype(np.int64)
        attack = attacks.PGD(paper.eps, paper.step_size, args.attack_steps)
        trained, calls, work = {}, {}, {}
        reference, initial_weights = torch_reference_step(name, images, labels, args.attack_steps)
        variants = [("ours", MultiExitModel), ("ours, BatchNorm not folded", UnfoldedModel),
                    ("naive", FullForwardModel)] + [("ours again (control)", MultiExitModel)] * args.control
        for label, cls in variants:
            base = models.build(name)
            model = trained[label] = cls(base.stages, base.heads, name=f"{name}_{cls.__name__}")
            model.set_weights(initial_weights)  # every implementation starts from the same weights
            model.compile(optimizer=paper_optimizer(paper, paper.iterations), defense="max_average",
                          attack=attack)
            calls[label] = lambda model=model: model.train_on_batch(images, labels)
            work[label] = step_macs(model, args.attack_steps)
        if reference is not None:
            label, calls[label] = reference
            work[label] = step_macs(model, args.attack_steps, full_forward_attacks=True)
        calls[MATMUL], matmul_flops = matmul_call()
        seconds = interleaved_seconds(calls, args.steps)
        matmul = matmul_flops / seconds.pop(MATMUL) / 1e9
        print(f"| {name} | {MATMUL} | | | {matmul:.0f} | 100% |")
        for label, s in seconds.items():
            gflops = 2 * work[label] * args.batch_size / s / 1e9
            print(f"| {name} | {label} | {args.batch_size / s:.1f} | {s / seconds['ours']:.2f}x | "
                  f"{gflops:.0f} | {100 * gflops / matmul:.0f}% |", flush=True)
        if args.profile:
            op_time_table(trained["ours"], images, labels)
    if args.attack_batch:
        attack_table(names, args.attack_batch, args.steps, args.attack_steps)


if __name__ == "__main__":
    main()
