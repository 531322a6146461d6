"""Run an exported TFLite bundle with entropy early exit, as a device would.

:class:`EarlyExitRunner` loads the bundle written by
:func:`rdinet_tf.export.export_tflite` (one ``model.tflite`` with a signature
per segment, and ``manifest.json``) with LiteRT, checks the manifest against
the file, and for each image runs segment 1, stops if its entropy is below
T_1 (a threshold of 0 closes its exit), otherwise copies the feature map into segment 2's input, and so on.
Tensor indices are resolved once at load and tensors are read and written in
place, so the per-image work is the invokes and one copy per segment boundary.
:meth:`EarlyExitRunner.run_batch` does the same for a batch: each segment runs
once, resized to the images still present. It needs only numpy and ``ai-edge-litert`` (no TensorFlow), so it runs on
small boards.
"""

import dataclasses
import functools
import hashlib
import json
import math
import re
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from rdinet_lite.accounting import exit_shares
from rdinet_lite.errors import InputError
from rdinet_lite.inputs import check_batch_size, check_images, check_thresholds, entropy_bounds

FORMAT = "rdinet_tflite_bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
BUNDLE_FILE = "model.tflite"
SIGNATURE = "serving_default"  # the signature of a single-model TFLite file
FULL_SIGNATURE = "full"
IN_GRAPH_SIGNATURE = "early_exit"
_EXPORT_HINT = "re-export the bundle with python -m rdinet_tf.export --tflite ..."


def segment_signature(index):
    """Signature name of segment ``index`` (0-based): ``segment_1`` for the first."""
    return f"segment_{index + 1}"


@dataclasses.dataclass(frozen=True)
class ExitResult:
    """Early-exit inference of one image."""

    prediction: int
    exit: int  # 0-based exit taken
    probabilities: np.ndarray  # softmax of the exit taken, (C,)
    seconds: float  # time in the interpreters, from first input to last output


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Early-exit inference of a set of images; one entry per image."""

    predictions: np.ndarray
    exits: np.ndarray
    probabilities: np.ndarray  # (N, C)
    seconds: np.ndarray  # time in the interpreters: the image's own, or its share of its batch's
    num_exits: int

    @property
    def exit_shares(self):
        """Fraction of images leaving at each exit, shape (K,)."""
        return exit_shares(self.exits, self.num_exits)

    def accuracy(self, labels):
        return float(np.mean(self.predictions == np.asarray(labels).reshape(-1)))


def load_manifest(bundle_dir):
    """The parsed ``manifest.json`` of ``bundle_dir``; :class:`InputError` if missing or invalid."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"no {MANIFEST} in {bundle_dir}: not an exported bundle; {_EXPORT_HINT}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); {_EXPORT_HINT}") from error
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a manifest; {_EXPORT_HINT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not an {FORMAT} manifest; {_EXPORT_HINT}")
    if manifest.get("format_version") == 1:
        raise InputError(
            f"{path} describes a format-1 bundle (one .tflite file per segment); this library reads "
            f"format {FORMAT_VERSION} (one {BUNDLE_FILE} with a signature per segment): {_EXPORT_HINT}"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has format version {manifest.get('format_version')!r}; this library "
            f"reads version {FORMAT_VERSION}; {_EXPORT_HINT}"
        )
    for key in ("file", "sha256", "num_exits", "thresholds", "segments", "input"):
        if key not in manifest:
            raise InputError(f"{path} has no {key!r} entry; {_EXPORT_HINT}")
    try:
        check_manifest(manifest)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path} is malformed: {error}; {_EXPORT_HINT}") from None
    return manifest


