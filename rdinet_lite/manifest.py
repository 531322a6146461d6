"""The bundle manifest, ``manifest.json``: one schema, written by the exporter and read by every device tool.

:func:`rdinet_tf.export.export_tflite` builds a :class:`Manifest` and :meth:`~Manifest.write` s it; the runner,
the latency kit, ``rdinet-bench``, ``python -m rdinet_lite.edge`` and the benchmarks :meth:`~Manifest.read` it.
Building a :class:`Manifest` (or any part of it) checks the type and range of every field, so the exporter
cannot write a manifest the device side would refuse, and a tampered one is refused where it is read, with
one :class:`~rdinet_lite.errors.InputError` naming the field and the fix, not deep inside the runner or the
benchmark tools. Unknown keys are ignored; a bundle of another format version is refused with the command
that re-exports it.

Numbering: segments and exits are numbered 1..K as in the signature names (``segment_k``) and the tables;
:attr:`Segment.index` is the 0-based position in :attr:`Manifest.segments`.
"""

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import ClassVar

from rdinet_lite.errors import InputError

MANIFEST = "manifest.json"
BUNDLE_FILE = "model.tflite"
FULL_SIGNATURE = "full"
IN_GRAPH_SIGNATURE = "early_exit"
EXPORT_HINT = "re-export the bundle with python -m rdinet_tf.export --tflite ..."
# What a file or signature name of a bundle may hold: it reaches benchmark_model's command line.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
MAX_INPUT_VALUES = 2**26  # values in one input image: a larger shape is a tampered manifest


def segment_signature(index):
    """Signature name of the segment at 0-based position ``index``: ``segment_1`` for the first."""
    return f"segment_{index + 1}"


def _require(condition, message):
    if not condition:
        raise InputError(message)


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value, minimum=0.0):
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= minimum)


def _is_safe_name(value):
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None and value not in (".", "..")


def _set(instance, name, value):
    """Store a normalised field value (lists as tuples) on a frozen dataclass."""
    object.__setattr__(instance, name, value)


def _fields(cls, data, where):
    """The keyword arguments of ``cls`` in the JSON object ``data``; a missing required field is refused."""
    _require(isinstance(data, dict), f"{where} must be an object; got {data!r:.80}")
    for field in dataclasses.fields(cls):
        _require(field.name in data or field.default is not dataclasses.MISSING, f"{where} has no {field.name!r} entry")
    return {field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data}


