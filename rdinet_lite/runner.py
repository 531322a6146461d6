"""Run an exported TFLite bundle with entropy early exit, as a device would.

:class:`EarlyExitRunner` loads the bundle written by
:func:`rdinet_tf.export.export_tflite` (one ``model.tflite`` with a signature
per segment, and ``manifest.json``) with LiteRT, checks the manifest against
the file, and for each image runs segment 1, stops if its entropy is below
T_1 (a threshold of 0 closes its exit), otherwise copies the feature map into segment 2's input, and so on.
Tensor indices are resolved once at load and tensors are read and written in
place (through LiteRT's interpreter wrapper, with the public ``SignatureRunner``
call as the fallback: see :func:`_in_place_access`), so the per-image work is
the invokes and one copy per segment boundary.
:meth:`EarlyExitRunner.run_batch` does the same for a batch: each segment runs
once, resized to the images still present. It needs only numpy and ``ai-edge-litert`` (no TensorFlow), so it runs on
small boards.
"""

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from rdinet_lite.accounting import exit_shares
from rdinet_lite.errors import InputError
from rdinet_lite.inputs import check_batch_size, check_images, check_thresholds, entropy_bounds
from rdinet_lite.manifest import EXPORT_HINT, MANIFEST, Manifest


@dataclasses.dataclass(frozen=True)
class ExitResult:
    """Early-exit inference of one image."""

    prediction: int
    exit: int  # 0-based index of the exit taken (exit ``exit + 1`` of the manifest), as PolicyResult.exits
    probabilities: np.ndarray  # softmax of the exit taken, (C,)
    seconds: float  # time in the interpreters, from first input to last output


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Early-exit inference of a set of images; one entry per image.

    ``exits`` holds 0-based exit indices, as ``rdinet_tf.exits.policy.PolicyResult.exits``: 0 is exit 1 of the
    manifest and the tables; :attr:`exit_shares` ``[k-1]`` is the share of exit k.
    """

    predictions: np.ndarray
    exits: np.ndarray  # 0-based index of the exit each image took
    probabilities: np.ndarray  # (N, C)
    seconds: np.ndarray  # time in the interpreters: the image's own, or its share of its batch's
    num_exits: int

    @property
    def exit_shares(self):
        """Fraction of images leaving at each exit, shape (K,): position k-1 is exit k."""
        return exit_shares(self.exits, self.num_exits)

    def accuracy(self, labels):
        return float(np.mean(self.predictions == np.asarray(labels).reshape(-1)))


def _load_interpreter(bundle_dir, manifest, num_threads):
    """The LiteRT interpreter of the bundle's file, after checking it against the manifest's sha256."""
    path, content = manifest.read_model(bundle_dir)
    try:
        interpreter = Interpreter(model_content=content, num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise InputError(f"{path} is not a valid TFLite model ({error}); {EXPORT_HINT}") from error
    return interpreter, path


# What the in-place path calls on LiteRT's interpreter wrapper (see _in_place_access).
_WRAPPER_METHODS = ("AllocateTensors", "Invoke", "ResizeInputTensor", "tensor")


def _in_place_access(runner, input_shapes):
    """``(wrapper, subgraph index)`` behind a LiteRT ``SignatureRunner`` for in-place tensor access, or None.

    LiteRT's public ``SignatureRunner.__call__`` resizes every input, reallocates the signature's tensors and
    copies inputs in and outputs out on each call, and the public in-place view ``Interpreter.tensor()`` reaches
    only the primary subgraph, not a signature's; ai-edge-litert 2.3.0 and LiteRT's main branch have no
    public per-signature equivalent. So the runner uses the two private attributes ``SignatureRunner`` itself
    uses, ``_interpreter_wrapper`` (the pybind interpreter) and ``_subgraph_index``, checked here by what they
    offer rather than by version: a LiteRT without them, or whose wrapper's views of the signature's inputs
    (tensor index -> shape in ``input_shapes``) do not have their shapes, gets None and the runner falls back
    to the public ``__call__`` (same results, slower).
    """
    wrapper = getattr(runner, "_interpreter_wrapper", None)
    subgraph = getattr(runner, "_subgraph_index", None)
    if not (isinstance(subgraph, int) and all(callable(getattr(wrapper, name, None)) for name in _WRAPPER_METHODS)):
        return None
    try:
        wrapper.AllocateTensors(subgraph)
        views_fit = all(wrapper.tensor(wrapper, index, subgraph).shape == shape
                        for index, shape in input_shapes.items())
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return None
    return (wrapper, subgraph) if views_fit else None


class Signature:
    """One signature of the bundle's interpreter, checked against its manifest entry.

    Tensor indices are resolved and the signature's tensors allocated once;
    :meth:`invoke` writes the input in place and :meth:`view` reads an output
    without a copy, through LiteRT's interpreter wrapper (see
    :func:`_in_place_access`); where that is unavailable, through LiteRT's
    public ``SignatureRunner`` call (a copy in and out per call), and
    :attr:`in_place` is False.
    """

    def __init__(self, interpreter, path, entry):
        self.name = entry.signature
        try:
            runner = interpreter.get_signature_runner(self.name)
        except ValueError as error:
            raise InputError(f"{path} has no signature {self.name!r} listed in the manifest (it has "
                             f"{sorted(interpreter.get_signature_list())}); {EXPORT_HINT}") from error
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        self._check(path, "inputs", entry.inputs, inputs)
        self._check(path, "outputs", entry.outputs, outputs)
        self.inputs = {name: d["index"] for name, d in inputs.items()}
        self.outputs = {name: d["index"] for name, d in outputs.items()}
        self.shapes = {name: tuple(int(n) for n in d["shape"]) for name, d in {**inputs, **outputs}.items()}
        # Exported with a free batch dimension: the inputs can be resized to any batch (see :meth:`invoke`).
        self.takes_batches = all(int(d["shape_signature"][0]) == -1 for d in inputs.values())
        self._runner, self._results, self._batch = runner, {}, 1
        access = _in_place_access(runner, {index: self.shapes[name] for name, index in self.inputs.items()})
        self.in_place = access is not None
        if self.in_place:
            wrapper, subgraph = access
            self._wrapper, self._subgraph = wrapper, subgraph
            self._invoke = functools.partial(wrapper.Invoke, subgraph)
            self._views = {name: functools.partial(wrapper.tensor, wrapper, index, subgraph)
                           for name, index in {**self.inputs, **self.outputs}.items()}

    def _check(self, path, kind, expected, details):
        """Check the signature's names, tensor names, shapes and dtypes against the manifest's ``expected``."""
        if sorted(expected) != sorted(details):
            raise InputError(
                f"{path}: signature {self.name!r} has {kind} {sorted(details)} but the manifest lists "
                f"{sorted(expected)}; {EXPORT_HINT}"
            )
        for name, detail in details.items():
            actual = (detail["name"], tuple(int(n) for n in detail["shape"]), np.dtype(detail["dtype"]).name)
            listed = (expected[name].tensor, expected[name].shape, expected[name].dtype)
            if actual != listed:
                raise InputError(
                    f"{path}: signature {self.name!r} tensor {name!r} is {actual} (tensor, shape, dtype) in the "
                    f"file but {listed} in the manifest; {EXPORT_HINT}"
                )

    def invoke(self, input_name, value, rows=None):
        """Copy ``value`` (or its ``rows``, a boolean mask) into input ``input_name`` and run the signature;
        read results with :meth:`view`.

        Another batch size than the last resizes the signature's inputs first (a
        signature that :attr:`takes_batches` only).
        """
        if not self.in_place:
            value = value if rows is None else np.compress(rows, value, axis=0)
            self._results = self._runner(**{input_name: value})
            return
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
        return self._views[name]() if self.in_place else self._results[name]

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

    Attributes:
        manifest: the bundle's :class:`~rdinet_lite.manifest.Manifest`.
        segments: one :class:`Signature` per exit, in order (``segments[k-1]``
            is ``segment_k``).

    Raises:
        InputError: missing or invalid manifest, missing or corrupt
            ``model.tflite``, or a manifest that does not match the file.
    """

    def __init__(self, bundle_dir, num_threads=None, in_graph=False):
        if num_threads is not None and not (isinstance(num_threads, int) and not isinstance(num_threads, bool)
                                            and num_threads >= 1):
            raise InputError(f"num_threads must be a positive integer or None (LiteRT's default); got {num_threads!r}")
        self.bundle_dir = Path(bundle_dir)
        self.manifest = Manifest.read(bundle_dir)
        self.num_exits = self.manifest.num_exits
        try:
            self.thresholds = check_thresholds(self.manifest.thresholds).astype(np.float32)
        except InputError as error:
            raise InputError(f"{bundle_dir}/{MANIFEST}: {error}; {EXPORT_HINT}") from error
        self._entropy_bounds = entropy_bounds(self.thresholds).astype(np.float32)
        self.interpreter, path = _load_interpreter(bundle_dir, self.manifest, num_threads)
        self.segments = [Signature(self.interpreter, path, entry) for entry in self.manifest.segments]
        full = self.manifest.full_model
        self.full_model = None if full is None else Signature(self.interpreter, path, full)
        in_graph_entry = self.manifest.in_graph_exit
        if in_graph and in_graph_entry is None:
            raise InputError(f"{bundle_dir} has no in-graph early exit; export it with --in-graph-exit "
                             "(in_graph_exit=True), or run the segments (in_graph=False)")
        self.in_graph = None if not in_graph else Signature(self.interpreter, path, in_graph_entry)
        self.image_shape = self.manifest.input.shape[1:]
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
                    f"{EXPORT_HINT}"
                )
            wanted = {"probs", "entropy"} | ({"next_features"} if index < self.num_exits - 1 else set())
            if set(segment.outputs) != wanted:
                raise InputError(
                    f"signature {segment.name} outputs {sorted(segment.outputs)}; segment {index + 1} of "
                    f"{self.num_exits} must output {sorted(wanted)}; {EXPORT_HINT}"
                )
            if "next_features" in segment.outputs:
                expected_input = ("features", segment.shapes["next_features"])
        for signature, outputs in ((self.full_model, {"probs"}), (self.in_graph, {"probs", "exit"})):
            if signature is not None and (list(signature.inputs) != ["image"] or set(signature.outputs) != outputs
                                          or signature.shapes["image"] != (1, *self.image_shape)):
                raise InputError(f"signature {signature.name} should map 'image' {(1, *self.image_shape)} "
                                 f"to {sorted(outputs)}; {EXPORT_HINT}")

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
                                "its segments have a fixed batch of 1") + "); use batch_size=1, or re-export "
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