# What a file or signature name of a bundle may hold: it reaches benchmark_model's command line.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value, minimum=0.0):
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= minimum)


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def check_manifest(manifest):
    """Check the type and range of every manifest field the device side uses (``ValueError`` naming the first
    bad one): a tampered manifest is refused here, not deep inside the runner or the benchmark tools."""
    name = manifest["file"]
    _require(isinstance(name, str) and SAFE_NAME.fullmatch(name) and name not in (".", ".."),
             f"'file' must be a plain file name inside the bundle (letters, digits, _ . -); got {name!r:.80}")
    digest = manifest["sha256"]
    _require(isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest),
             f"'sha256' must be 64 lowercase hex digits; got {digest!r:.80}")
    num_exits = manifest["num_exits"]
    _require(_is_int(num_exits, 1), f"'num_exits' must be a positive integer; got {num_exits!r:.40}")
    thresholds = manifest["thresholds"]
    _require(isinstance(thresholds, list) and len(thresholds) == num_exits - 1
             and all(_is_number(t) for t in thresholds),
             f"'thresholds' must be {num_exits - 1} finite non-negative numbers; got {thresholds!r:.80}")
    image = manifest["input"]
    _require(isinstance(image, dict) and isinstance(image.get("shape"), list) and len(image["shape"]) == 4
             and all(_is_int(n, 1) for n in image["shape"]) and image["shape"][0] == 1
             and math.prod(image["shape"]) <= 2**26,
             f"'input' must hold the 'shape' [1, H, W, C] of positive integers; got {image!r:.80}")
    num_classes = manifest.get("num_classes")
    _require(num_classes is None or _is_int(num_classes, 1), f"'num_classes' must be a positive integer; got "
             f"{num_classes!r:.40}")
    segments = manifest["segments"]
    _require(isinstance(segments, list) and len(segments) == num_exits,
             f"'segments' must list {num_exits} segments; got {segments!r:.80}")
    for index, entry in enumerate(segments):
        _check_entry(entry, segment_signature(index), f"segments[{index}]")
        cost = entry["cost_mflops"]["honest"]
        _require(isinstance(cost, dict) and _is_number(cost.get("cumulative")),
                 f"segments[{index}] 'cost_mflops.honest.cumulative' must be a finite non-negative number")
    full = manifest.get("full_model")
    if full is not None:
        _check_entry(full, FULL_SIGNATURE, "full_model")
        _require(_is_number(full["cost_mflops"]["honest"], 1e-12),
                 "full_model 'cost_mflops.honest' must be a finite positive number")
    if manifest.get("in_graph_exit") is not None:
        _check_entry(manifest["in_graph_exit"], IN_GRAPH_SIGNATURE, "in_graph_exit", cost=False)
    distribution = manifest.get("exit_distribution")
    if distribution is not None:
        shares = distribution.get("shares") if isinstance(distribution, dict) else None
        _require(isinstance(shares, list) and len(shares) == num_exits and all(_is_number(v) for v in shares)
                 and sum(shares) > 0, f"'exit_distribution.shares' must be {num_exits} finite non-negative numbers "
                 f"with a positive sum; got {shares!r:.80}")
    for key in ("precision", "model_name"):
        _require(isinstance(manifest.get(key, ""), str), f"{key!r} must be a string")
    names = manifest.get("class_names")
    _require(names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)),
             "'class_names' must be a list of strings or null")


def _check_entry(entry, signature, where, cost=True):
    """A signature entry: its expected name, tensor maps of {tensor, shape, dtype}, and (``cost``) its costs."""
    _require(isinstance(entry, dict), f"{where} must be an object; got {entry!r:.80}")
    _require(entry.get("signature") == signature,
             f"{where} must be the signature {signature!r}; got {entry.get('signature')!r:.80}")
    for kind in ("inputs", "outputs"):
        tensors = entry.get(kind, {})  # compared with the file's own by Signature
        _require(isinstance(tensors, dict) and all(
            isinstance(t, dict) and isinstance(t.get("tensor"), str) and isinstance(t.get("dtype"), str)
            and isinstance(t.get("shape"), list) and all(_is_int(n, 0) for n in t["shape"])
            for t in tensors.values()), f"{where} {kind!r} must map names to {{tensor, shape, dtype}}")
    if cost:
        _require(isinstance(entry.get("cost_mflops"), dict) and "honest" in entry["cost_mflops"],
                 f"{where} has no 'cost_mflops.honest'")


def bundle_file(bundle_dir, manifest):
    """``(path, content)`` of the bundle's model file, checked against the manifest's sha256 (always)."""
    path = Path(bundle_dir) / manifest["file"]
    if not path.is_file():
        raise InputError(f"{path} listed in the manifest is missing; {_EXPORT_HINT}")
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != manifest["sha256"]:
        raise InputError(f"{path} does not match the manifest's sha256 (changed or corrupt); {_EXPORT_HINT}")
    return path, content


