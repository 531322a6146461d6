"""Datasets for RDI-Nets: loading, train/validation/test splits and tf.data pipelines.

Every dataset comes back as float32 NHWC images in [0, 1] (no mean/std
normalisation) and int32 labels. The validation split is held out from the
training set and is meant for exit-threshold calibration; the test set is never
touched by it.

Supported datasets (see ``DATASETS``):

- ``mnist``: 28x28x1, from tensorflow-datasets or a local directory.
- ``cifar10``: 32x32x3, from tensorflow-datasets or a local directory.
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits, resized to 28x28x1
  so MNIST models run on it. It ships with scikit-learn and needs no download.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import os
import pickle
import re
import socket
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from rdinet_lite.errors import InputError
from rdinet_tf.catalog import DATA_DIR_ENV, DATASETS
from rdinet_lite.inputs import check_images, check_labels


#: Accepted values of ``load(source=...)``.
SOURCES = ("auto", "tfds", "digits", "local")


#: Where tensorflow-datasets downloads each dataset from: probed first, so an
#: offline machine gets its error in seconds instead of minutes of retries.
DOWNLOAD_HOSTS = {"mnist": ("storage.googleapis.com", 443), "cifar10": ("www.cs.toronto.edu", 443)}
REACH_TIMEOUT = 5.0  # seconds

#: Zero padding of the ``make_dataset(augment=True)`` crops (the standard CIFAR augmentation).
AUGMENT_PAD = 4

_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0  # fixed, so the digits test set does not depend on ``seed``

# MNIST IDX files: role -> (base name, IDX magic number). Each may end in .gz.
_IDX_FILES = {
    "x_train": ("train-images", 2051),
    "y_train": ("train-labels", 2049),
    "x_test": ("t10k-images", 2051),
    "y_test": ("t10k-labels", 2049),
}
_CIFAR_SUBDIR = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


class DataError(InputError):
    """A dataset could not be found, downloaded or parsed; the message says how to fix it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """A dataset split into train / validation / test numpy arrays.

    Images are float32 NHWC in [0, 1]; labels are int32. ``source`` says where
    the data came from (e.g. ``"npz: /data/mnist.npz"`` or ``"tfds: mnist"``).
    """

    name: str
    num_classes: int
    image_shape: tuple
    source: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_val: np.ndarray = dataclasses.field(repr=False)
    y_val: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)


