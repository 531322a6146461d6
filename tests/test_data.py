"""Tests for rdinet_tf.data: loaders for every source/layout, their errors, and make_dataset."""

import gzip
import pickle
import sys
import types

import keras
import numpy as np
import pytest

from rdinet_tf import data
from rdinet_tf.data import DataError


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def _fake_mnist(n_train=50, n_test=20):
    """uint8 images whose pixel [0, 0] is the image's index, so permuted splits stay traceable."""
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)
    x_test[:, 0, 0] = np.arange(n_test)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _write_idx(path, array, gz=False):
    magic = 2051 if array.ndim == 3 else 2049
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_mnist_idx(directory, arrays, sep="-"):
    _write_idx(directory / f"train-images{sep}idx3-ubyte", arrays["x_train"], gz=False)
    _write_idx(directory / f"train-labels{sep}idx1-ubyte.gz", arrays["y_train"], gz=True)
    _write_idx(directory / f"t10k-images{sep}idx3-ubyte.gz", arrays["x_test"], gz=True)
    _write_idx(directory / f"t10k-labels{sep}idx1-ubyte", arrays["y_test"], gz=False)


def _write_cifar_batch(path, n, offset):
    """Batch of n images; image i has (R, G, B) = (offset+i, 100+i, 200+i) at row 1, col 2, zero elsewhere."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        for channel, base in enumerate((offset, 100, 200)):
            rows[i, channel * 1024 + 1 * 32 + 2] = base + i
    with open(path, "wb") as f:
        pickle.dump({b"data": rows, b"labels": [i % 10 for i in range(n)]}, f)


def _pixel_ids(images):
    """Recover the image indices stored in pixel [0, 0] by _fake_mnist."""
    return np.rint(images[:, 0, 0, 0] * 255).astype(int)


# ------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_splits():
    splits = data.load("digits")
    assert splits.source == "sklearn: load_digits"
    assert (splits.name, splits.num_classes, splits.image_shape) == ("digits", 10, (28, 28, 1))
    sizes = [len(splits.x_train), len(splits.x_val), len(splits.x_test)]
    assert sum(sizes) == 1797
    assert len(splits.x_test) == 360  # ceil(0.2 * 1797), as scikit-learn rounds
    assert len(splits.x_val) == round(0.1 * (1797 - len(splits.x_test)))
    for x, y in [(splits.x_train, splits.y_train), (splits.x_val, splits.y_val), (splits.x_test, splits.y_test)]:
        assert x.shape[1:] == (28, 28, 1) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.dtype == np.int32 and len(y) == len(x)
        assert set(np.unique(y)) == set(range(10))
    assert splits.x_train.max() == pytest.approx(1.0)  # 16/16 pixels survive the resize


def test_digits_deterministic_and_seed_only_moves_validation():
    a, b = data.load("digits", seed=0), data.load("digits", seed=0)
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    c = data.load("digits", seed=1)
    np.testing.assert_array_equal(a.x_test, c.x_test)
    assert not np.array_equal(a.x_val, c.x_val)
    pooled_a = np.sort(np.concatenate([a.x_train, a.x_val]).reshape(len(a.x_train) + len(a.x_val), -1), axis=0)
    pooled_c = np.sort(np.concatenate([c.x_train, c.x_val]).reshape(len(c.x_train) + len(c.x_val), -1), axis=0)
    np.testing.assert_array_equal(pooled_a, pooled_c)


# ------------------------------------------------------------------------- local npz / idx / cifar


def test_local_npz_mnist(tmp_path):
    arrays = _fake_mnist()
    np.savez(tmp_path / "mnist.npz", **arrays)
    splits = data.load("mnist", data_dir=tmp_path, validation_size=0.2, seed=3)
    assert splits.source == f"npz: {tmp_path / 'mnist.npz'}"
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (40, 10, 20)
    train_ids, val_ids = _pixel_ids(splits.x_train), _pixel_ids(splits.x_val)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(50))
    expected = arrays["x_train"][..., None].astype(np.float32) / 255.0
    np.testing.assert_array_equal(splits.x_train, expected[train_ids])
    np.testing.assert_array_equal(splits.x_val, expected[val_ids])
    np.testing.assert_array_equal(splits.y_val, arrays["y_train"][val_ids])
    np.testing.assert_array_equal(splits.x_test, arrays["x_test"][..., None].astype(np.float32) / 255.0)
    assert splits.y_train.dtype == np.int32 and splits.x_train.dtype == np.float32
    assert len(data.load("mnist", data_dir=tmp_path, validation_size=7).x_val) == 7


@pytest.mark.parametrize("sep", ["-", "."])
def test_local_idx_matches_npz(tmp_path, sep):
    arrays = _fake_mnist()
    (tmp_path / "npz").mkdir()
    (tmp_path / "idx").mkdir()
    np.savez(tmp_path / "npz" / "mnist.npz", **arrays)
    _write_mnist_idx(tmp_path / "idx", arrays, sep=sep)
    from_npz = data.load("mnist", data_dir=tmp_path / "npz", seed=5)
    from_idx = data.load("mnist", data_dir=tmp_path / "idx", seed=5)
    assert from_idx.source == f"idx: {tmp_path / 'idx'}"
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(from_idx, key), getattr(from_npz, key))


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-py"])
def test_local_cifar_python_batches_hwc(tmp_path, subdir):
    folder = tmp_path / subdir
    folder.mkdir(exist_ok=True)
    _write_cifar_batch(folder / "data_batch_1", 4, offset=10)
    _write_cifar_batch(folder / "data_batch_3", 3, offset=50)  # a subset of the five batches is fine
    _write_cifar_batch(folder / "test_batch", 2, offset=90)
    splits = data.load("cifar10", data_dir=tmp_path, validation_size=0)
    assert splits.x_train.shape == (7, 32, 32, 3) and splits.x_test.shape == (2, 32, 32, 3)
    assert len(splits.x_val) == 0
    expected_rgb = [[10 + i, 100 + i, 200 + i] for i in range(4)] + [[50 + i, 100 + i, 200 + i] for i in range(3)]
    np.testing.assert_array_equal(np.rint(splits.x_train[:, 1, 2, :] * 255), expected_rgb)
    np.testing.assert_array_equal(np.rint(splits.x_test[:, 1, 2, :] * 255), [[90, 100, 200], [91, 101, 201]])
    assert splits.x_train.sum() * 255 == pytest.approx(sum(map(sum, expected_rgb)))  # nothing else is set
    np.testing.assert_array_equal(splits.y_train, [0, 1, 2, 3, 0, 1, 2])


def test_local_split_npz_files_merge(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10_train_x.npz", x_train=x_train, y_train=np.arange(12) % 10)
    np.savez(tmp_path / "cifar10_test.npz", x_test=x_test, y_test=np.arange(5).reshape(5, 1))
    np.savez(tmp_path / "cifar100.npz", x_test=np.zeros((2, 8, 8)))  # another dataset: must be ignored
    splits = data.load("cifar10", data_dir=tmp_path, validation_size=2)
    assert "cifar10_train_x.npz" in splits.source and "cifar10_test.npz" in splits.source
    assert "cifar100" not in splits.source
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (10, 2, 5)
    np.testing.assert_array_equal(splits.x_test, x_test.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(splits.y_test, np.arange(5))


def _cifar_npz(path, first, count, key="train", compressed=False):
    """An npz of ``count`` CIFAR images; image i has value ``first + i`` at pixel [0, 0, 0] and label i % 10."""
    x = np.zeros((count, 32, 32, 3), np.uint8)
    x[:, 0, 0, 0] = first + np.arange(count)
    (np.savez_compressed if compressed else np.savez)(path, **{f"x_{key}": x, f"y_{key}": np.arange(count) % 10})


@pytest.mark.parametrize("full, subset", [("cifar10_train.npz", "cifar10_train_10k.npz"),
                                          ("cifar10_train_all.npz", "cifar10_train.npz")])
def test_local_npz_prefers_the_file_with_more_images(tmp_path, full, subset):
    _cifar_npz(tmp_path / full, 0, 12, compressed=True)
    _cifar_npz(tmp_path / subset, 0, 4)  # its first images, like cifar10_train_10k.npz
    _cifar_npz(tmp_path / "cifar10_test.npz", 100, 3, key="test")
    splits = data.load("cifar10", data_dir=tmp_path, validation_size=0)
    assert splits.source == f"npz: {tmp_path / 'cifar10_test.npz'}, {tmp_path / full}"
    np.testing.assert_array_equal(np.rint(splits.x_train[:, 0, 0, 0] * 255), np.arange(12))
    np.testing.assert_array_equal(splits.y_train, np.arange(12) % 10)
    assert len(splits.x_test) == 3

    (tmp_path / full).unlink()  # the subset alone still works
    splits = data.load("cifar10", data_dir=tmp_path, validation_size=1)
    assert splits.source == f"npz: {tmp_path / 'cifar10_test.npz'}, {tmp_path / subset}"
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (3, 1, 3)


def test_local_npz_tie_and_corrupt_file_are_clear_errors(tmp_path):
    _cifar_npz(tmp_path / "cifar10_train.npz", 0, 4)
    _cifar_npz(tmp_path / "cifar10_train_copy.npz", 10, 4)
    _cifar_npz(tmp_path / "cifar10_train_full.npz", 20, 6)
    _cifar_npz(tmp_path / "cifar10_test.npz", 100, 3, key="test")
    assert str(tmp_path / "cifar10_train_full.npz") in data.load("cifar10", data_dir=tmp_path).source  # no tie for most
    (tmp_path / "cifar10_train_full.npz").unlink()
    with pytest.raises(DataError, match="key 'x_train' has 4 images in both cifar10_train.npz and "
                                        "cifar10_train_copy.npz .*remove one of them"):
        data.load("cifar10", data_dir=tmp_path)
    (tmp_path / "cifar10_train_copy.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match="cifar10_train_copy.npz' as an .npz archive"):
        data.load("cifar10", data_dir=tmp_path)


def test_env_var_is_honoured(tmp_path, monkeypatch):
    np.savez(tmp_path / "mnist.npz", **_fake_mnist())
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.load("mnist").source == f"npz: {tmp_path / 'mnist.npz'}"
    assert data.load("mnist", source="local").source == f"npz: {tmp_path / 'mnist.npz'}"
    assert data.load("digits").source == "sklearn: load_digits"  # the embedded set ignores the env var


# ------------------------------------------------------------------------- errors


def test_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        data.load("mnist", data_dir=missing)
    message = str(err.value)
    for part in (str(missing), "does not exist", "mnist*.npz", "train-images-idx3-ubyte", "--data-dir"):
        assert part in message


def test_local_without_dir():
    with pytest.raises(DataError, match="--data-dir DIR or set RDINET_DATA_DIR"):
        data.load("cifar10", source="local")


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ("mnist", ["mnist*.npz", "train-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"]),
        ("cifar10", ["cifar10*.npz", "data_batch_1", "test_batch", "cifar-10-batches-py/"]),
    ],
)
def test_empty_dir(tmp_path, dataset, expected):
    (tmp_path / "unrelated.txt").write_text("x")
    with pytest.raises(DataError) as err:
        data.load(dataset, data_dir=tmp_path)
    message = str(err.value)
    assert f"found no {dataset} data in {str(tmp_path)!r}" in message
    for part in expected + ["x_train, y_train, x_test, y_test", "RDINET_DATA_DIR"]:
        assert part in message


def test_npz_missing_key(tmp_path):
    arrays = _fake_mnist()
    del arrays["y_test"]
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError) as err:
        data.load("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "mnist.npz" in message and "lack the key(s) y_test" in message and str(tmp_path) in message


def test_wrong_image_shape(tmp_path):
    arrays = _fake_mnist()
    arrays["x_train"] = np.zeros((50, 32, 32), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError) as err:
        data.load("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "train split of mnist" in message
    assert "(50, 32, 32, 1)" in message and "expected (N, 28, 28, 1) or (N, 28, 28)" in message


def test_bad_labels(tmp_path):
    arrays = _fake_mnist()
    arrays["y_test"] = arrays["y_test"] + 10
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError, match=r"test split of mnist .*labels must be integers in 0\.\.9"):
        data.load("mnist", data_dir=tmp_path)


def test_corrupt_idx_magic(tmp_path):
    arrays = _fake_mnist()
    _write_mnist_idx(tmp_path, arrays)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(np.array([1234, 20, 28, 28], dtype=">i4").tobytes() + arrays["x_test"].tobytes())
    with pytest.raises(DataError) as err:
        data.load("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "magic number 1234, expected 2051" in message


def test_truncated_and_incomplete_idx(tmp_path):
    arrays = _fake_mnist()
    _write_mnist_idx(tmp_path, arrays)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing train-labels-idx1-ubyte\[\.gz\]"):
        data.load("mnist", data_dir=tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", arrays["y_train"][:-1])
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte' is truncated or corrupt"):
        data.load("mnist", data_dir=tmp_path)


def test_incomplete_cifar_batches(tmp_path):
    _write_cifar_batch(tmp_path / "test_batch", 2, offset=0)
    with pytest.raises(DataError, match="need test_batch and at least one of data_batch_1..data_batch_5"):
        data.load("cifar10", data_dir=tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1' is not a CIFAR-10 python batch"):
        data.load("cifar10", data_dir=tmp_path)


def test_unknown_names_and_bad_validation_size(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'svhn'; choose one of \['cifar10', 'digits', 'mnist'\]"):
        data.load("svhn")
    with pytest.raises(DataError, match=r"unknown data source 'web'; choose one of \['auto', 'tfds', 'digits'"):
        data.load("mnist", source="web")
    with pytest.raises(DataError, match="source 'digits' only provides the digits dataset"):
        data.load("mnist", source="digits")
    for bad in (1.5, -1, 1797, True):
        with pytest.raises(DataError, match="validation_size"):
            data.load("digits", validation_size=bad)


def _prepared_builder(name, data_dir=None):
    """A fake tfds builder whose dataset is in the cache (so no download host is probed)."""
    return types.SimpleNamespace(is_prepared=lambda: True)


def test_tfds_failure_is_one_clear_error(monkeypatch):
    fake = types.ModuleType("tensorflow_datasets")

    def fail(*args, **kwargs):
        raise ConnectionError("Failed to resolve storage.googleapis.com")

    fake.load, fake.as_numpy, fake.builder = fail, lambda tree: tree, _prepared_builder
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(DataError) as err:
        data.load("cifar10")
    message = str(err.value)
    assert isinstance(err.value.__cause__, ConnectionError)
    for part in ("could not download or load 'cifar10'", "Failed to resolve storage.googleapis.com",
                 "--data-dir DIR", "RDINET_DATA_DIR", "--dataset digits", "data_batch_1"):
        assert part in message


def test_tfds_success_path_with_fake_module(monkeypatch):
    arrays = _fake_mnist()
    fake = types.ModuleType("tensorflow_datasets")
    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return [(arrays["x_train"][..., None], arrays["y_train"]), (arrays["x_test"][..., None], arrays["y_test"])]

    fake.load, fake.as_numpy, fake.builder = fake_load, lambda tree: tree, _prepared_builder
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    splits = data.load("mnist", validation_size=0)
    assert calls == [("mnist", {"split": ["train", "test"], "as_supervised": True, "batch_size": -1, "data_dir": None})]
    assert splits.source == "tfds: mnist"
    np.testing.assert_array_equal(splits.x_train, arrays["x_train"][..., None].astype(np.float32) / 255.0)


# ------------------------------------------------------------------------- make_dataset


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return xs, ys


def test_make_dataset_batches_and_determinism():
    x = np.random.default_rng(0).random((10, 32, 32, 3), dtype=np.float32)
    y = np.arange(10)
    xs, ys = _collect(data.make_dataset(x, y, batch_size=4))
    assert [b.shape for b in xs] == [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
    assert ys[0].dtype == np.int32 and xs[0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(xs), x)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    assert len(_collect(data.make_dataset(x, y, batch_size=4, drop_remainder=True))[0]) == 2

    shuffled = [np.concatenate(_collect(data.make_dataset(x, y, 4, shuffle=True, seed=7))[1]) for _ in range(2)]
    np.testing.assert_array_equal(shuffled[0], shuffled[1])
    assert sorted(shuffled[0]) == list(range(10)) and not np.array_equal(shuffled[0], y)


def _crop_candidates(image):
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + 32, dx : dx + 32]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop[:, ::-1]


def _augmented(x, y, batch_size=8, epochs=1, **kwargs):
    """All batches of ``epochs`` passes of an augmented dataset, concatenated per column."""
    ds = data.make_dataset(x, y, batch_size, augment=True, **kwargs).repeat(epochs)
    return [np.concatenate(column) for column in zip(*[[t.numpy() for t in batch] for batch in ds])]


def _coordinate_images(n):
    """Images whose channels hold (row + 1) / 64, (col + 1) / 64 and (index + 1) / 1024 (exact in float32)."""
    rows, cols = np.meshgrid(np.arange(1, 33) / 64, np.arange(1, 33) / 64, indexing="ij")
    ids = np.arange(1, n + 1)[:, None, None] / 1024 * np.ones((32, 32))
    return np.stack([np.broadcast_to(rows, ids.shape), np.broadcast_to(cols, ids.shape), ids], -1).astype(np.float32)


def _decode(images):
    """(index, row offset, column offset, flipped) of each augmented ``_coordinate_images`` image.

    Pixel (16, 15..16) is always inside the original image: row 12 + dy; columns 11 + dx, 12 + dx
    unflipped, or 12 + dx, 11 + dx flipped.
    """
    coords = np.rint(images[:, 16, 15:17, :2] * 64).astype(int) - 1
    flipped = coords[:, 1, 1] < coords[:, 0, 1]
    ids = np.rint(images[:, 16, 16, 2] * 1024).astype(int) - 1
    return ids, coords[:, 1, 0] - 12, coords[:, 1, 1] - 12 + flipped, flipped


def test_augment_is_a_pad_crop_flip_of_each_image():
    x = np.random.default_rng(0).uniform(0.01, 1.0, (6, 32, 32, 3)).astype(np.float32)
    augmented, labels = _augmented(x, np.arange(6), batch_size=6, seed=3)
    assert augmented.shape == x.shape and augmented.dtype == np.float32
    np.testing.assert_array_equal(labels, np.arange(6))
    transforms = []
    for original, image in zip(x, augmented):
        matches = [t for t, crop in _crop_candidates(original) if np.array_equal(crop, image)]
        assert len(matches) == 1, "augmented image is not a pad-4 crop (+ optional flip) of its input"
        transforms += matches
    assert len(set(transforms)) > 1  # drawn per image, not once per batch


def test_augment_draws_every_offset_and_flips_half_per_image_with_aligned_labels():
    n = 300
    x = _coordinate_images(n)
    y = np.arange(n) % 10
    images, labels, weights = _augmented(x, y, batch_size=64, shuffle=True, seed=1, sample_weight=np.arange(n) / n)
    ids, dy, dx, flipped = _decode(images)
    assert sorted(ids) == list(range(n)) and not np.array_equal(ids, np.arange(n))  # shuffled
    np.testing.assert_array_equal(labels, ids % 10)
    np.testing.assert_array_equal(weights, (ids / n).astype(np.float32))
    for image, i, row, col, flip in zip(images, ids, dy, dx, flipped):  # the decoded transform explains every pixel
        crop = np.pad(x[i], ((4, 4), (4, 4), (0, 0)))[row : row + 32, col : col + 32]
        np.testing.assert_array_equal(image, crop[:, ::-1] if flip else crop)
    assert set(dy) == set(dx) == set(range(9))
    assert 0.4 < flipped.mean() < 0.6
    for batch in range(0, n, 64):  # every batch mixes offsets and flips
        transforms = set(zip(dy[batch : batch + 64], dx[batch : batch + 64], flipped[batch : batch + 64]))
        assert len(transforms) > 10


def test_augment_is_reproducible_per_seed_and_fresh_per_epoch():
    x = _coordinate_images(40)
    y = np.arange(40) % 10
    first = _augmented(x, y, epochs=2, seed=3)[0]
    np.testing.assert_array_equal(first, _augmented(x, y, epochs=2, seed=3)[0])
    assert not np.array_equal(first[:40], first[40:])  # the second epoch gets new crops
    assert not np.array_equal(first, _augmented(x, y, epochs=2, seed=4)[0])
    assert not np.array_equal(_augmented(x, y)[0], _augmented(x, y)[0])  # no seed: differs run to run


def test_augment_without_seed_ignores_the_global_seed():
    x = _coordinate_images(40)
    y = np.arange(40) % 10
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        runs.append(_augmented(x, y)[0])
    assert not np.array_equal(*runs)
