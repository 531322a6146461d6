"""Expected on-device early-exit latency: ``rdinet-bench --bundle B --logs LOG_DIR --out latency.csv``.

``LOG_DIR`` holds one LiteRT ``benchmark_model`` log per ``.tflite`` file of the
bundle, named after it (``segment_1.log``, ..., ``full_model.log``); they are
combined with the manifest's exit distribution, or ``--distribution exits.csv``
(see :mod:`rdinet_tf.bench_kit`). Needs only numpy and ai-edge-litert.
"""

from pathlib import Path

from rdinet_tf import bench_kit
from rdinet_tf.cli import base
from rdinet_tf.runtime import load_manifest


def parser():
    parser = base.ArgumentParser(prog="rdinet-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="exported bundle directory (manifest.json)")
    parser.add_argument("--logs", required=True, help="directory of <file stem>.log benchmark logs")
    parser.add_argument("--distribution", help="CSV with columns exit,share (or exit,count); "
                        "default: the manifest's exit_distribution")
    parser.add_argument("--out", required=True, help="CSV to write")
    return parser


@base.command(parser)
def main(args):
    manifest = load_manifest(args.bundle)
    logs = Path(args.logs)
    latencies = [bench_kit.log_timing(logs, s["file"]).avg_us for s in manifest["segments"]]
    full = manifest.get("full_model")
    full_latency = (bench_kit.log_timing(logs, full["file"]).avg_us
                    if full and (logs / f"{Path(full['file']).stem}.log").is_file() else None)
    shares = (bench_kit.read_distribution_csv(args.distribution, len(latencies)) if args.distribution
              else bench_kit.manifest_distribution(manifest))
    rows = bench_kit.combine(manifest, latencies, shares, full_latency)
    bench_kit.write_csv(rows, args.out)
    for row in rows:
        print(f"{row['row']:<22}{row['latency_us']:>14.4g}  {row['mflops_honest']:>10.4g}")


if __name__ == "__main__":
    raise SystemExit(main())