def load(dataset, data_dir=None, source="auto", validation_size=0.1, seed=0) -> Splits:
    """Load ``dataset`` and split off a validation set from its training data.

    Args:
        dataset: one of ``DATASETS``.
        data_dir: local directory holding the data (see "local" below). For
            ``source="tfds"`` it is passed on as the tensorflow-datasets cache dir.
        source: where to read the data from:
            - "auto": "local" if ``data_dir`` is given; "digits" for the digits
              dataset; "local" if $RDINET_DATA_DIR is set; otherwise "tfds".
            - "tfds": ``tensorflow_datasets.load`` (may download).
            - "digits": ``sklearn.datasets.load_digits`` (offline), with a fixed
              stratified 80/20 train/test split.
            - "local": ``data_dir`` (or $RDINET_DATA_DIR) holding one of
              (a) ``<dataset>*.npz`` files that together provide x_train, y_train,
              x_test, y_test (uint8 images); where several hold a key, the one whose
              array has the most images is used (so ``cifar10_train.npz``, 50,000
              images, wins over ``cifar10_train_10k.npz``) and a tie is an error;
              ``source`` names the files used; (b) for mnist, the four IDX files
              (optionally .gz); (c) for cifar10, the python batches
              ``data_batch_1..5`` (any non-empty subset) and ``test_batch``,
              directly in the directory or in ``cifar-10-batches-py/``.
        validation_size: fraction of the training set (float in [0, 1)) or a
            number of images (int) held out as the validation split.
        seed: seed of the permutation choosing the validation images.

    Raises:
        DataError: unknown name/source, missing or malformed files, failed download.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; choose one of {list(SOURCES)}")
    env_dir = os.environ.get(DATA_DIR_ENV) or None
    if source == "auto":
        if data_dir is not None:
            source = "local"
        elif dataset == "digits":
            source = "digits"
        else:
            source = "local" if env_dir else "tfds"

    if source == "local":
        arrays, origin = _load_local(dataset, data_dir if data_dir is not None else env_dir)
    elif source == "digits":
        if dataset != "digits":
            raise DataError(f"source 'digits' only provides the digits dataset, not {dataset!r}")
        arrays, origin = _load_digits()
    else:
        arrays, origin = _load_tfds(dataset, data_dir)

    image_shape, num_classes = DATASETS[dataset]
    x_train, y_train = _check_arrays(dataset, arrays["x_train"], arrays["y_train"], "train", origin)
    x_test, y_test = _check_arrays(dataset, arrays["x_test"], arrays["y_test"], "test", origin)
    train_idx, val_idx = _validation_indices(len(x_train), validation_size, seed)
    return Splits(
        name=dataset,
        num_classes=num_classes,
        image_shape=image_shape,
        source=origin,
        x_train=x_train[train_idx],
        y_train=y_train[train_idx],
        x_val=x_train[val_idx],
        y_val=y_train[val_idx],
        x_test=x_test,
        y_test=y_test,
    )


def make_dataset(x, y, batch_size, shuffle=False, augment=False, seed=None, drop_remainder=False,
                 sample_weight=None):
    """Build a prefetching ``tf.data.Dataset`` of ``(images, labels)`` batches (``(images, labels, weights)``
    with ``sample_weight``, which ``fit`` applies to every loss term and metric).

    ``augment=True`` applies the standard CIFAR augmentation to each batch at once (:func:`_pad_crop_flip`):
    zero-pad by 4, crop back to the original size at a random offset and flip horizontally with
    probability 1/2, offsets and flip drawn per image. Its draws are stateless, seeded per batch from a
    ``Dataset.random`` stream that is re-randomised at every iteration, so the map runs in parallel yet the
    same ``seed`` gives the same batches, and each epoch of a ``.repeat()`` gets fresh crops. With
    ``seed=None`` the augmentation seed comes from OS entropy, so runs differ even under a global TensorFlow
    or Keras seed (shuffling with ``seed=None`` follows the global seed, as ``Dataset.shuffle`` does).
    """
    x = check_images(x, np.shape(x)[1:], "make_dataset")
    y = check_labels(y, len(x))
    if batch_size < 1:
        raise InputError(f"batch_size must be 1 or more; got {batch_size}")
    columns = (x, y)
    if sample_weight is not None:
        weights = np.asarray(sample_weight, np.float32).reshape(-1)
        if weights.shape != (len(x),) or not np.isfinite(weights).all() or (weights < 0).any():
            raise InputError(f"sample_weight must hold one finite non-negative weight per image ({len(x)}); "
                             f"got shape {np.shape(sample_weight)}")
        columns += (weights,)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        augment_seed = int(np.random.default_rng().integers(2**63)) if seed is None else seed
        batch_seeds = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, batch_seeds).map(
            lambda batch, batch_seed: (_pad_crop_flip(batch[0], batch_seed), *batch[1:]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _pad_crop_flip(images, seed, pad=AUGMENT_PAD):
    """Zero-pad NHWC ``images`` by ``pad``, then take each image's window of the original size at its own
    offset (rows and columns uniform in 0..2*pad), mirrored left-right with probability 1/2.

    ``seed`` (shape (2,)) seeds the stateless draws. The crop and the flip are one pair of gathers of
    row and column indices, the flip reversing the column indices.
    """
    count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    offset_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    offsets = tf.random.stateless_uniform((count, 2), offset_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    flips = tf.random.stateless_uniform((count, 1), flip_seed, minval=0, maxval=2, dtype=tf.int32) == 1
    rows = offsets[:, :1] + tf.range(height)
    cols = offsets[:, 1:] + tf.where(flips, tf.range(width - 1, -1, -1), tf.range(width))
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


# --------------------------------------------------------------------------- sources


def _load_tfds(dataset, data_dir):
    if dataset == "digits":
        raise DataError("the digits dataset is not in tensorflow-datasets; use source 'digits'")
    import tensorflow_datasets as tfds

    offline = (f"If you are offline, point to a local copy with --data-dir DIR or the {DATA_DIR_ENV} "
               f"environment variable ({_layouts(dataset)}), or use --dataset digits, which needs no download.")
    if not tfds.builder(dataset, data_dir=data_dir).is_prepared():
        host, port = DOWNLOAD_HOSTS[dataset]
        try:
            socket.create_connection((host, port), timeout=REACH_TIMEOUT).close()
        except OSError as exc:
            raise DataError(f"{dataset!r} is not in the tensorflow-datasets cache and its download host "
                            f"{host}:{port} cannot be reached ({exc}). {offline}") from None
    try:
        train, test = tfds.as_numpy(
            tfds.load(dataset, split=["train", "test"], as_supervised=True, batch_size=-1, data_dir=data_dir)
        )
    except Exception as exc:  # download/network/cache failures come in many types
        raise DataError(
            f"tensorflow-datasets could not download or load {dataset!r} ({type(exc).__name__}: {exc}). {offline}"
        ) from exc
    return {"x_train": train[0], "y_train": train[1], "x_test": test[0], "y_test": test[1]}, f"tfds: {dataset}"


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[..., None] / 16.0  # values 0..16 -> [0, 1]
    images = tf.image.resize(images, (28, 28), method="bilinear").numpy()
    images = np.clip(images, 0.0, 1.0)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        bunch.target,
        test_size=_DIGITS_TEST_FRACTION,
        random_state=_DIGITS_TEST_SEED,
        stratify=bunch.target,
    )
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return arrays, "sklearn: load_digits"


def _load_local(dataset, data_dir):
    if data_dir is None:
        raise DataError(
            f"no local data directory given for {dataset!r}: pass --data-dir DIR or set {DATA_DIR_ENV} "
            f"to a directory holding {_layouts(dataset)}"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data directory {str(root)!r} does not exist or is not a directory; "
            f"it should hold {_layouts(dataset)} (set it with --data-dir DIR or {DATA_DIR_ENV})"
        )
    npz_files = sorted(
        p for p in root.iterdir() if p.is_file() and re.fullmatch(rf"{re.escape(dataset)}([_.-].*)?\.npz", p.name)
    )
    if npz_files:
        return _read_npz_files(dataset, root, npz_files)
    if dataset == "mnist":
        idx_files = {role: _find_idx(root, *spec) for role, spec in _IDX_FILES.items()}
        if any(idx_files.values()):
            return _read_idx_files(root, idx_files)
    if dataset == "cifar10":
        for folder in (root, root / _CIFAR_SUBDIR):
            names = [n for n in (*_CIFAR_TRAIN_BATCHES, "test_batch") if (folder / n).is_file()]
            if names:
                return _read_cifar_batches(folder, names)
    raise DataError(
        f"found no {dataset} data in {str(root)!r}: looked for {_layouts(dataset)}. "
        f"Put the files there, point --data-dir / {DATA_DIR_ENV} elsewhere, "
        f"or give neither to download with tensorflow-datasets"
    )


def _layouts(dataset):
    """Human-readable list of the local file layouts accepted for ``dataset``."""
    layouts = [f"'{dataset}*.npz' file(s) with keys {', '.join(_SPLIT_KEYS)}"]
    if dataset == "mnist":
        layouts.append("the MNIST IDX files " + ", ".join(_idx_name(*spec) for spec in _IDX_FILES.values()))
    if dataset == "cifar10":
        layouts.append(
            f"the CIFAR-10 python batches data_batch_1..data_batch_5 and test_batch "
            f"(directly or in {_CIFAR_SUBDIR}/)"
        )
    return " or ".join(layouts)


def _read_npz_files(dataset, root, paths):
    """Each split key from the file whose array of it has the most images; a tie for the most is an error."""
    lengths = {path: _npz_lengths(path) for path in paths}
    best = {}  # key -> path
    for key in _SPLIT_KEYS:
        holders = sorted((counts[key], path) for path, counts in lengths.items() if key in counts)
        if len(holders) > 1 and holders[-1][0] == holders[-2][0]:
            raise DataError(
                f"key {key!r} has {holders[-1][0]} images in both {holders[-2][1].name} and {holders[-1][1].name} "
                f"in {str(root)!r}; remove one of them (of several {dataset}*.npz files holding a key, the one "
                f"with the most images is used)"
            )
        if holders:
            best[key] = holders[-1][1]
    missing = [key for key in _SPLIT_KEYS if key not in best]
    if missing:
        found = ", ".join(p.name for p in paths)
        raise DataError(
            f"{found} in {str(root)!r} lack the key(s) {', '.join(missing)}; the {dataset}*.npz "
            f"file(s) there must together provide {', '.join(_SPLIT_KEYS)}"
        )
    used = sorted(set(best.values()))
    arrays = {}
    for path in used:
        with _npz_errors(path), np.load(path, allow_pickle=False) as npz:
            arrays.update({key: npz[key] for key, owner in best.items() if owner == path})
    return arrays, "npz: " + ", ".join(str(p) for p in used)


def _npz_lengths(path):
    """``{split key: number of images}`` of an .npz file, read from the .npy headers without loading arrays."""
    lengths = {}
    with _npz_errors(path), zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.removesuffix(".npy") in _SPLIT_KEYS:
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    header_end = f.tell()
                stored = archive.getinfo(member).file_size - header_end
                if dtype.hasobject or any(n < 0 for n in shape) or math.prod(shape) * dtype.itemsize > stored:
                    raise ValueError(f"its array {member!r} claims shape {shape} of {dtype}, more than the "
                                     f"{stored} bytes it holds (truncated or crafted)")
                lengths[member.removesuffix(".npy")] = shape[0] if shape else 0
    return lengths


@contextlib.contextmanager
def _npz_errors(path):
    """Turn a failure to read ``path`` as an .npz archive into a DataError naming it."""
    try:
        yield
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as exc:
        raise DataError(f"could not read {str(path)!r} as an .npz archive: {type(exc).__name__}: {exc}") from exc


def _idx_name(base, magic):
    """Canonical IDX file name, e.g. ``train-images-idx3-ubyte[.gz]``, for messages."""
    return f"{base}-idx{1 if magic == 2049 else 3}-ubyte[.gz]"


def _find_idx(root, base, magic):
    """Path of an IDX file in ``root`` (``-idx3-``/``.idx3-`` spelling, optional .gz), or None."""
    kind = "idx1" if magic == 2049 else "idx3"
    for name in (f"{base}-{kind}-ubyte", f"{base}.{kind}-ubyte"):
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_idx_files(root, paths):
    missing = [_idx_name(*_IDX_FILES[role]) for role, path in paths.items() if path is None]
    if missing:
        raise DataError(f"incomplete MNIST IDX files in {str(root)!r}: missing {', '.join(missing)}")
    arrays = {role: _read_idx(paths[role], _IDX_FILES[role][1]) for role in _IDX_FILES}
    return arrays, f"idx: {root}"


def _read_idx(path, magic):
    """Parse one uint8 IDX file (big-endian header) with numpy."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"could not read MNIST IDX file {str(path)!r}: {exc}") from exc
    ndim = 3 if magic == 2051 else 1
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise DataError(f"{str(path)!r} is too short ({len(raw)} bytes) to be an MNIST IDX file")
    header = np.frombuffer(raw[:header_size], dtype=">i4")
    if header[0] != magic:
        raise DataError(
            f"{str(path)!r} is not an MNIST IDX {'image' if ndim == 3 else 'label'} file: "
            f"magic number {int(header[0])}, expected {magic}; replace it with the original file"
        )
    shape = tuple(int(d) for d in header[1:])
    if any(d < 0 for d in shape):
        raise DataError(f"{str(path)!r} is corrupt: its header gives the negative shape {shape}; replace it with "
                        "the original file")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if data.size != math.prod(shape):
        raise DataError(
            f"{str(path)!r} is truncated or corrupt: header promises shape {shape} "
            f"({math.prod(shape)} bytes) but holds {data.size} bytes of data"
        )
    return data.reshape(shape)


