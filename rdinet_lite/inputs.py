"""Checks of images, labels and exit thresholds where they enter the library (numpy only).

One implementation for the Keras side and the device runner: images are
NHWC floats in [0, 1] with no other preprocessing; labels are integer class
indices.
"""

import numpy as np

from rdinet_lite.errors import InputError


def check_images(images, image_shape, owner, require_float32=False):
    """``images`` as a float32 array of shape (N, *image_shape); one clear error otherwise.

    ``owner`` names what expects them (e.g. the model) in the message;
    ``require_float32`` refuses other float dtypes instead of converting them.
    """
    images = np.asarray(images)
    image_shape = tuple(image_shape)
    if images.ndim != 4 or images.shape[1:] != image_shape:
        raise InputError(
            f"{owner} expects a batch of images of shape (N, {', '.join(map(str, image_shape))}) with "
            f"values in [0, 1]; got shape {images.shape}. Resize the images or pick the model built "
            "for this data (e.g. smallcnn for 28x28x1, resnet38 for 32x32x3)."
        )
    if images.dtype.kind != "f" or (require_float32 and images.dtype != np.float32):
        raise InputError(
            f"{owner} expects float32 pixels in [0, 1] (no other preprocessing); got {images.dtype}: "
            "convert with images.astype(np.float32) / 255 for uint8 images"
        )
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise InputError(f"the images given to {owner} contain NaN or infinite values")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise InputError(
            f"pixels must be in [0, 1]; got values in [{images.min():.3g}, {images.max():.3g}] "
            "(divide 0..255 images by 255)"
        )
    return images


def check_labels(labels, count, num_classes=None):
    """``labels`` as an int32 array of ``count`` class indices in [0, num_classes); one clear error otherwise.

    ``num_classes`` None: any non-negative index.
    """
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.shape[1:] == (1,) * (labels.ndim - 1):
        labels = labels.reshape(-1)
    if labels.shape != (count,):
        raise InputError(f"expected {count} labels (one integer class per image); got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(f"labels must be integer class indices; got {labels.dtype} values "
                             "(one-hot labels: pass labels.argmax(-1))")
    upper = np.inf if num_classes is None else num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= upper):
        wanted = "non-negative" if num_classes is None else f"in [0, {num_classes - 1}]"
        raise InputError(f"labels must be class indices {wanted}; got values in [{labels.min():g}, {labels.max():g}]")
    return labels.astype(np.int32)


def check_batch_size(batch_size):
    """``batch_size`` as an int; one clear error unless it is a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer; got {batch_size!r}")
    return int(batch_size)


def check_thresholds(thresholds):
    """Thresholds as a float array; one clear error for NaN, negative or non-1-D values."""
    try:
        values = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.ndim != 1 or values.size == 0:
        raise InputError(
            "thresholds must be a non-empty list with one entropy threshold per side exit "
            f"(K-1 values for K exits); got {thresholds!r}"
        )
    if np.isnan(values).any() or (values < 0).any():
        raise InputError(
            f"thresholds must be non-negative entropies (0 = never leave at that exit); got {thresholds!r}"
        )
    return values


def open_side_exits(thresholds):
    """Which side exits an input may leave at (bool, the shape of ``thresholds``): a threshold of 0 closes its
    exit. The one statement of that rule for Keras routing, cost accounting, export and the device runner."""
    return np.asarray(thresholds) > 0


def entropy_bounds(thresholds):
    """What each side exit's entropy must fall below for an input to leave there: its threshold, or -inf for a
    closed exit (a one-hot softmax has entropy -log(1 + 1e-5), a hair below 0, and still stays)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return np.where(open_side_exits(thresholds), thresholds, -np.inf)