def _load_interpreter(bundle_dir, manifest, num_threads):
    """The LiteRT interpreter of the bundle's file, after checking its name and sha256."""
    name = manifest["file"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise InputError(f"the manifest of {bundle_dir} names the file {name!r}: the bundle's file is a "
                         f"plain name inside the bundle directory; {_EXPORT_HINT}")
    path, content = bundle_file(bundle_dir, manifest)
    try:
        interpreter = Interpreter(model_content=content, num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise InputError(f"{path} is not a valid TFLite model ({error}); {_EXPORT_HINT}") from error
    return interpreter, path


class Signature:
    """One signature of the bundle's interpreter, checked against its manifest entry.

    Tensor indices are resolved and the signature's tensors allocated once;
    :meth:`invoke` writes the input in place and :meth:`view` reads an output
    without a copy. LiteRT's public ``SignatureRunner.__call__`` resizes,
    reallocates and looks tensors up by name on every call, so this class
    drives the runner's interpreter wrapper with the runner's own indices.
    """

    def __init__(self, interpreter, path, entry):
        self.name = entry.get("signature")
        try:
            runner = interpreter.get_signature_runner(self.name)
        except ValueError as error:
            raise InputError(f"{path} has no signature {self.name!r} listed in the manifest (it has "
                             f"{sorted(interpreter.get_signature_list())}); {_EXPORT_HINT}") from error
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        self._check(path, "inputs", entry, inputs)
        self._check(path, "outputs", entry, outputs)
        self.inputs = {name: d["index"] for name, d in inputs.items()}
        self.outputs = {name: d["index"] for name, d in outputs.items()}
        self.shapes = {name: tuple(int(n) for n in d["shape"]) for name, d in {**inputs, **outputs}.items()}
        # Exported with a free batch dimension: the inputs can be resized to any batch (see :meth:`invoke`).
        self.takes_batches = all(int(d["shape_signature"][0]) == -1 for d in inputs.values())
        wrapper, subgraph = runner._interpreter_wrapper, runner._subgraph_index
        wrapper.AllocateTensors(subgraph)
        self._wrapper, self._subgraph, self._batch = wrapper, subgraph, 1
        self._invoke = functools.partial(wrapper.Invoke, subgraph)
        self._views = {name: functools.partial(wrapper.tensor, wrapper, index, subgraph)
                       for name, index in {**self.inputs, **self.outputs}.items()}

    def _check(self, path, kind, entry, details):
        """Check the signature's names, tensor names, shapes and dtypes against the manifest ``entry``."""
        expected = entry.get(kind) or {}
        if sorted(expected) != sorted(details):
            raise InputError(
                f"{path}: signature {self.name!r} has {kind} {sorted(details)} but the manifest lists "
                f"{sorted(expected)}; {_EXPORT_HINT}"
            )
        for name, detail in details.items():
            actual = {"tensor": detail["name"], "shape": [int(n) for n in detail["shape"]],
                      "dtype": np.dtype(detail["dtype"]).name}
            listed = {key: expected[name].get(key) for key in actual}
            if actual != listed:
                raise InputError(
                    f"{path}: signature {self.name!r} tensor {name!r} is {actual} in the file but "
                    f"{listed} in the manifest; {_EXPORT_HINT}"
                )

    def invoke(self, input_name, value, rows=None):
        """Copy ``value`` (or its ``rows``, a boolean mask) into input ``input_name`` and run the signature;
        read results with :meth:`view`.

        Another batch size than the last resizes the signature's inputs first (a
        signature that :attr:`takes_batches` only).
        """
        batch = len(value) if rows is None else int(np.count_nonzero(rows))
        if batch != self._batch:
            self._resize_batch(batch)
        if rows is None:
            self._views[input_name]()[...] = value
        else:
            np.compress(rows, value, axis=0, out=self._views[input_name]())
        self._invoke()

    def _resize_batch(self, batch):
        for name, index in self.inputs.items():
            shape = np.array((batch, *self.shapes[name][1:]), np.int32)
            self._wrapper.ResizeInputTensor(index, shape, True, self._subgraph)
        self._wrapper.AllocateTensors(self._subgraph)
        self._batch = batch

    def view(self, name):
        """Output ``name`` of the last :meth:`invoke`, in place: valid until the next one."""
        return self._views[name]()

    def output(self, name):
        """A copy of output ``name`` of the last :meth:`invoke`."""
        return self.view(name).copy()


class EarlyExitRunner:
    """Entropy early exit over a bundle's segment signatures (one LiteRT interpreter).

    Args:
        bundle_dir: directory written by :func:`rdinet_tf.export.export_tflite`.
        num_threads: interpreter threads (None: LiteRT's default).
        in_graph: run the bundle's ``early_exit`` signature (the early exit as
            IF ops inside the graph, thresholds fixed at export) instead of
            chaining the segment signatures from Python; the bundle must have
            been exported with ``--in-graph-exit``.

    Raises:
        InputError: missing or invalid manifest, missing or corrupt
            ``model.tflite``, or a manifest that does not match the file.
    """

    def __init__(self, bundle_dir, num_threads=None, in_graph=False):
        if num_threads is not None and not _is_int(num_threads, 1):
            raise InputError(f"num_threads must be a positive integer or None (LiteRT's default); got {num_threads!r}")
        self.bundle_dir = Path(bundle_dir)
        self.manifest = load_manifest(bundle_dir)
        try:
            self.thresholds = check_thresholds(self.manifest["thresholds"]).astype(np.float32)
        except InputError as error:
            raise InputError(f"{bundle_dir}/{MANIFEST}: {error}; {_EXPORT_HINT}") from error
        self._entropy_bounds = entropy_bounds(self.thresholds).astype(np.float32)
        self.num_exits = int(self.manifest["num_exits"])
        entries = self.manifest["segments"]
        if not (len(entries) == self.num_exits == len(self.thresholds) + 1):
            raise InputError(
                f"{bundle_dir}: the manifest lists {len(entries)} segments and "
                f"{len(self.thresholds)} thresholds for {self.num_exits} exits (a segment "
                f"is missing or extra); {_EXPORT_HINT}"
            )
        if [e.get("signature") for e in entries] != [segment_signature(i) for i in range(self.num_exits)]:
            raise InputError(f"{bundle_dir}: the manifest's segments are not the signatures segment_1.."
                             f"segment_{self.num_exits} in order; {_EXPORT_HINT}")
        self.interpreter, path = _load_interpreter(bundle_dir, self.manifest, num_threads)
        self.segments = [Signature(self.interpreter, path, e) for e in entries]
        full = self.manifest.get("full_model")
        self.full_model = None if full is None else Signature(self.interpreter, path, full)
        in_graph_entry = self.manifest.get("in_graph_exit")
        if in_graph and in_graph_entry is None:
            raise InputError(f"{bundle_dir} has no in-graph early exit; export it with --in-graph-exit "
                             "(in_graph_exit=True), or run the segments (in_graph=False)")
        self.in_graph = None if not in_graph else Signature(self.interpreter, path, in_graph_entry)
        self.image_shape = tuple(self.manifest["input"]["shape"][1:])
        self._check_chain()

    def _check_chain(self):
        """Each segment reads what the previous one writes; the last writes no features."""
        expected_input = ("image", (1, *self.image_shape))
        for index, segment in enumerate(self.segments):
            input_name, shape = expected_input
            if list(segment.inputs) != [input_name] or segment.shapes[input_name] != shape:
                raise InputError(
                    f"signature {segment.name} should read {input_name!r} of shape {shape} (what "
                    f"{'the image' if index == 0 else 'the previous segment'} gives); "
                    f"{_EXPORT_HINT}"
                )
            wanted = {"probs", "entropy"} | ({"next_features"} if index < self.num_exits - 1 else set())
            if set(segment.outputs) != wanted:
                raise InputError(
                    f"signature {segment.name} outputs {sorted(segment.outputs)}; segment {index + 1} of "
                    f"{self.num_exits} must output {sorted(wanted)}; {_EXPORT_HINT}"
                )
            if "next_features" in segment.outputs:
                expected_input = ("features", segment.shapes["next_features"])
        for signature, outputs in ((self.full_model, {"probs"}), (self.in_graph, {"probs", "exit"})):
            if signature is not None and (list(signature.inputs) != ["image"] or set(signature.outputs) != outputs
                                          or signature.shapes["image"] != (1, *self.image_shape)):
                raise InputError(f"signature {signature.name} should map 'image' {(1, *self.image_shape)} "
                                 f"to {sorted(outputs)}; {_EXPORT_HINT}")

    def check_image(self, image):
        """``image`` as a (1, H, W, C) float32 array; :class:`InputError` if it is not one."""
        image = np.asarray(image)
        if image.shape == self.image_shape:
            image = image[None]
        if len(image) != 1:
            raise InputError(f"run() takes one image of shape {self.image_shape} or (1, *that); got shape "
                             f"{image.shape}: use run_batch() for several")
        return check_images(image, self.image_shape, "the bundle", require_float32=True)

    def run(self, image):
        """Early exit for one image (H, W, C) or (1, H, W, C) -> :class:`ExitResult`."""
        return self._run_checked(self.check_image(image))

    def _run_checked(self, image):
        if self.in_graph is not None:
            return self._run_in_graph(image)
        last = self.num_exits - 1
        start = time.perf_counter()
        features, input_name = image, "image"
        for index, segment in enumerate(self.segments):
            segment.invoke(input_name, features)
            if index == last or segment.view("entropy")[0] < self._entropy_bounds[index]:
                probabilities = segment.output("probs")[0]
                break
            features, input_name = segment.view("next_features"), "features"
        seconds = time.perf_counter() - start
        return ExitResult(_prediction(probabilities, self.bundle_dir), index, probabilities, seconds)

    def _run_in_graph(self, image):
        start = time.perf_counter()
        self.in_graph.invoke("image", image)
        probabilities = self.in_graph.output("probs")[0]
        exit_taken = int(self.in_graph.view("exit")[0])
        seconds = time.perf_counter() - start
        return ExitResult(_prediction(probabilities, self.bundle_dir), exit_taken, probabilities, seconds)

    @property
    def takes_batches(self):
        """Whether :meth:`run_batch` can run batches of more than one image: the segments were exported
        with a free batch dimension (the in-graph early exit takes one image)."""
        return self.in_graph is None and all(segment.takes_batches for segment in self.segments)

    def run_batch(self, images, batch_size=None):
        """Early exit for each image of (N, H, W, C) -> :class:`BatchResult`.

        Each batch of ``batch_size`` images runs segment 1 on all of them, then
        segment k+1 on those still present after exit k, as one invoke each
        (default 256; 1 for a bundle that does not :attr:`takes_batches`,
        which refuses a larger ``batch_size``). With ``batch_size=1``, one image
        at a time as :meth:`run`. ``seconds``: each image's share of its batch's time.
        """
        images = check_images(images, self.image_shape, "the bundle", require_float32=True)
        batch_size = (256 if self.takes_batches else 1) if batch_size is None else check_batch_size(batch_size)
        if batch_size > 1 and not self.takes_batches:
            raise InputError(f"{self.bundle_dir} runs one image at a time ("
                             + ("the in-graph early exit" if self.in_graph is not None else
                                "its segments have a fixed batch of 1") + f"); use batch_size=1, or re-export "
                             "the bundle with python -m rdinet_tf.export --tflite ... and run its segment chain")
        num_classes = self.segments[-1].shapes["probs"][-1]
        chunks = [(np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64), np.zeros(0))]
        if batch_size == 1:
            for result in (self._run_checked(image[None]) for image in images):
                chunks.append((result.probabilities[None], np.array([result.exit]), np.array([result.seconds])))
        else:
            chunks += [self._run_chain_batch(images[start:start + batch_size])
                       for start in range(0, len(images), batch_size)]
        probabilities, exits, seconds = (np.concatenate(parts) for parts in zip(*chunks))
        return BatchResult(predictions=probabilities.argmax(-1).astype(np.int64), exits=exits.astype(np.int64),
                           probabilities=probabilities, seconds=seconds, num_exits=self.num_exits)

    def _run_chain_batch(self, images):
        """The segment chain on a batch: ``(probabilities (n, C), exits (n,), seconds (n,))``."""
        last, count = self.num_exits - 1, len(images)
        probabilities = np.empty((count, self.segments[-1].shapes["probs"][-1]), np.float32)
        exits = np.full(count, last, np.int64)
        start = time.perf_counter()
        positions, features, input_name, stay = np.arange(count), images, "image", None
        for index, segment in enumerate(self.segments):
            segment.invoke(input_name, features, stay)  # the images still present, copied straight in
            if index == last:
                probabilities[positions] = segment.view("probs")
                break
            leave = segment.view("entropy") < self._entropy_bounds[index]
            probabilities[positions[leave]] = segment.view("probs")[leave]
            exits[positions[leave]] = index
            if leave.all():
                break
            stay = ~leave
            positions, features, input_name = positions[stay], segment.view("next_features"), "features"
        seconds = time.perf_counter() - start
        return probabilities, exits, np.full(count, seconds / max(count, 1))

    def run_full(self, image):
        """The bundle's full model (no early exit) on one image -> :class:`ExitResult`."""
        if self.full_model is None:
            raise InputError(f"{self.bundle_dir} has no full model; export it with --full "
                             "(include_full=True)")
        image = self.check_image(image)
        start = time.perf_counter()
        self.full_model.invoke("image", image)
        probabilities = self.full_model.output("probs")[0]
        seconds = time.perf_counter() - start
        return ExitResult(_prediction(probabilities, self.bundle_dir), self.num_exits - 1, probabilities, seconds)


def _prediction(probabilities, bundle_dir):
    """The class of ``probabilities``; refused if they are not finite (argmax would answer class 0)."""
    if not np.isfinite(probabilities).all():
        raise InputError(f"{bundle_dir} computed NaN or infinite probabilities: its weights are not finite (a "
                         "diverged training?); retrain the model with a lower --lr and export it again")
    return int(probabilities.argmax())
