"""The multi-exit network: a chain of stage sub-models with an exit head after each.

Exit k (0-based ``exit_index`` in code, named ``exit_{k+1}``) reads the feature
map left by stage k. The last exit is the backbone's own classifier. Because
the network is a chain of segments, code can run only the stages up to exit k
(:meth:`MultiExitModel.exit_logits`) and export each segment on its own.

At a mixed precision (``set_precision("mixed_bfloat16")`` or ``"mixed_float16"``
before building, :mod:`rdinet_tf.training.precision`) the layers compute in 16 bits and keep
float32 variables; every exit's logits leave the network in float32 (see
:func:`float32_logits`), so the losses, entropies, routing and attacks built on
them compute in float32.
"""

import keras

from rdinet_tf.architecture.folding import folded_segment
from rdinet_lite.errors import InputError
from rdinet_lite.inputs import check_images


def exit_name(exit_index):
    """Output name of the 0-based exit ``exit_index``: ``exit_1`` ... ``exit_K``."""
    return f"exit_{exit_index + 1}"


@keras.saving.register_keras_serializable(package="rdinet_tf")
class MultiExitNetwork(keras.Model):
    """A functional Keras model whose outputs are the logits of ``exit_1..exit_K``.

    The architecture alone; :class:`rdinet_tf.training.MultiExitModel` adds the
    adversarial ``train_step`` (what :func:`rdinet_tf.models.build` returns).

    Args:
        stages: K functional sub-models; stage k maps the output of stage k-1
            (stage 0 maps the image) to the feature map exit k reads.
        heads: K functional sub-models; head k maps stage k's output to logits
            (a head with 16-bit logits gets a float32 cast: :func:`float32_logits`).
        exit_policy: optional Keras-serializable exit policy (e.g.
            :class:`rdinet_tf.exits.policy.ExitPolicy`), saved and loaded with the model.
        dtype: the model's own precision, a Keras dtype policy (default: the global one), saved
            with it, so that a ``mixed_float16`` model compiles with loss scaling
            wherever it is loaded.
    """

    def __init__(self, stages, heads, exit_policy=None, dtype=None, **kwargs):
        if len(stages) != len(heads) or not stages:
            raise ValueError(
                f"a multi-exit model needs one head per stage; got {len(stages)} "
                f"stages and {len(heads)} heads"
            )
        heads = [float32_logits(head) for head in heads]
        image = keras.Input(shape=tuple(stages[0].inputs[0].shape[1:]), name="image")
        features, logits = image, []
        for stage, head in zip(stages, heads):
            features = stage(features)
            logits.append(head(features))
        super().__init__(inputs=image, outputs=logits, **kwargs)
        if dtype is not None:
            self.dtype_policy = dtype  # a functional model ignores the dtype argument
        self.stages = list(stages)
        self.heads = heads
        self.exit_policy = exit_policy

    @classmethod
    def from_network(cls, network):
        """This class over the stages, heads and policy of another network (weights shared)."""
        return cls(network.stages, network.heads, exit_policy=network.exit_policy, dtype=network.dtype_policy,
                   name=network.name)

    @property
    def num_exits(self):
        return len(self.heads)

    @property
    def image_shape(self):
        """Shape of one input image (H, W, C)."""
        return tuple(self.inputs[0].shape[1:])

    def exit_logits(self, images, exits=None, training=False):
        """Logits of the 0-based ``exits`` (default: all), running only the stages they need.

        ``exit_logits(x, [k])`` is the truncated forward to exit k: stages after k
        and the heads of other exits are not computed. In inference mode each conv
        + BatchNorm pair runs as one convolution and each chain of linear Dense
        layers as one Dense (:mod:`rdinet_tf.architecture.folding`).
        """
        exits = list(range(self.num_exits)) if exits is None else list(exits)
        if not exits or not all(0 <= k < self.num_exits for k in exits):
            raise InputError(
                f"exit indices {exits} are out of range: this model has exits "
                f"0..{self.num_exits - 1}"
            )
        stages, heads = (self.stages, self.heads) if training else self.inference_segments()
        features, logits = images, {}
        for k in range(max(exits) + 1):
            features = stages[k](features, training=training)
            if k in exits:
                logits[k] = heads[k](features, training=training)
        return [logits[k] for k in exits]

    def inference_segments(self):
        """``(stages, heads)`` in their folded inference form (:func:`folded_segment`), made once.

        Kept out of Keras's tracking: they hold no weights of their own and are not saved.
        """
        segments = self.__dict__.get("_folded_segments")
        if segments is None:
            segments = ([folded_segment(s) for s in self.stages], [folded_segment(h) for h in self.heads])
            object.__setattr__(self, "_folded_segments", segments)
        return segments

    @property
    def num_classes(self):
        return int(self.heads[-1].outputs[0].shape[-1])

    def check_images(self, images):
        """``images`` as float32 numpy of this model's batch shape, values in [0, 1]; else :class:`InputError`."""
        return check_images(images, self.image_shape, self.name)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "stages": [keras.saving.serialize_keras_object(s) for s in self.stages],
            "heads": [keras.saving.serialize_keras_object(h) for h in self.heads],
            "exit_policy": keras.saving.serialize_keras_object(self.exit_policy),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("stages", "heads"):
            config[key] = [
                keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
                for c in config[key]
            ]
        config["exit_policy"] = keras.saving.deserialize_keras_object(
            config.get("exit_policy"), custom_objects=custom_objects)
        config["dtype"] = keras.saving.deserialize_keras_object(config.get("dtype"))
        return cls(**config)


