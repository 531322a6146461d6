"""Import the reference PyTorch RDI-Net checkpoints into our Keras models.

Usage::

    python -m rdinet_tf.models.torch_checkpoint --checkpoint checkpoint_60000.pth.tar \\
        --model resnet38 --out resnet38.keras

or ``load_torch_checkpoint(path, "resnet38")`` in Python. Reading a checkpoint
needs the optional ``torch`` dependency (``pip install "rdinet_tf[torch]"``); the
file is read with ``torch.load(..., weights_only=True)`` only, so no code in it
runs. A checkpoint is a dict with a ``"state_dict"`` entry or a bare state
dict; a DataParallel ``"module."`` prefix is stripped.

Every tensor of the checkpoint must be used and every weight of the model set,
or the import stops with one :class:`~rdinet_lite.errors.InputError` naming the
first missing, mis-shaped or unexpected tensor. Two kinds of tensors are
accepted and dropped: BatchNorm ``num_batches_tracked`` counters, and the
reference MobileNetV2's unused ``conv2.weight``.

Reference state-dict names (module names, mapped from our layer names by each
model's :class:`~rdinet_tf.models.registry.CheckpointLayout`; each BatchNorm module ``m`` holds
``m.weight``, ``m.bias``, ``m.running_mean``, ``m.running_var``; convs have
``.weight`` and, in SmallCNN only, ``.bias``; linears ``.weight`` and ``.bias``):

``smallcnn`` (MNIST):
    ``conv1``..``conv4``, ``fc1``..``fc3``; exit 1 ``branch_layer1.{0: conv,
    3, 5, 6: linears}``; exit 2 ``branch_layer2.{2, 4, 5: linears}``.
``resnet38`` (the public checkpoint's layout):
    ``conv1``, ``bn1``, ``group{g}_layer{i}.{conv1, bn1, conv2, bn2}`` and
    ``group{1,2}_layer0.downsample.{0: conv, 1: BN}``, ``fc``; exits 1-2
    ``branch_layer{1,2}.{1: conv 5x5, 2: BN, 5: conv 3x3, 6: BN, 9: linear}``,
    exits 3-4 ``branch_layer{3,4}.{1: BasicBlock (conv1, bn1, conv2, bn2),
    4: linear}``, exits 5-6 ``branch_layer{5,6}.2`` (linear).
``mobilenetv2`` (CIFAR variant):
    ``layer1`` (stem conv), ``bn1`` (stem BN), blocks ``layer2``..``layer18``
    each ``{conv1, bn1, conv2 (depthwise), bn2, conv3, bn3}`` plus
    ``shortcut.{0: conv, 1: BN}`` where in != out at stride 1, ``layer19``
    (1x1 conv 320->1280), ``bn2`` (its BN), ``linear``; ``conv2`` is unused.
    Exit 1 ``branch_layer1.{0: block, 1: BN, 3: block, 4: BN, 7: linear}``,
    exit 2 ``branch_layer2.{0: block, 3: linear}``, exits 3-6
    ``branch_layer{k}.2`` (linear).

Layout conversions: conv (out, in, kh, kw) -> (kh, kw, in, out); depthwise
(C, 1, kh, kw) -> (kh, kw, C, 1); linear (out, in) -> (in, out), with the
input rows reordered from C,H,W to H,W,C when the linear reads a flattened
feature map (SmallCNN ``fc1`` and both exit heads' first linear).
"""

import pickle
import re
import warnings

import keras
import numpy as np

from rdinet_lite.errors import InputError
from rdinet_tf.models import multi_exit, registry

# Keras variable name -> PyTorch parameter/buffer name.
_TORCH_PARAM = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}

_INSTALL_HINT = 'reading PyTorch checkpoints needs torch: pip install "rdinet_tf[torch]"'


def reference_module_name(model_name, layer_name):
    """The reference PyTorch module name of our layer ``layer_name`` in model ``model_name``."""
    for pattern, replacement in registry.spec(model_name).checkpoint_layout.module_names:
        match = re.fullmatch(pattern, layer_name)
        if match:
            return match.expand(replacement)
    raise InputError(f"layer {layer_name!r} has no counterpart in the reference {model_name}")


