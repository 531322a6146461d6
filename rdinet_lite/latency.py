"""On-device latency of early exit: per-segment timings combined with an exit distribution.

An image leaving at exit k (1..K) runs segments 1..k, so with per-segment
latencies t_1..t_K and exit shares s_1..s_K the expected early-exit latency is
``sum_k s_k * (t_1 + ... + t_k)``. Per-segment latencies come from LiteRT's
``benchmark_model`` logs, one run per signature of the bundle's file (phones, see
``device/android_benchmark.sh``), or from
:func:`benchmark_bundle` (Linux boards, ``rdinet_lite/edge.py``).

The command line ``rdinet-bench`` (:mod:`rdinet_lite.bench`) combines a
directory of such logs into a CSV. Needs only numpy and ai-edge-litert (no
TensorFlow).
"""

import csv
import dataclasses
import re
import time
import zipfile
from pathlib import Path

import numpy as np

from rdinet_lite import files
from rdinet_lite.accounting import exit_shares, expected_cost
from rdinet_lite.errors import InputError

_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"
_SUMMARY = re.compile(r"Inference \(avg\):\s*" + _NUMBER)
_RUN_LINE = re.compile(r"count=(\d+)\b[^\n]*?\bavg=" + _NUMBER + r"(?P<rest>[^\n]*)")
_FIELD = {name: re.compile(rf"\b{name}=" + _NUMBER) for name in ("std", "median", "p95")}
CSV_FIELDS = ("row", "signature", "latency_us", "cumulative_latency_us", "exit_share", "mflops_honest")


@dataclasses.dataclass(frozen=True)
class BenchmarkTiming:
    """Timings of one ``benchmark_model`` run, in microseconds (None where not printed)."""

    avg_us: float
    runs: int | None = None
    std_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None


def parse_benchmark_model(text):
    """The measured-run timings in a ``benchmark_model`` log -> :class:`BenchmarkTiming`.

    The average is the ``Inference (avg): X`` summary; without it, the ``avg=X``
    of the last ``count=...`` line (the first such line is the warm-up).
    """
    runs = list(_RUN_LINE.finditer(text))
    summary = _SUMMARY.findall(text)
    if not summary and not runs:
        raise InputError(
            "no 'Inference (avg): X' or 'count=N ... avg=X' line found: is this the output "
            "of LiteRT's benchmark_model (did the run fail)?"
        )
    last = runs[-1] if runs else None
    extras = {}
    if last is not None:
        for name, pattern in _FIELD.items():
            found = pattern.search(last.group("rest"))
            extras[name] = float(found.group(1)) if found else None
    avg_us = float(summary[-1]) if summary else float(last.group(2))
    if not (np.isfinite(avg_us) and avg_us > 0):
        raise InputError(f"the average inference time {avg_us} us is not a positive finite number: is this the "
                         "output of a complete benchmark_model run?")
    return BenchmarkTiming(
        avg_us=avg_us,
        runs=int(last.group(1)) if last is not None else None,
        std_us=extras.get("std"),
        median_us=extras.get("median"),
        p95_us=extras.get("p95"),
    )


def expected_latency(segment_latencies, exit_distribution):
    """Mean latency when a sample leaving at exit k pays segments 1..k.

    Args:
        segment_latencies: K per-segment latencies (any unit).
        exit_distribution: K counts or shares of samples per exit.
    """
    latencies = np.asarray(segment_latencies, np.float64)
    if latencies.ndim != 1 or (latencies < 0).any():
        raise InputError(f"need one non-negative latency per segment; got {np.atleast_1d(latencies).tolist()}")
    return expected_cost(np.cumsum(latencies), exit_distribution)