def _build(cls, data, where, **convert):
    """``cls`` from JSON ``data``, each nested value passed through its ``convert`` function first; an error
    starts with ``where``, the place of ``data`` in the manifest."""
    kwargs = _fields(cls, data, where)
    try:
        for name, function in convert.items():
            if kwargs.get(name) is not None:
                kwargs[name] = function(kwargs[name])
        return cls(**kwargs)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def to_json(value):
    """A schema object (or a tuple, dict or number of one) as plain JSON values."""
    if dataclasses.is_dataclass(value):
        return {field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Quantization:
    """Affine quantization of an integer tensor: ``real = scale * (stored - zero_point)``."""

    scale: float
    zero_point: int

    def __post_init__(self):
        _require(_is_number(self.scale) and isinstance(self.zero_point, int) and not isinstance(self.zero_point, bool),
                 f"'scale' must be a finite number >= 0 and 'zero_point' an integer; got {self!r:.80}")

    @classmethod
    def from_json(cls, data, where="'quantization'"):
        return _build(cls, data, where)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One input or output tensor of a signature, as LiteRT reports it for the file."""

    tensor: str  # the tensor's name in the file
    shape: tuple[int, ...]
    dtype: str  # numpy name: "float32", "int8", ...
    quantization: Quantization | None = None  # integer tensors only

    def __post_init__(self):
        _require(isinstance(self.tensor, str) and isinstance(self.dtype, str),
                 f"'tensor' and 'dtype' must be strings; got {self.tensor!r:.40} and {self.dtype!r:.40}")
        _require(isinstance(self.shape, (list, tuple)) and all(_is_int(n, 0) for n in self.shape),
                 f"'shape' must be a list of non-negative integers; got {self.shape!r:.80}")
        _set(self, "shape", tuple(self.shape))
        _require(self.quantization is None or isinstance(self.quantization, Quantization),
                 f"'quantization' must be an object or null; got {self.quantization!r:.80}")

    @classmethod
    def from_json(cls, data, where):
        return _build(cls, data, where, quantization=Quantization.from_json)


def _tensor_map(data, where):
    """Signature input or output names -> :class:`TensorSpec` (a non-object is passed on, to be refused)."""
    if not isinstance(data, dict):
        return data
    return {name: TensorSpec.from_json(spec, f"{where} {name!r}") for name, spec in data.items()}


def _check_signature(entry):
    """The checks every signature entry shares: a safe name and its tensor maps."""
    _require(_is_safe_name(entry.signature),
             f"'signature' must be a name of letters, digits, _ . -; got {entry.signature!r:.80}")
    for name in ("inputs", "outputs"):
        tensors = getattr(entry, name)
        _require(isinstance(tensors, dict) and all(isinstance(k, str) and isinstance(t, TensorSpec)
                                                   for k, t in tensors.items()),
                 f"{name!r} must map names to {{tensor, shape, dtype}}")


def _signature_entry(cls, data, where, **convert):
    """A signature entry of class ``cls`` from JSON ``data``, its tensor maps converted."""
    return _build(cls, data, where, inputs=lambda d: _tensor_map(d, "input"),
                  outputs=lambda d: _tensor_map(d, "output"), **convert)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentCost:
    """MFLOPs of one segment in one convention (``rdinet_lite.accounting.CONVENTIONS``)."""

    segment: float  # this segment alone
    cumulative: float  # segments 1..k: what an image leaving at exit k has paid

    def __post_init__(self):
        _require(_is_number(self.segment) and _is_number(self.cumulative),
                 f"'segment' and 'cumulative' must be finite non-negative numbers; got {self!r:.80}")


def _segment_costs(data):
    if not isinstance(data, dict):
        return data
    return {convention: _build(SegmentCost, cost, f"'cost_mflops.{convention}'") for convention, cost in data.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segment:
    """Signature ``segment_k``: stage k and exit head k (``image`` or ``features`` -> ``probs``, ``entropy`` and,
    except the last, ``next_features``)."""

    index: int  # 0-based position in Manifest.segments; the segment of exit index + 1
    exit: str  # "exit_k", 1-based
    signature: str  # "segment_k", 1-based
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    cost_mflops: dict[str, SegmentCost]  # convention -> cost; "honest" always

    def __post_init__(self):
        _check_signature(self)
        _require(isinstance(self.cost_mflops, dict) and isinstance(self.cost_mflops.get("honest"), SegmentCost)
                 and all(isinstance(cost, SegmentCost) for cost in self.cost_mflops.values()),
                 "'cost_mflops' must map conventions, 'honest' among them, to {segment, cumulative}")

    @classmethod
    def from_json(cls, data, where):
        return _signature_entry(cls, data, where, cost_mflops=_segment_costs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FullModel:
    """Signature ``full``: image -> the final exit's ``probs``, no side heads (for comparison)."""

    signature: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    cost_mflops: dict[str, float]  # convention -> MFLOPs; "honest" always

    def __post_init__(self):
        _check_signature(self)
        _require(isinstance(self.cost_mflops, dict) and all(_is_number(v) for v in self.cost_mflops.values())
                 and _is_number(self.cost_mflops.get("honest"), 1e-12),
                 "'cost_mflops.honest' must be a finite positive number")

    @classmethod
    def from_json(cls, data, where="'full_model'"):
        return _signature_entry(cls, data, where)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InGraphExit:
    """Signature ``early_exit``: the whole early exit in one graph (image -> ``probs`` of the exit taken and
    ``exit``, its 0-based index, as a tensor), thresholds fixed at export."""

    signature: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    note: str | None = None

    def __post_init__(self):
        _check_signature(self)

    @classmethod
    def from_json(cls, data, where="'in_graph_exit'"):
        return _signature_entry(cls, data, where)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What segment 1 reads: one float32 image of ``shape`` (1, H, W, C) with pixels in [0, 1]."""

    shape: tuple[int, int, int, int]
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    preprocessing: str | None = None

    def __post_init__(self):
        shape = self.shape
        _require(isinstance(shape, (list, tuple)) and len(shape) == 4 and all(_is_int(n, 1) for n in shape)
                 and shape[0] == 1 and math.prod(shape) <= MAX_INPUT_VALUES,
                 f"'shape' must be [1, H, W, C], positive integers; got {shape!r:.80}")
        _set(self, "shape", tuple(shape))
        _require(self.dtype == "float32" and isinstance(self.value_range, (list, tuple))
                 and list(self.value_range) == [0.0, 1.0],
                 f"the input must be float32 pixels in [0, 1]; got {self.dtype!r:.20} in {self.value_range!r:.40}")
        _set(self, "value_range", tuple(self.value_range))
        _require(self.preprocessing is None or isinstance(self.preprocessing, str), "'preprocessing' must be a string")

    @classmethod
    def from_json(cls, data, where="'input'"):
        return _build(cls, data, where)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExitDistribution:
    """The share of images leaving at each exit (position k-1: exit k), measured at export."""

    shares: tuple[float, ...]
    images: int | None = None  # how many images they were measured on
    source: str | None = None

    def __post_init__(self):
        shares = self.shares
        _require(isinstance(shares, (list, tuple)) and all(_is_number(v) for v in shares) and sum(shares) > 0,
                 f"'shares' must be finite non-negative numbers with a positive sum; got {shares!r:.80}")
        _set(self, "shares", tuple(float(v) for v in shares))
        _require(self.images is None or _is_int(self.images, 0), "'images' must be a count")

    @classmethod
    def from_json(cls, data, where="'exit_distribution'"):
        return _build(cls, data, where)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    """``manifest.json`` of a bundle: its one model file and what each of its signatures computes.

    Fields in the order of the JSON file (after ``format`` and ``format_version``); :attr:`thresholds`
    ``[k-1]`` is exit k's entropy threshold T_k (0 closes the exit), :attr:`segments` ``[k-1]`` is
    ``segment_k``.
    """

    FORMAT: ClassVar[str] = "rdinet_tflite_bundle"
    FORMAT_VERSION: ClassVar[int] = 2  # 2: one model.tflite with a signature per segment (1: a file per segment)

    file: str
    bytes: int | None = None
    sha256: str
    model_name: str | None = None
    num_exits: int
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    precision: str | None = None
    precision_notes: str | None = None
    int8_calibration_images: int | None = None
    input: InputSpec
    thresholds: tuple[float, ...]
    exit_rule: str | None = None
    entropy: str | None = None
    segments: tuple[Segment, ...]
    full_model: FullModel | None = None
    in_graph_exit: InGraphExit | None = None
    cost_conventions: dict[str, str] | None = None
    exit_distribution: ExitDistribution | None = None

    def __post_init__(self):
        _require(_is_safe_name(self.file), "'file' must be a plain file name inside the bundle (letters, digits, "
                 f"_ . -); got {self.file!r:.80}")
        _require(isinstance(self.sha256, str) and re.fullmatch(r"[0-9a-f]{64}", self.sha256),
                 f"'sha256' must be 64 lowercase hex digits; got {self.sha256!r:.80}")
        num_exits = self.num_exits
        _require(_is_int(num_exits, 1), f"'num_exits' must be a positive integer; got {num_exits!r:.40}")
        for name in ("bytes", "num_classes", "int8_calibration_images"):
            value = getattr(self, name)
            _require(value is None or _is_int(value, 0), f"{name!r} must be a non-negative integer; got {value!r:.40}")
        _require(self.num_classes != 0, "'num_classes' must be a positive integer; got 0")
        thresholds = self.thresholds
        _require(isinstance(thresholds, (list, tuple)) and len(thresholds) == num_exits - 1
                 and all(_is_number(t) for t in thresholds),
                 f"'thresholds' must be {num_exits - 1} finite non-negative numbers (one per side exit); "
                 f"got {thresholds!r:.80}")
        _set(self, "thresholds", tuple(float(t) for t in thresholds))
        _require(isinstance(self.input, InputSpec), f"'input' must be an object; got {self.input!r:.80}")
        segments = self.segments
        _require(isinstance(segments, (list, tuple)) and len(segments) == num_exits
                 and all(isinstance(s, Segment) for s in segments),
                 f"'segments' must list {num_exits} segments, one per exit; got {segments!r:.80}")
        _set(self, "segments", tuple(segments))
        for index, segment in enumerate(segments):
            number = index + 1
            _require(segment.signature == segment_signature(index),
                     f"segment {number} must be the signature {segment_signature(index)!r}; "
                     f"got {segment.signature!r:.80}")
            _require(segment.index == index and segment.exit == f"exit_{number}",
                     f"segment {number} must have 'index' {index} and 'exit' 'exit_{number}'")
        for name, cls, signature in (("full_model", FullModel, FULL_SIGNATURE),
                                     ("in_graph_exit", InGraphExit, IN_GRAPH_SIGNATURE)):
            entry = getattr(self, name)
            _require(entry is None or (isinstance(entry, cls) and entry.signature == signature),
                     f"{name!r} must be the signature {signature!r} or null; got {entry!r:.80}")
        distribution = self.exit_distribution
        _require(distribution is None or (isinstance(distribution, ExitDistribution)
                                          and len(distribution.shares) == num_exits),
                 f"'exit_distribution.shares' must hold {num_exits} shares, one per exit; got {distribution!r:.80}")
        for name in ("model_name", "precision", "precision_notes", "exit_rule", "entropy"):
            _require(getattr(self, name) is None or isinstance(getattr(self, name), str), f"{name!r} must be a string")
        names = self.class_names
        _require(names is None or (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)),
                 "'class_names' must be a list of strings or null")
        if names is not None:
            _set(self, "class_names", tuple(names))
        _require(self.cost_conventions is None or isinstance(self.cost_conventions, dict),
                 "'cost_conventions' must be an object")

    @classmethod
    def from_json(cls, data):
        """The manifest in the parsed JSON object ``data``; :class:`InputError` naming the first bad field."""
        _require(isinstance(data, dict) and data.get("format") == cls.FORMAT, f"this is not an {cls.FORMAT} manifest")
        version = data.get("format_version")
        _require(version != 1, f"it describes a format-1 bundle (one .tflite file per segment); this library reads "
                 f"format {cls.FORMAT_VERSION} (one {BUNDLE_FILE} with a signature per segment)")
        _require(version == cls.FORMAT_VERSION,
                 f"it has format version {version!r:.20}; this library reads version {cls.FORMAT_VERSION}")

        def segments(entries):
            if not isinstance(entries, list):
                return entries
            return [Segment.from_json(entry, f"segment {index + 1}") for index, entry in enumerate(entries)]

        kwargs = _fields(cls, data, "the manifest")
        converters = {"input": InputSpec.from_json, "segments": segments, "full_model": FullModel.from_json,
                      "in_graph_exit": InGraphExit.from_json, "exit_distribution": ExitDistribution.from_json}
        for name, function in converters.items():
            if kwargs.get(name) is not None:
                kwargs[name] = function(kwargs[name])
        return cls(**kwargs)

    def to_json(self):
        """The manifest as written to ``manifest.json``: ``format``, ``format_version``, then every field."""
        return {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, **to_json(self)}

    @classmethod
    def read(cls, bundle_dir):
        """The manifest of ``bundle_dir``; one :class:`InputError` naming the problem and the fix if it is
        missing, not JSON, of another format version, or has a bad field."""
        path = Path(bundle_dir) / MANIFEST
        if not path.is_file():
            raise InputError(f"no {MANIFEST} in {bundle_dir}: not an exported bundle; {EXPORT_HINT}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path} is not valid JSON ({error}); {EXPORT_HINT}") from error
        except RecursionError:
            raise InputError(f"{path} is nested too deeply to be a manifest; {EXPORT_HINT}") from None
        try:
            return cls.from_json(data)
        except InputError as error:
            raise InputError(f"{path}: {error}; {EXPORT_HINT}") from None

    def write(self, bundle_dir):
        """Write ``manifest.json`` into ``bundle_dir`` (the exporter's staging directory)."""
        (Path(bundle_dir) / MANIFEST).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def read_model(self, bundle_dir):
        """``(path, content)`` of the bundle's model file, checked against :attr:`sha256` (always)."""
        path = Path(bundle_dir) / self.file
        if not path.is_file():
            raise InputError(f"{path} listed in the manifest is missing; {EXPORT_HINT}")
        content = path.read_bytes()
        if hashlib.sha256(content).hexdigest() != self.sha256:
            raise InputError(f"{path} does not match the manifest's sha256 (changed or corrupt); {EXPORT_HINT}")
        return path, content
