"""Walking the layers of functional Keras models with public Keras API only.

Used by cost accounting (MACs per layer), pruning (rebuilding a segment
layer by layer) and folding (finding conv + BatchNorm pairs and Dense chains and
rebuilding a segment around them). Each layer must be called once in the graph it belongs to,
as in every model of this package, so that ``layer.input`` and
``layer.output`` name its tensors.
"""

import keras

from rdinet_lite.errors import InputError


def flat_layers(model):
    """The layers of a functional ``model`` in graph order, nested models flattened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def output_positions(layer):
    """Spatial positions of ``layer``'s output (H * W for a feature map, 1 for a vector)."""
    shape = _tensor_of(layer, "output").shape
    positions = 1
    for size in shape[1:-1]:
        positions *= int(size)
    return positions


def replay(model, inputs, make_layer):
    """Call ``make_layer(layer)`` for each layer of ``model`` along its graph, starting from ``inputs``.

    Rebuilds the functional ``model`` out of other layers (e.g. a twin in
    another Keras); nested models are replayed layer by layer. Returns the
    tensor standing for ``model``'s output.
    """
    tensors = {id(model.inputs[0]): inputs}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        arguments = keras.tree.map_structure(lambda tensor: tensors[id(tensor)], _tensor_of(layer, "input"))
        if isinstance(layer, keras.Model):
            output = replay(layer, arguments, make_layer)
        else:
            output = make_layer(layer)(arguments)
        tensors[id(_tensor_of(layer, "output"))] = output
    return tensors[id(model.outputs[0])]


def _tensor_of(layer, which):
    try:
        return getattr(layer, which)
    except (AttributeError, ValueError) as error:
        raise InputError(
            f"layer {layer.name!r} has no single {which} tensor ({error}); every layer of a "
            "segment must be called exactly once in its graph (share weights by building "
            "a new layer)"
        ) from error
