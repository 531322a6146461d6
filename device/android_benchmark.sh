#!/usr/bin/env bash
# Benchmark every segment signature and the full model of an exported bundle on an
# Android device with LiteRT's benchmark_model (one run per signature of the bundle's
# one .tflite file, --signature_to_run_for), pull the logs, and combine them into the
# expected early-exit latency (see device/README.md).
#
# Usage: device/android_benchmark.sh BUNDLE_DIR BENCHMARK_MODEL_BINARY [LOG_DIR]
# Environment (defaults in brackets):
#   ADB [adb]  DEVICE_DIR [/data/local/tmp/rdinet]  NUM_THREADS [1]
#   WARMUP_RUNS [20]  NUM_RUNS [200]  EXTRA_FLAGS [] (e.g. "--use_gpu=true")
#   DISTRIBUTION [] (CSV exit,share; default: the manifest's exit distribution)
#   PYTHON [python3]; ANDROID_SERIAL picks the device when several are attached.
set -euo pipefail

bundle=${1:?usage: $0 BUNDLE_DIR BENCHMARK_MODEL_BINARY [LOG_DIR]}
binary=${2:?usage: $0 BUNDLE_DIR BENCHMARK_MODEL_BINARY [LOG_DIR]}
logs=${3:-${bundle%/}-android-logs}
ADB=${ADB:-adb}
DEVICE_DIR=${DEVICE_DIR:-/data/local/tmp/rdinet}
NUM_THREADS=${NUM_THREADS:-1}
WARMUP_RUNS=${WARMUP_RUNS:-20}
NUM_RUNS=${NUM_RUNS:-200}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
PYTHON=${PYTHON:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
bench() { PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m rdinet_lite.bench --bundle "$bundle" "$@"; }
fail() { echo "error: $*" >&2; exit 2; }
# Everything pasted into an adb shell command is single-quoted (adb joins its arguments into one sh line).
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
safe='^[A-Za-z0-9_][A-Za-z0-9_.-]*$'

[[ -f "$binary" ]] || fail "benchmark_model binary $binary not found"
for value in "$NUM_THREADS" "$WARMUP_RUNS" "$NUM_RUNS"; do
  [[ "$value" =~ ^[0-9]+$ ]] || fail "NUM_THREADS, WARMUP_RUNS and NUM_RUNS must be whole numbers; got '$value'"
done
plan=$(bench --plan) || exit 2  # one "FILE SIGNATURE" line per run; checks the manifest first
while read -r file signature rest; do  # bench --plan checks these too; the script does not trust it
  [[ "$file" =~ $safe && "$signature" =~ $safe && -z "$rest" ]] || fail "unsafe run in the plan: '$file $signature $rest'"
done <<<"$plan"
dir=$(quote "$DEVICE_DIR")

"$ADB" shell "rm -rf $dir && mkdir -p $dir/logs"
"$ADB" push "$binary" "$DEVICE_DIR/benchmark_model" >/dev/null
"$ADB" shell "chmod +x $dir/benchmark_model"
"$ADB" push "$bundle/$(head -n1 <<<"$plan" | cut -d' ' -f1)" "$DEVICE_DIR/" >/dev/null

failed=0
while read -r file signature; do
  echo "benchmarking $signature ..."
  # EXTRA_FLAGS is passed as flags on purpose (e.g. "--use_gpu=true"): it comes from the user, not the bundle.
  if ! "$ADB" shell "$dir/benchmark_model --graph=$dir/$(quote "$file") --signature_to_run_for=$(quote "$signature") \
      --num_threads=$NUM_THREADS --warmup_runs=$WARMUP_RUNS --num_runs=$NUM_RUNS $EXTRA_FLAGS \
      > $dir/logs/$(quote "$signature.log") 2>&1"; then
    echo "warning: benchmark_model failed on $signature; see $logs/$signature.log" >&2
    failed=1
  fi
done <<<"$plan"

mkdir -p "$logs"
"$ADB" pull "$DEVICE_DIR/logs/." "$logs/" >/dev/null
"$ADB" shell "getprop ro.product.model; getprop ro.board.platform" > "$logs/device.txt" 2>/dev/null || true
echo "logs in $logs"

bench --logs "$logs" --out "$logs/latency.csv" --overwrite ${DISTRIBUTION:+--distribution "$DISTRIBUTION"} || exit 2
exit $failed