def _read_cifar_batches(folder, names):
    train_names = [n for n in names if n != "test_batch"]
    if not train_names or "test_batch" not in names:
        raise DataError(
            f"incomplete CIFAR-10 python batches in {str(folder)!r}: found {', '.join(names)}, "
            f"need test_batch and at least one of data_batch_1..data_batch_5"
        )
    train = [_read_cifar_batch(folder / n) for n in train_names]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    arrays = {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }
    return arrays, f"cifar-python: {folder} ({', '.join(train_names)}, test_batch)"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what an official CIFAR-10 batch holds: dicts, lists, bytes, numbers and numpy arrays.

    (``_codecs.encode`` rebuilds bytes pickled with protocol 2.) Any other global, such as a function a
    crafted file would call, is refused before it runs.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only "
                                         "dicts, lists, bytes and numpy arrays")
        return super().find_class(module, name)


def _read_cifar_batch(path):
    """One pickled CIFAR-10 batch -> (uint8 NHWC images, labels), read with :class:`_CifarUnpickler`."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"])
        images = data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> HWC
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{str(path)!r} is not a CIFAR-10 python batch (a pickled dict with b'data' of shape "
            f"(N, 3072) and b'labels'): {type(exc).__name__}: {exc}"
        ) from exc
    return images, labels


# ------------------------------------------------------------------- checks / splits


def _check_arrays(dataset, x, y, split, origin):
    """Validate one split and convert it to float32 NHWC images in [0, 1] and int32 labels."""
    image_shape, num_classes = DATASETS[dataset]
    x, y = np.asarray(x), np.asarray(y)
    where = f"{split} split of {dataset} ({origin})"
    if x.ndim == 3 and image_shape[-1] == 1:
        x = x[..., None]
    if x.shape[1:] != image_shape:
        raise DataError(
            f"{where}: images have shape {x.shape}, expected (N, {', '.join(map(str, image_shape))})"
            + (f" or (N, {image_shape[0]}, {image_shape[1]})" if image_shape[-1] == 1 else "")
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: labels have shape {y.shape}, expected ({len(x)},) to match the images")
    if len(x) == 0:
        raise DataError(f"{where}: no images")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{where}: labels must be integers in 0..{num_classes - 1}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating) and x.min() >= 0.0 and x.max() <= 1.0:
        x = x.astype(np.float32)
    else:
        raise DataError(f"{where}: images must be uint8 (0..255) or floats in [0, 1], got {x.dtype}")
    return x, y.astype(np.int32)


def _validation_indices(n, validation_size, seed):
    """Sorted (train, validation) index arrays from a seeded permutation of ``range(n)``."""
    if isinstance(validation_size, (bool, np.bool_)):
        raise DataError(f"validation_size must be a fraction in [0, 1) or an int count, got {validation_size!r}")
    if isinstance(validation_size, (int, np.integer)):
        n_val = int(validation_size)
    elif isinstance(validation_size, (float, np.floating)) and 0.0 <= validation_size < 1.0:
        n_val = int(round(validation_size * n))
    else:
        raise DataError(f"validation_size must be a fraction in [0, 1) or an int count, got {validation_size!r}")
    if not 0 <= n_val < n:
        raise DataError(f"validation_size={validation_size!r} must leave at least one of the {n} training images")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
