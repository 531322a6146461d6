#!/usr/bin/env python3
"""Benchmark an exported bundle on a Linux board with the LiteRT Python runtime.

Runs, one image at a time: the chained early-exit runner, the in-graph early
exit and the full model (if the bundle has them) and every segment alone;
prints p50/p95 latencies and the exit shares (exits numbered 1..K, as in the
manifest), writes the per-segment CSV of :mod:`rdinet_lite.latency` and, last,
a JSON summary line (``exit_shares`` keyed ``exit_1``.., ``segment_us`` keyed
``segment_1``..).

    python3 -m rdinet_lite.edge --bundle BUNDLE [--images test.npz --key x_test]
        [--count 500] [--threads 1] [--out edge_latency.csv]

Needs only numpy, ai-edge-litert and the ``rdinet_lite`` package (this checkout's
``rdinet_lite/`` folder); it imports no TensorFlow and no Keras (see device/README.md).
Without --images it uses uniform random images and the exit distribution
recorded in the manifest. Errors: one line ``error: ...`` on stderr, exit code 2.
"""

import json
import platform
import sys
from pathlib import Path

import numpy as np

from rdinet_lite import arguments, files, latency
from rdinet_lite.manifest import MANIFEST
from rdinet_lite.runner import EarlyExitRunner


def main(argv=None):
    parser = arguments.ArgumentParser(prog="python -m rdinet_lite.edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="exported bundle directory")
    parser.add_argument("--images", help=".npz of test images, uint8 0..255 or float 0..1 (default: uniform "
                        "random images)")
    parser.add_argument("--key", default="x_test", help="array name in --images (default x_test)")
    parser.add_argument("--count", type=arguments.positive_int,
                        help="images to time (default: every image of --images, else 500 random images)")
    parser.add_argument("--threads", type=arguments.positive_int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--warmup", type=arguments.non_negative_int, default=20,
                        help="untimed warm-up images (default 20)")
    parser.add_argument("--out", default="edge_latency.csv", help="CSV to write (default: edge_latency.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    return arguments.guarded(_run, args)


def _run(args):
    files.check_output(args.out, directory=False, overwrite=args.overwrite,
                       inputs=[Path(args.bundle) / MANIFEST, args.images])
    with files.lock(args.out):
        runner = EarlyExitRunner(args.bundle, num_threads=args.threads)
        in_graph = (EarlyExitRunner(args.bundle, num_threads=args.threads, in_graph=True)
                    if runner.manifest.in_graph_exit is not None else None)
        if args.images:
            images = latency.images_from_npz(args.images, args.key, runner.image_shape, args.count)
        else:
            images = np.random.default_rng(0).random((args.count or 500, *runner.image_shape), np.float32)
        result = latency.benchmark_bundle(runner, images, args.warmup, in_graph)
        shares = (result["exit_shares"] if args.images
                  else latency.manifest_distribution(runner.manifest))
        full_us = None if result["full_ms"] is None else result["full_ms"]["mean"] * 1e3
        rows = latency.combine(runner.manifest, result["segment_us"], shares, full_us)
        latency.write_csv(rows, args.out, overwrite=args.overwrite)
    early, full = result["early_exit_ms"], result["full_ms"]
    print(f"{platform.machine()} {platform.platform()}, {args.threads} thread(s), "
          f"{len(images)} images, precision {runner.manifest.precision}")
    print(f"exit shares        {_numbered('exit', result['exit_shares'], '.3f')}  (measured on these images)")
    if not args.images:
        print(f"                   {_numbered('exit', shares, '.3f')}  (from the manifest, used in the CSV)")
    print(f"segments (us)      {_numbered('segment', result['segment_us'], '.1f')}")
    print(f"early exit (ms)    p50 {early['p50']:.3f}  p95 {early['p95']:.3f}  mean {early['mean']:.3f}"
          f"  (predicted from segments {result['predicted_early_exit_ms']:.3f})")
    if result["in_graph_ms"] is not None:
        timing = result["in_graph_ms"]
        print(f"in-graph exit (ms) p50 {timing['p50']:.3f}  p95 {timing['p95']:.3f}  mean {timing['mean']:.3f}")
    if full is not None:
        print(f"full model (ms)    p50 {full['p50']:.3f}  p95 {full['p95']:.3f}  mean {full['mean']:.3f}")
    print(f"wrote {args.out}")
    summary = {key: value for key, value in result.items() if key != "predictions"}
    summary["exit_shares"] = {f"exit_{k}": share for k, share in enumerate(result["exit_shares"], 1)}
    summary["segment_us"] = {f"segment_{k}": us for k, us in enumerate(result["segment_us"], 1)}
    print(json.dumps(summary))
    return 0


def _numbered(kind, values, spec):
    """``values`` labelled 1..K: ``exit 1: 0.25  exit 2: 0.75``."""
    return "  ".join(f"{kind} {k}: {value:{spec}}" for k, value in enumerate(values, 1))


if __name__ == "__main__":
    sys.exit(main())