def float32_logits(head):
    """``head`` if its logits are float32, else the same head (same layers) ending in a float32 cast.

    Keras's advice for mixed precision: the model's outputs are float32, so a
    16-bit softmax never saturates and small loss gradients survive.
    """
    if head.outputs[0].dtype == "float32":
        return head
    logits = keras.layers.Activation("linear", dtype="float32", name="float32_logits")(head.outputs[0])
    return keras.Model(head.inputs, logits, name=head.name)


def chain(segment_builders, input_shape, name):
    """Build a :class:`MultiExitNetwork` from ``[(stage_fn, head_fn), ...]``.

    Each function maps a symbolic input tensor to its output tensor; stage k's
    input shape is stage k-1's output shape.
    """
    stages, heads = [], []
    shape = tuple(input_shape)
    for exit_index, (stage_fn, head_fn) in enumerate(segment_builders):
        stages.append(_segment(stage_fn, shape, f"stage_{exit_index + 1}"))
        shape = tuple(stages[-1].outputs[0].shape[1:])
        heads.append(_segment(head_fn, shape, exit_name(exit_index)))
    return MultiExitNetwork(stages, heads, name=name)


def _segment(build, input_shape, name):
    """A functional sub-model ``name`` made by ``build(input_tensor)``."""
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    return keras.Model(inputs, build(inputs), name=name)


def attach_exits(backbone, attach_layers, head_builder, final_head=None, name=None):
    """Cut a Keras functional ``backbone`` at ``attach_layers`` and add exit heads.

    Args:
        backbone: a functional model with one image input, e.g.
            ``keras.applications.MobileNetV2(weights=None, include_top=True)``.
        attach_layers: names of the layers after which a side exit is attached,
            in forward order. No tensor other than the layer's output may cross
            a cut (cut after a residual add, not inside a block).
        head_builder: ``f(feature_shape, exit_index) -> keras.Model`` building a
            side-exit head from the shape of the feature map it reads.
        final_head: name of the first layer of the backbone's own classifier
            (e.g. ``"global_average_pooling2d"``); the last stage ends before it
            and the final head runs from it to the backbone output. Default:
            the backbone's last layer alone.

    Returns:
        A :class:`MultiExitNetwork` sharing the backbone's layers and weights.
    """
    layer_names = [layer.name for layer in backbone.layers]
    final_head = final_head or layer_names[-1]
    cuts = list(attach_layers) + [None]
    for layer_name in list(attach_layers) + [final_head]:
        if layer_name not in layer_names:
            raise InputError(
                f"backbone {backbone.name!r} has no layer named {layer_name!r}; "
                "pass names from [layer.name for layer in backbone.layers]"
            )
    final_input = backbone.get_layer(final_head).input
    stage_ends = [backbone.get_layer(n).output for n in attach_layers] + [final_input]
    stages, heads = [], []
    stage_input = backbone.inputs[0]
    for exit_index, (cut, stage_output) in enumerate(zip(cuts, stage_ends)):
        stages.append(_sub_model(backbone, stage_input, stage_output, f"stage_{exit_index + 1}"))
        if cut is not None:
            head = head_builder(tuple(stage_output.shape[1:]), exit_index)
            heads.append(keras.Model(head.inputs, head.outputs, name=exit_name(exit_index)))
        stage_input = stage_output
    heads.append(_sub_model(backbone, final_input, backbone.outputs[0], exit_name(len(cuts) - 1)))
    return MultiExitNetwork(stages, heads, name=name or f"{backbone.name}_multi_exit")


def _sub_model(backbone, inputs, outputs, name):
    """The part of ``backbone`` between two tensors, as a model of its own."""
    try:
        return keras.Model(inputs, outputs, name=name)
    except ValueError as error:
        raise InputError(
            f"cannot cut backbone {backbone.name!r} into {name}: {error}. Attach "
            "exits only where a single tensor crosses the cut (after a block's "
            "residual add, not inside a block)."
        ) from error