def load_torch_checkpoint(path, model_name):
    """Build ``models.build(model_name)`` and load the reference PyTorch checkpoint at ``path``."""
    registry.spec(model_name)  # an unknown name is refused before torch is imported
    try:
        import torch
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*Check the documentation", str(error), re.DOTALL)
        detail = " ".join((found.group(1) if found else str(error)).split())[:120]
        raise InputError(f"{path} is not a state dict of tensors ({detail}); it is read with "
                         "torch.load(weights_only=True), which never runs code: a crafted, corrupt or non-PyTorch "
                         "file?") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
        message = " ".join(str(error).split())[:200]
        raise InputError(
            f"cannot read {path} as a PyTorch checkpoint (weights_only=True): {type(error).__name__}: {message}"
        ) from None
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise InputError(
            f"{path} holds a {type(checkpoint).__name__}, not a state dict or a dict with a "
            "'state_dict' entry"
        )
    arrays = {}
    for key, tensor in state_dict.items():
        if not isinstance(key, str):
            raise InputError(f"{path}: a state dict is keyed by parameter names; got the key {str(key)[:40]!r} "
                             f"({type(key).__name__})")
        if not isinstance(tensor, torch.Tensor):
            raise InputError(
                f"{path}: entry {key[:80]!r} is a {type(tensor).__name__}, not a tensor; pass a state "
                "dict or a dict with a 'state_dict' entry"
            )
        arrays[key.removeprefix("module.")] = _to_numpy(torch, tensor, path, key)
    model = multi_exit.build(model_name)
    load_state_dict(model, arrays, model_name)
    return model


def _to_numpy(torch, tensor, path, key):
    """A checkpoint tensor as a numpy array: sparse made dense, bfloat16/float16 widened to float32 (exact);
    complex and other non-real tensors refused."""
    tensor = tensor.detach().cpu()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.is_complex():
        raise InputError(f"{path}: tensor {key[:80]!r} is {tensor.dtype}: a weight is real; the checkpoint is "
                         "not a reference model's")
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as error:
        raise InputError(f"{path}: tensor {key[:80]!r} of dtype {tensor.dtype} cannot be read ({error})") from None


def load_state_dict(model, state_dict, model_name):
    """Set every weight of ``model`` from a reference state dict of numpy arrays (no prefix).

    Checks everything before setting anything: a bad state dict leaves ``model`` unchanged.
    """
    layout = registry.spec(model_name).checkpoint_layout
    remaining = dict(state_dict)
    assignments = []
    for segment in model.stages + model.heads:
        flattened = {id(layer.output): tuple(layer.input.shape[1:])
                     for layer in segment.layers if isinstance(layer, keras.layers.Flatten)}
        for layer in segment.layers:
            if not layer.weights:
                continue
            module = reference_module_name(model_name, layer.name)
            values = []
            for variable in layer.weights:
                torch_shape, convert = _torch_layout(layer, variable, flattened.get(id(layer.input)))
                key = f"{module}.{_TORCH_PARAM[variable.name]}"
                if key not in remaining:
                    raise InputError(
                        f"checkpoint has no tensor {key!r} (expected shape {torch_shape}) for "
                        f"layer {layer.name!r}; is it a reference {model_name} checkpoint?"
                    )
                tensor = np.asarray(remaining.pop(key))
                if tensor.dtype.kind not in "fiu":
                    raise InputError(f"checkpoint tensor {key!r} is {tensor.dtype}, not real numbers; is it a "
                                     f"reference {model_name} checkpoint?")
                if tensor.shape != torch_shape:
                    raise InputError(
                        f"checkpoint tensor {key!r} has shape {tensor.shape}, expected "
                        f"{torch_shape} for layer {layer.name!r} of {model_name}"
                    )
                if not np.isfinite(tensor).all():
                    raise InputError(f"checkpoint tensor {key!r} holds NaN or infinite values: the checkpoint "
                                     "is corrupt or from a diverged training; use another checkpoint")
                values.append(convert(tensor).astype(variable.dtype))
            remaining.pop(f"{module}.num_batches_tracked", None)
            assignments.append((layer, values))
    unexpected = [k for k in remaining if k not in layout.unused_tensors]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise InputError(
            f"checkpoint tensor {unexpected[0]!r} (shape {np.shape(remaining[unexpected[0]])})"
            f"{more} is not part of the reference {model_name}"
        )
    for layer, values in assignments:
        layer.set_weights(values)
    return model


def _torch_layout(layer, variable, flatten_shape):
    """(PyTorch shape, function PyTorch array -> Keras array) of one Keras variable."""
    shape = tuple(variable.shape)
    if variable.name not in _TORCH_PARAM:
        raise InputError(f"cannot import variable {variable.name!r} of layer {layer.name!r}")
    if variable.name != "kernel":
        return shape, lambda w: w
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, channels, multiplier = shape
        return ((channels * multiplier, 1, kh, kw),
                lambda w: w.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1))
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin, cout = shape
        return (cout, cin, kh, kw), lambda w: w.transpose(2, 3, 1, 0)
    if isinstance(layer, keras.layers.Dense):
        cin, cout = shape
        if flatten_shape is None:
            return (cout, cin), lambda w: w.T
        height, width, channels = flatten_shape
        return (cout, cin), lambda w: (w.reshape(cout, channels, height, width)
                                       .transpose(2, 3, 1, 0).reshape(cin, cout))
    raise InputError(f"cannot import weights into layer {layer.name!r} of type {type(layer).__name__}")