def read_distribution_csv(path, num_exits):
    """Exit shares from a CSV with columns ``exit`` (1-based) and ``share`` or ``count``."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} is not a readable CSV ({error})") from None
    column = next((c for c in ("share", "count") if rows and c in rows[0]), None)
    if column is None or "exit" not in rows[0]:
        raise InputError(f"{path} needs a header with columns 'exit' (1-based) and 'share' or 'count'")
    shares = np.zeros(num_exits)
    for line, row in enumerate(rows, start=2):
        try:
            exit_number, value = int(row["exit"]), float(row[column])
        except (TypeError, ValueError):
            raise InputError(f"{path} line {line}: exit {str(row['exit'])[:20]!r} must be an integer and "
                             f"{column} {str(row[column])[:20]!r} a number") from None
        if not 1 <= exit_number <= num_exits:
            raise InputError(f"{path}: exit {exit_number} is out of range 1..{num_exits}")
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"{path} line {line}: {column} {value} must be a finite non-negative number")
        shares[exit_number - 1] += value
    if not (np.isfinite(shares.sum()) and shares.sum() > 0):
        raise InputError(f"{path}: the {column}s must have a positive finite sum; got {shares.sum()}")
    return shares / shares.sum()


def benchmark_plan(manifest):
    """The ``benchmark_model`` runs a :class:`~rdinet_lite.manifest.Manifest`'s bundle needs: one
    ``(file, signature)`` per segment, then the full model. Their names reach a shell on the device; the
    manifest admits only letters, digits and ``_ . -`` in them."""
    full = manifest.full_model
    signatures = [segment.signature for segment in manifest.segments] + ([full.signature] if full else [])
    return [(manifest.file, signature) for signature in signatures]


def manifest_distribution(manifest):
    """Exit shares recorded in a :class:`~rdinet_lite.manifest.Manifest` (position k-1: exit k);
    :class:`InputError` if it has none."""
    if manifest.exit_distribution is None:
        raise InputError(
            "the manifest records no exit distribution (export with representative images); "
            "pass --distribution exits.csv with columns exit,share (exits 1-based)"
        )
    return np.asarray(manifest.exit_distribution.shares, np.float64)


def combine(manifest, segment_latencies_us, shares, full_latency_us=None):
    """CSV rows: one per segment (``segment_k`` for exit k), the expected early exit, and (if timed) the full
    model and ratios.

    ``manifest``: the bundle's :class:`~rdinet_lite.manifest.Manifest`; ``shares``: one per exit, exit 1
    first. ``mflops_honest`` is the cumulative cost for segment rows and the expected cost for the early-exit
    row (honest convention).
    """
    segments = manifest.segments
    if len(segment_latencies_us) != len(segments):
        raise InputError(f"need a latency for each of the {len(segments)} segments; "
                         f"got {len(segment_latencies_us)}")
    expected = expected_latency(segment_latencies_us, shares)
    shares = np.asarray(shares, np.float64) / np.sum(shares)
    costs = [segment.cost_mflops["honest"].cumulative for segment in segments]
    cumulative = np.cumsum(segment_latencies_us)
    rows = [{"row": f"segment_{i + 1}", "signature": s.signature, "latency_us": segment_latencies_us[i],
             "cumulative_latency_us": cumulative[i], "exit_share": shares[i],
             "mflops_honest": costs[i]} for i, s in enumerate(segments)]
    mean_cost = expected_cost(costs, shares)
    rows.append({"row": "early_exit_expected", "latency_us": expected, "exit_share": 1.0,
                 "mflops_honest": mean_cost})
    full = manifest.full_model
    if full_latency_us is not None and full is not None:
        full_cost = full.cost_mflops["honest"]
        rows.append({"row": "full_model", "signature": full.signature, "latency_us": full_latency_us,
                     "mflops_honest": full_cost})
        if full_latency_us > 0 and full_cost > 0:
            rows.append({"row": "early_exit_over_full", "latency_us": expected / full_latency_us,
                         "mflops_honest": mean_cost / full_cost})
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float, np.floating)) and not np.isfinite(value):
                raise InputError(f"{row['row']} {key} is {value}: the latencies, shares and costs must be finite "
                                 "(a bad log, distribution or manifest?)")
    return rows


def write_csv(rows, path, overwrite=True):
    """Write :func:`combine` rows to ``path`` (atomically; an existing file only with ``overwrite``)."""
    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, restval="")
            writer.writeheader()
            writer.writerows(rows)

    path = Path(path)
    files.publish(path.parent, {path.name: write}, replace=overwrite)


def percentiles_ms(seconds):
    """``{"mean", "p50", "p95"}`` of per-sample times, in milliseconds."""
    milliseconds = np.asarray(seconds, np.float64) * 1e3
    return {"mean": float(milliseconds.mean()), "p50": float(np.percentile(milliseconds, 50)),
            "p95": float(np.percentile(milliseconds, 95))}


def benchmark_bundle(runner, images, warmup=20, in_graph_runner=None):
    """Per-image latency of the chained early exit, the full model and each segment.

    For each image, back to back (so load from other processes hits all alike):
    the early-exit chain, the in-graph early exit (with ``in_graph_runner``, an
    ``EarlyExitRunner(..., in_graph=True)`` of the same bundle), the full model
    (if the bundle has one) and every segment alone; the first ``warmup``
    images are run beforehand, untimed.

    Returns a dict: ``early_exit_ms``, ``in_graph_ms`` and ``full_ms`` (mean, p50,
    p95; None where not timed), ``segment_us`` (mean per segment, segment 1
    first), ``exit_shares`` (exit 1 first) and ``predictions`` (early exit,
    measured on ``images``), and
    ``predicted_early_exit_ms`` (from the segment latencies and the measured
    shares, see :func:`expected_latency`).
    """
    images = np.asarray(images, np.float32)
    for image in images[:warmup]:
        _time_image(runner, in_graph_runner, image)
    early, in_graph, full, segments = zip(*(_time_image(runner, in_graph_runner, image) for image in images))
    shares = exit_shares([result.exit for result in early], runner.num_exits)
    segment_us = np.mean(segments, axis=0) * 1e6
    return {
        "images": int(len(images)),
        "early_exit_ms": percentiles_ms([result.seconds for result in early]),
        "in_graph_ms": None if in_graph_runner is None else percentiles_ms(in_graph),
        "full_ms": None if runner.full_model is None else percentiles_ms(full),
        "segment_us": segment_us.tolist(),
        "exit_shares": shares.tolist(),
        "predictions": np.array([result.prediction for result in early]),
        "predicted_early_exit_ms": expected_latency(segment_us, shares) / 1e3,
    }


def _time_image(runner, in_graph_runner, image):
    """(early-exit result, in-graph and full-model seconds or None, seconds of each segment alone)."""
    early = runner.run(image)
    in_graph = None if in_graph_runner is None else in_graph_runner.run(image).seconds
    full = None if runner.full_model is None else runner.run_full(image).seconds
    return early, in_graph, full, _time_segments(runner, image)


def _time_segments(runner, image):
    seconds, features, input_name = [], image[None], "image"
    for segment in runner.segments:
        start = time.perf_counter()
        segment.invoke(input_name, features)
        if "next_features" in segment.outputs:
            features, input_name = segment.view("next_features"), "features"
        seconds.append(time.perf_counter() - start)
    return seconds


def images_from_npz(path, key, image_shape, count=None):
    """Float32 images in [0, 1] of ``image_shape`` from uint8 (or [0, 1] float) array ``key`` of an ``.npz``
    (or the array of an ``.npy``); one clear error for anything else."""
    try:
        with open(path, "rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    if key not in loaded.files:
                        raise InputError(f"{path} has no array {key!r}; it has {sorted(loaded.files)[:20]}")
                    images = loaded[key]
            else:
                images = loaded
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: its array is too large to load (a corrupt header?)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise InputError(f"{path} is not a readable .npz or .npy of numeric images (allow_pickle=False): "
                         f"{type(error).__name__}: {error}") from None
    if images.dtype.kind not in "uif" or images.ndim not in (3, 4):
        raise InputError(f"{path}: images must be a numeric (N, H, W[, C]) array; got {images.dtype} of shape "
                         f"{images.shape}")
    if count is not None and count > len(images):
        raise InputError(f"{path} holds {len(images)} images; {count} were asked for: ask for {len(images)} or "
                         "fewer (--count)")
    images = images[:count]
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:] != tuple(image_shape):
        raise InputError(f"{path}[{key!r}] holds images of shape {images.shape[1:]}; the bundle "
                         f"expects {tuple(image_shape)}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return (images.astype(np.float32) / scale).astype(np.float32)


def log_timing(logs, signature):
    """The timing in ``logs/<signature>.log``, the ``benchmark_model`` run of that signature."""
    path = Path(logs) / f"{signature}.log"
    try:
        return parse_benchmark_model(path.read_text(errors="replace"))
    except InputError as error:
        raise InputError(f"{path}: {error}") from error
