"""Expected on-device early-exit latency: ``rdinet-bench --bundle B --logs LOG_DIR --out latency.csv``.

``rdinet-bench --bundle B --plan`` prints the ``benchmark_model`` runs the
bundle needs, one ``FILE SIGNATURE`` line each (what ``device/android_benchmark.sh``
runs on the phone).

``LOG_DIR`` holds one LiteRT ``benchmark_model`` log per signature of the
bundle's file, named after it (``segment_1.log``, ..., ``full.log``); they are
combined with the manifest's exit distribution, or ``--distribution exits.csv``
(see :mod:`rdinet_lite.latency`). Needs only numpy and ai-edge-litert.
"""

from pathlib import Path

from rdinet_lite import arguments, files, latency
from rdinet_lite.errors import InputError
from rdinet_lite.manifest import MANIFEST, Manifest


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="exported bundle directory (manifest.json)")
    parser.add_argument("--plan", action="store_true",
                        help="print the benchmark_model runs (one 'FILE SIGNATURE' line each) and exit")
    parser.add_argument("--logs", help="directory of <signature>.log benchmark logs (required unless --plan)")
    parser.add_argument("--distribution", help="CSV with columns exit,share (or exit,count), exits numbered "
                        "1..K; default: the manifest's exit_distribution")
    parser.add_argument("--out", help="CSV to write (required unless --plan)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


@arguments.command(parser)
def main(args):
    manifest = Manifest.read(args.bundle)
    if args.plan:
        manifest.read_model(args.bundle)  # the file pushed to the device is the one the manifest describes
        for file, signature in latency.benchmark_plan(manifest):
            print(file, signature)
        return
    if args.logs is None or args.out is None:
        raise InputError("--logs and --out are required (unless --plan)")
    logs = Path(args.logs)
    if not logs.is_dir():
        raise InputError(f"--logs {logs} is not a directory; pass the directory of <signature>.log benchmark logs")
    inputs = [Path(args.bundle) / MANIFEST, args.distribution,
              *(logs / f"{name}.log" for _, name in latency.benchmark_plan(manifest))]
    files.check_output(args.out, directory=False, overwrite=args.overwrite, inputs=inputs)
    with files.lock(args.out):
        _combine(args, manifest, logs)


def _combine(args, manifest, logs):
    latencies = [latency.log_timing(logs, segment.signature).avg_us for segment in manifest.segments]
    full = manifest.full_model
    full_latency = (latency.log_timing(logs, full.signature).avg_us
                    if full and (logs / f"{full.signature}.log").is_file() else None)
    shares = (latency.read_distribution_csv(args.distribution, len(latencies)) if args.distribution
              else latency.manifest_distribution(manifest))
    rows = latency.combine(manifest, latencies, shares, full_latency)
    latency.write_csv(rows, args.out, overwrite=args.overwrite)
    for row in rows:
        print(f"{row['row']:<22}{row['latency_us']:>14.4g}  {row['mflops_honest']:>10.4g}")


if __name__ == "__main__":
    raise SystemExit(main())
