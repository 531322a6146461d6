import keras
import numpy as np
import pytest

from rdinet_tf import architecture, data, models, training
from rdinet_tf.architecture import flops
from rdinet_lite.accounting import expected_cost
from rdinet_tf.architecture.resnet import exit_blocks
from rdinet_lite.errors import InputError

# Spec section 3 (paper convention) and section 4 (trainable parameters).
PAPER_COSTS = {
    "smallcnn": [0.818, 7.006, 9.256],
    "resnet38": [16.797, 30.297, 36.547, 50.047, 61.422, 74.922, 79.422],
    "mobilenetv2": [7.941, 22.906, 30.125, 36.547, 51.160, 67.906, 86.920],
}
TRAINABLE_PARAMS = {"smallcnn": 836_846, "resnet38": 692_310, "mobilenetv2": 2_343_798}


@pytest.fixture(scope="module", params=sorted(PAPER_COSTS))
def reference_model(request):
    return request.param, models.build(request.param)


def test_paper_flops_table(reference_model):
    name, model = reference_model
    np.testing.assert_allclose(flops.exit_costs(model, "paper"), PAPER_COSTS[name], atol=1e-3)


def test_trainable_parameter_count(reference_model):
    name, model = reference_model
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert count == TRAINABLE_PARAMS[name]


def test_outputs_are_named_exits(reference_model):
    name, model = reference_model
    k = len(PAPER_COSTS[name])
    assert model.output_names == [f"exit_{i}" for i in range(1, k + 1)]
    assert [tuple(o.shape) for o in model.outputs] == [(None, 10)] * k
    assert model.num_exits == len(model.stages) == len(model.heads) == k


def test_honest_costs_add_rejected_heads_and_dense_layers(smallcnn):
    stages, heads = flops.segment_macs(smallcnn)
    honest = flops.exit_costs(smallcnn)
    # exit 2 = conv1 + conv2 + conv3 + the whole head 1 (conv + dense) + head 2 (dense).
    conv_backbone = 32 * 9 * 26 * 26 + 32 * 32 * 9 * 24 * 24 + 32 * 64 * 9 * 10 * 10
    head1 = 32 * 16 * 9 * 12 * 12 + 576 * 200 + 200 * 200 + 200 * 10
    head2 = 1600 * 200 + 200 * 200 + 200 * 10
    assert honest[1] == pytest.approx((conv_backbone + head1 + head2) / 1e6)
    assert np.all(np.diff(honest) > 0)
    assert heads[0].dense == 576 * 200 + 200 * 200 + 200 * 10


def test_expected_cost_of_a_distribution(smallcnn):
    costs = [1.0, 4.0, 10.0]
    assert expected_cost(costs, [2, 1, 1]) == pytest.approx(4.0)
    assert expected_cost(costs, [0.0, 0.0, 1.0]) == pytest.approx(10.0)
    with pytest.raises(InputError, match="3 non-negative"):
        expected_cost(costs, [1, 1])
    with pytest.raises(InputError, match="convention"):
        flops.exit_costs(smallcnn, "gflops")


def test_truncated_forward_matches_full_model(smallcnn, resnet38, mnist_like, cifar_like):
    for model, images in ((smallcnn, mnist_like[:8]), (resnet38, cifar_like)):
        full = model(images, training=False)
        for k in range(model.num_exits):  # BatchNorm folded into the convs rounds differently
            np.testing.assert_allclose(model.exit_logits(images, [k])[0], full[k], rtol=1e-5, atol=1e-4)
        prefix = model.exit_logits(images, range(3))
        for k in range(3):
            np.testing.assert_allclose(prefix[k], full[k], atol=1e-5)


def test_truncated_forward_runs_only_needed_stages(resnet38, cifar_like):
    calls = []
    original = resnet38.stages[3].call
    resnet38.stages[3].call = lambda *a, **kw: calls.append(1) or original(*a, **kw)
    try:
        resnet38.exit_logits(cifar_like, [2])
    finally:
        del resnet38.stages[3].call
    assert calls == []


def test_resnet_family_by_depth():
    assert exit_blocks(6) == [1, 4]
    model = models.cifar_resnet(20)  # n = 3: exits after blocks 0 and 2 of each group
    assert exit_blocks(3) == [0, 2]
    assert model.num_exits == 7
    with pytest.raises(InputError, match="6n\\+2"):
        models.cifar_resnet(21)


def test_unknown_model_name():
    with pytest.raises(InputError, match="smallcnn"):
        models.build("vgg16")
    with pytest.raises(InputError, match="unknown model 'vgg16'"):
        models.spec("vgg16")


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_each_registered_model_builds_for_its_dataset(name):
    """A spec's builder, input shape and dataset agree, and its recipes are the paper's and the fast kind."""
    spec = models.MODELS[name]
    assert spec.name == name and data.DATASETS[spec.dataset][0] == spec.input_shape
    assert models.build(name).image_shape == spec.input_shape
    assert isinstance(spec.paper_recipe, training.PaperRecipe) and isinstance(spec.fast_recipe, training.FastRecipe)


def test_the_command_lines_offer_the_registered_models():
    from rdinet_tf.cli import evaluate, import_torch, train

    commands = ((train.parser(), ["--model"]),
                (evaluate.parser(), ["--model", "m.keras", "--dataset", "mnist", "--model-name"]),
                (import_torch.parser(), ["--checkpoint", "c.pth", "--out", "m.keras", "--model"]))
    for parser, argv in commands:
        for name in models.MODELS:
            parser.parse_args([*argv, name])
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "vgg16"])


def test_wrong_image_shape_is_named(smallcnn):
    with pytest.raises(InputError, match=r"\(N, 28, 28, 1\).*\(4, 32, 32, 3\)"):
        smallcnn.check_images(np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(InputError, match="exit indices \\[5\\]"):
        smallcnn.exit_logits(np.zeros((1, 28, 28, 1), np.float32), [5])


def test_check_images_refuses_values_and_dtypes_and_returns_float32(smallcnn):
    images = np.random.default_rng(0).random((2, 28, 28, 1))
    checked = smallcnn.check_images(images)
    assert checked.dtype == np.float32 and checked.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(checked, images, rtol=1e-6)
    for bad, message in ((images * 255, r"\[0, 1\]"), (np.full_like(images, np.nan), "NaN"),
                         ((images * 255).astype(np.uint8), "float32"), (images - 1, r"\[0, 1\]")):
        with pytest.raises(InputError, match=message):
            smallcnn.check_images(bad)


def test_architecture_is_the_network_and_models_make_it_trainable(mnist_like):
    network = architecture.smallcnn()
    assert type(network) is architecture.MultiExitNetwork and network.num_classes == 10
    model = models.MultiExitModel.from_network(network)
    assert isinstance(model, architecture.MultiExitNetwork) and model.stages[0] is network.stages[0]
    np.testing.assert_allclose(model(mnist_like[:4])[-1], network(mnist_like[:4])[-1], atol=1e-6)
    assert models.MODELS["smallcnn"].input_shape == (28, 28, 1) == models.build("smallcnn").image_shape


def test_attach_exits_to_keras_application(tmp_path):
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), weights=None, alpha=0.35, classes=10)

    def head(shape, exit_index):
        inputs = keras.Input(shape)
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(10)(x))

    model = models.attach_exits(backbone, ["block_2_add", "block_5_add"], head,
                                final_head="global_average_pooling2d")
    assert model.output_names == ["exit_1", "exit_2", "exit_3"]
    images = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(model(images)[-1], backbone(images), atol=1e-5)
    assert flops.exit_costs(model)[-1] > flops.exit_costs(model)[0] > 0
    path = tmp_path / "attached.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored(images)[1], model(images)[1], atol=1e-6)
    with pytest.raises(InputError, match="no layer named"):
        models.attach_exits(backbone, ["nope"], head)
    with pytest.raises(InputError, match="single tensor crosses"):
        models.attach_exits(backbone, ["block_2_expand"], head)


@pytest.mark.parametrize("name", ["smallcnn", "resnet38"])
def test_initial_weights_follow_the_seed_and_differ_between_layers(name):
    def initial(seed):
        keras.utils.set_random_seed(seed)
        return [np.asarray(w) for w in models.build(name).get_weights()]

    first, again, other = initial(0), initial(0), initial(1)
    kernels = [i for i, w in enumerate(first) if w.ndim >= 2 and w.std() > 0]
    assert all(np.array_equal(first[i], again[i]) for i in kernels)
    assert not any(np.array_equal(first[i], other[i]) for i in kernels)
    by_shape = {}
    for i in kernels:
        by_shape.setdefault(first[i].shape, []).append(first[i])
    assert not any(np.array_equal(a, b) for same in by_shape.values() for a, b in zip(same, same[1:]))
