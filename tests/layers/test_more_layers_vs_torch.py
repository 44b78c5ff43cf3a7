"""1-D pools, PReLU and the other remaining activations, the distance modules, ParameterList/ParameterDict,
``Sequential(OrderedDict)`` and ``nn.Transformer`` against their ``torch.nn`` twins with copied weights: outputs,
parameter and input gradients (f32 at rtol 1e-5, f64 at rtol 1e-10), ``state_dict`` keys, a compiled training step,
ONNX export, and the refusals."""

from __future__ import annotations

import inspect
from collections import OrderedDict

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from layer_parity import as_dtype, assert_layer_matches_torch, normal, randomize, sgd_losses_in_lockstep, tolerances
from oracles import require

DTYPES = ["float32", "float64"]


def distinct(*shape, dtype="float32", seed=0):
    """Distinct values, so each pooling window has one largest element (PyTorch and kiln route its gradient alike)."""
    return (np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0).astype(dtype)


def copy_weights(torch, source, target):
    target.load_state_dict({k: torch.tensor(np.array(v)) for k, v in source.state_dict().items()})


def match(torch, build, arrays, dtype, **options):
    """Build the layer in kiln and in PyTorch (``build(library.nn)``), then compare them on ``arrays``."""
    module, reference = build(nn), as_dtype(build(torch.nn), dtype)
    if dtype == "float64":
        module.double()
    randomize(module)
    assert list(module.state_dict()) == list(reference.state_dict())
    assert_layer_matches_torch(torch, module, reference, arrays, **tolerances(dtype), **options)


# 1-D pooling ----------------------------------------------------------------------------------

MAX_POOLS = {
    "kernel": dict(kernel_size=2),
    "stride_padding": dict(kernel_size=3, stride=2, padding=1),
    "tuples": dict(kernel_size=(3,), stride=(2,), padding=(1,)),
    "ceil": dict(kernel_size=2, stride=2, ceil_mode=True),
    "ceil_padding": dict(kernel_size=4, stride=2, padding=1, ceil_mode=True),
    "ceil_dropped_window": dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),  # the last would start in the padding
    "dilation": dict(kernel_size=3, dilation=2, padding=1),
    "dilation_ceil": dict(kernel_size=2, dilation=3, stride=2, padding=1, ceil_mode=True),
}
AVG_POOLS = {
    "kernel": dict(kernel_size=3),
    "stride_padding": dict(kernel_size=3, stride=2, padding=1),
    "exclude_pad": dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "ceil": dict(kernel_size=2, stride=2, ceil_mode=True),
    "ceil_padding": dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    "ceil_exclude_pad": dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False),
    "ceil_dropped_window": dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),
}
LAYOUTS = {"NCL": (2, 3, 11), "unbatched": (3, 11)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", sorted(MAX_POOLS))
def test_max_pool1d_matches_torch(case, layout, dtype):
    torch = require("torch")
    match(torch, lambda n: n.MaxPool1d(**MAX_POOLS[case]), [distinct(*LAYOUTS[layout], dtype=dtype)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", sorted(AVG_POOLS))
def test_avg_pool1d_matches_torch(case, layout, dtype):
    torch = require("torch")
    match(torch, lambda n: n.AvgPool1d(**AVG_POOLS[case]), [normal(*LAYOUTS[layout], dtype=dtype)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 4, 5, 7, 12, 15])  # whole, tiling, uneven, overlapping, identity, larger
@pytest.mark.parametrize("kind", ["AdaptiveAvgPool1d", "AdaptiveMaxPool1d"])
def test_adaptive_pool1d_matches_torch(kind, size, dtype):
    torch = require("torch")
    for shape in [(2, 3, 12), (3, 12)]:
        match(torch, lambda n: getattr(n, kind)(size), [distinct(*shape, dtype=dtype)], dtype)


def test_ceil_mode_cases_keep_a_partial_last_window():
    """Each ``ceil_mode`` case above but one gives a longer output than floor mode; that one drops a window that
    would start in the right padding."""
    torch = require("torch")
    x = torch.zeros(LAYOUTS["NCL"])
    for name, options in [*MAX_POOLS.items(), *AVG_POOLS.items()]:
        if options.get("ceil_mode"):
            pool = torch.nn.functional.max_pool1d if "dilation" in options else torch.nn.functional.avg_pool1d
            options = {key: value for key, value in options.items() if key != "count_include_pad"}
            lengths = [pool(x, **{**options, "ceil_mode": ceil}).shape[-1] for ceil in (False, True)]
            assert (lengths[0] == lengths[1]) == (name == "ceil_dropped_window"), (name, lengths)


def test_functional_pools_take_torchs_arguments():
    torch = require("torch")
    x = distinct(2, 3, 10, dtype="float64")
    calls = [
        lambda f, t: f.max_pool1d(t, 3, 2, 1, 1, True),
        lambda f, t: f.max_pool1d(t, kernel_size=2, dilation=2),
        lambda f, t: f.avg_pool1d(t, 3, 2, 1, True, False),
        lambda f, t: f.adaptive_avg_pool1d(t, 3),
        lambda f, t: f.adaptive_max_pool1d(t, 3),
    ]
    for call in calls:
        assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), [x], call=lambda m, t: call(F, t),
                                   torch_call=lambda m, t: call(torch.nn.functional, t), rtol=1e-10, atol=1e-12)


def test_pool_reprs_and_attributes_follow_torch():
    torch = require("torch")
    for build in [lambda n: n.MaxPool1d(3, padding=1, ceil_mode=True), lambda n: n.AvgPool1d(3, 2, 1), lambda n: n.AdaptiveAvgPool1d(4),
                  lambda n: n.AdaptiveMaxPool1d(4)]:
        assert repr(build(nn)) == repr(build(torch.nn))


def test_pools_refuse_what_they_cannot_do():
    spec = kiln.TensorSpec(("N", 3, 8))
    cases = [
        (nn.MaxPool1d(2), kiln.TensorSpec(("N", 3, 8, 8)), r"\(N, C, L\)"),
        (nn.AvgPool1d(2), kiln.TensorSpec((8,)), r"\(N, C, L\)"),
        (nn.AdaptiveAvgPool1d(2), kiln.TensorSpec(("N", 3, "L")), "static length"),
        (nn.MaxPool1d(2, padding=2), spec, "at most half"),
        (nn.AvgPool1d(3, padding=2), spec, "at most half"),
        (nn.MaxPool1d(9), spec, "does not fit"),
        (nn.MaxPool1d((2, 2)), spec, "1-tuple"),
        (nn.AdaptiveMaxPool1d(0), spec, "positive"),
        (nn.AvgPool1d(2), kiln.TensorSpec(("N", 3, 8), "int64"), "floating-point"),
    ]
    for module, input_spec, message in cases:
        with pytest.raises(kiln.TraceError, match=message):
            kiln.trace(module, input_spec)


# Activations ----------------------------------------------------------------------------------

ACTIVATIONS = {
    "PReLU": (lambda n: n.PReLU(), (2, 3, 4)),
    "PReLU_channels": (lambda n: n.PReLU(3), (2, 3, 4)),
    "PReLU_channels_NC": (lambda n: n.PReLU(3, init=0.1), (5, 3)),
    "PReLU_channels_NCHW": (lambda n: n.PReLU(3), (2, 3, 2, 2)),
    "PReLU_vector": (lambda n: n.PReLU(), (7,)),
    "Softmin": (lambda n: n.Softmin(dim=1), (2, 3, 4)),
    "Softmax2d": (lambda n: n.Softmax2d(), (2, 3, 2, 2)),
    "Softmax2d_unbatched": (lambda n: n.Softmax2d(), (3, 2, 4)),
    "Threshold": (lambda n: n.Threshold(0.5, 20.0), (4, 6)),
    "Tanhshrink": (lambda n: n.Tanhshrink(), (4, 6)),
    "Softshrink": (lambda n: n.Softshrink(), (4, 6)),
    "Softshrink_1": (lambda n: n.Softshrink(1.0), (4, 6)),
    "Hardshrink": (lambda n: n.Hardshrink(), (4, 6)),
    "Hardshrink_1": (lambda n: n.Hardshrink(1.0), (4, 6)),
    "RReLU_eval": (lambda n: n.RReLU().eval(), (4, 6)),
    "RReLU_bounds_eval": (lambda n: n.RReLU(0.1, 0.5).eval(), (4, 6)),
}


def with_kinks(shape, dtype):
    """Normal values, and the kink points 0, +-0.5, +-1 among them: the gradients there follow PyTorch's choice."""
    x = normal(*shape, dtype=dtype, seed=3) * 2
    flat = x.reshape(-1)
    flat[: 5] = [0.0, 0.5, -0.5, 1.0, -1.0][: flat.size]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(ACTIVATIONS))
def test_activation_matches_torch(case, dtype):
    torch = require("torch")
    build, shape = ACTIVATIONS[case]
    match(torch, build, [with_kinks(shape, dtype)], dtype)
    assert repr(build(nn)) == repr(build(torch.nn))


def test_prelu_starts_at_init_and_functional_prelu_takes_a_scalar_weight():
    torch = require("torch")
    assert nn.PReLU(4, init=0.3).weight.data.tolist() == torch.nn.PReLU(4, init=0.3).weight.tolist()
    x, weight = with_kinks((2, 3, 4), "float64"), np.array([0.2, -0.4, 1.5])
    holder = type("Holder", (nn.Module,), {})()
    holder.weight = nn.Parameter(weight)
    reference = torch.nn.Module()
    reference.weight = torch.nn.Parameter(torch.tensor(weight))
    assert_layer_matches_torch(torch, holder, reference, [x], call=lambda m, t: F.prelu(t, m.weight),
                               torch_call=lambda m, t: torch.nn.functional.prelu(t, m.weight), rtol=1e-10, atol=1e-12)
    output = kiln.compile(lambda t: F.prelu(t, nn.Parameter(np.array(0.25))))(x)
    np.testing.assert_allclose(output, torch.nn.functional.prelu(torch.tensor(x), torch.tensor(0.25, dtype=torch.float64)).numpy())


def test_functional_activations_take_torchs_arguments():
    torch = require("torch")
    x = with_kinks((3, 5), "float64")
    calls = [
        lambda f, t: f.softmin(t, 0), lambda f, t: f.softmin(t, dim=-1), lambda f, t: f.threshold(t, -0.5, 3.0),
        lambda f, t: f.tanhshrink(t), lambda f, t: f.softshrink(t, 1.0), lambda f, t: f.hardshrink(t, lambd=0.5),
        lambda f, t: f.rrelu(t, 0.2, 0.4), lambda f, t: f.rrelu(t, training=False),
    ]
    for call in calls:
        assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), [x], call=lambda m, t: call(F, t),
                                   torch_call=lambda m, t: call(torch.nn.functional, t), rtol=1e-10, atol=1e-12)


def test_rrelu_in_training_draws_a_slope_per_negative_element_from_the_seed():
    x = np.linspace(-4, 4, 2000).reshape(40, 50)
    x[0, 0] = 0.0
    run = NumpyBackend().compile(kiln.trace(nn.RReLU(0.1, 0.3), kiln.TensorSpec(x.shape, "float64")))
    (first,), (again,), (other,) = run(x, np.int64(5)), run(x, np.int64(5)), run(x, np.int64(6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    positive, negative = x > 0, x < 0
    np.testing.assert_array_equal(first[positive], x[positive])
    slopes = first[negative] / x[negative]
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3 and 0.18 < slopes.mean() < 0.22 and slopes.std() > 0.04
    assert len(np.unique(slopes)) > 0.9 * slopes.size, "one slope per element"


def test_rrelu_trains_in_a_compiled_step():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.RReLU(), nn.Linear(8, 2))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.0), seed=1)
    x, y = normal(16, 4), np.arange(16) % 2
    losses = [float(step(x, y)) for _ in range(3)]
    assert len(set(losses)) == 3, "lr=0: only fresh slopes per step change the loss"


def test_activations_refuse_bad_arguments():
    with pytest.raises(kiln.TraceError, match="3 parameters but .* 4 channels"):
        kiln.trace(nn.PReLU(3), kiln.TensorSpec(("N", 4, 5)))
    with pytest.raises(kiln.TraceError, match="3 parameters but .* 1 channels"):
        kiln.trace(nn.PReLU(3), kiln.TensorSpec((3,)))
    with pytest.raises(ValueError, match="num_parameters"):
        nn.PReLU(0)
    with pytest.raises(ValueError, match="needs dim"):
        nn.Softmin()
    with pytest.raises(kiln.TraceError, match="needs dim"):
        kiln.trace(lambda t: F.softmin(t), kiln.TensorSpec((2, 3)))
    with pytest.raises(kiln.TraceError, match="Softmax2d expects"):
        kiln.trace(nn.Softmax2d(), kiln.TensorSpec((2, 3)))
    with pytest.raises(kiln.TraceError, match="lambd must be at least 0"):
        kiln.trace(nn.Softshrink(-1.0), kiln.TensorSpec((2, 3)))
    with pytest.raises(ValueError, match="must not exceed"):
        nn.RReLU(0.5, 0.1)
    with pytest.raises(kiln.TraceError, match="must not exceed"):
        kiln.trace(lambda t: F.rrelu(t, 0.5, 0.1), kiln.TensorSpec((2, 3)))


# Distances ------------------------------------------------------------------------------------

DISTANCES = {
    "CosineSimilarity": (lambda n: n.CosineSimilarity(), [(4, 5, 3), (4, 5, 3)]),
    "CosineSimilarity_last_broadcast": (lambda n: n.CosineSimilarity(dim=-1, eps=1e-6), [(4, 5, 3), (5, 3)]),
    "PairwiseDistance": (lambda n: n.PairwiseDistance(), [(6, 4), (6, 4)]),
    "PairwiseDistance_p1_keepdim": (lambda n: n.PairwiseDistance(p=1.0, eps=1e-3, keepdim=True), [(6, 4), (6, 4)]),
    "PairwiseDistance_p3_vector": (lambda n: n.PairwiseDistance(p=3.0), [(5,), (5,)]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(DISTANCES))
def test_distance_module_matches_torch(case, dtype):
    torch = require("torch")
    build, shapes = DISTANCES[case]
    match(torch, build, [normal(*shape, dtype=dtype, seed=i) for i, shape in enumerate(shapes)], dtype)


# Containers -----------------------------------------------------------------------------------


def gains_and_shifts(library, dtype):
    """The same model in kiln and PyTorch: per-feature gains in a ParameterList, a shift and a scale in a ParameterDict."""
    n = library.nn

    def parameter(*shape):
        array = np.ones(shape, dtype)
        return n.Parameter(library.tensor(array)) if library.__name__ == "torch" else n.Parameter(array)

    class Model(n.Module):
        def __init__(self):
            super().__init__()
            self.gains = n.ParameterList([parameter(4), parameter(4)])
            self.gains.append(parameter(1))
            self.affine = n.ParameterDict({"shift": parameter(4)})
            self.affine.update([("scale", parameter(1))])
            self.linear = n.Linear(4, 2)

        def forward(self, x):
            for gain in self.gains:
                x = (x * gain).tanh()
            return self.linear(x * self.affine["scale"] + self.affine["shift"])

    model = Model()
    return model.double() if dtype == "float64" else model


@pytest.mark.parametrize("dtype", DTYPES)
def test_parameter_containers_match_torch_keys_and_gradients(dtype):
    torch = require("torch")
    model, reference = randomize(gains_and_shifts(kiln, dtype)), gains_and_shifts(torch, dtype)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert "gains.2" in model.state_dict() and "affine.scale" in model.state_dict()
    assert_layer_matches_torch(torch, model, reference, [normal(3, 4, dtype=dtype)], **tolerances(dtype))


def test_parameter_list_behaves_as_a_list():
    torch = require("torch")
    first, second = nn.Parameter(np.zeros(2)), nn.Parameter(np.ones(3))
    params = nn.ParameterList([first])
    params += [second]
    params.extend([np.full(4, 2.0, np.float32), torch.ones(5)])
    assert len(params) == 4 and params[0] is first and params[-3] is second
    assert isinstance(params[2], nn.Parameter) and params[3].shape == (5,) and params[3].requires_grad
    assert list(params[1:3]) == [params[1], params[2]] and isinstance(params[1:3], nn.ParameterList)
    params[0] = np.arange(3.0)
    assert params[0] is not first and params[0].data.tolist() == [0.0, 1.0, 2.0]
    assert [name for name, _ in params.named_parameters()] == ["0", "1", "2", "3"]
    with pytest.raises(IndexError, match="out of range"):
        params[4]
    with pytest.raises(TypeError, match="Parameters or numeric arrays"):
        params.append("weight")
    assert repr(nn.ParameterList()) == "ParameterList()"


def test_parameter_dict_behaves_as_a_dict():
    params = nn.ParameterDict(OrderedDict(b=np.zeros(2), a=np.ones(3)))
    params["c"] = nn.Parameter(np.ones(1))
    assert list(params) == ["b", "a", "c"] and list(params.keys()) == ["b", "a", "c"] and "a" in params and len(params) == 3
    assert params.get("missing") is None and params.setdefault("d", np.zeros(1)) is params["d"]
    popped = params.pop("b")
    assert popped.shape == (2,) and "b" not in params and list(params.state_dict()) == ["a", "c", "d"]
    del params["a"]
    assert [key for key, _ in params.items()] == ["c", "d"]
    for bad in ["", "a.b", 3, "training", "forward"]:
        with pytest.raises(KeyError):
            params[bad] = np.zeros(1)
    params.clear()
    assert len(params) == 0 and list(params.state_dict()) == []


def test_sequential_takes_an_ordered_dict_of_named_layers_as_torch():
    torch = require("torch")

    def build(n):
        return n.Sequential(OrderedDict([("conv", n.Conv1d(2, 4, 3)), ("act", n.PReLU(4)), ("pool", n.AdaptiveAvgPool1d(2)),
                                         ("flat", n.Flatten()), ("head", n.Linear(8, 3))]))

    model, reference = build(nn), build(torch.nn)
    assert list(model.state_dict()) == list(reference.state_dict()) == [
        "conv.weight", "conv.bias", "act.weight", "head.weight", "head.bias"]
    assert isinstance(model[1], nn.PReLU) and len(model) == 5 and model.head is model[4]
    assert_layer_matches_torch(torch, model, reference, [normal(3, 2, 7)])
    keras = nn.Sequential([nn.Linear(3, 4), nn.ReLU()])  # the list form and Keras's add still number the layers
    keras.add(nn.Linear(4, 2))
    assert list(keras.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


# Transformer ----------------------------------------------------------------------------------


def test_transformer_defaults_signature_and_state_dict_equal_torchs():
    torch = require("torch")
    ours, theirs = inspect.signature(nn.Transformer), inspect.signature(torch.nn.Transformer)
    shared = [name for name in theirs.parameters if name not in ("device", "dtype")]
    assert [name for name in ours.parameters if name not in ("device", "dtype")] == shared
    for name in shared:
        if name != "activation":  # PyTorch's default is its F.relu, kiln's the name "relu"
            assert ours.parameters[name].default == theirs.parameters[name].default, name
    model, reference = nn.Transformer(), torch.nn.Transformer()
    state, expected = model.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    assert all(state[key].shape == tuple(value.shape) for key, value in expected.items())
    weight = state["encoder.layers.0.linear1.weight"]  # Xavier-uniform, as PyTorch's _reset_parameters
    bound = np.sqrt(6 / (512 + 2048))
    assert abs(weight).max() <= bound and abs(weight).max() > 0.95 * bound
    assert list(inspect.signature(nn.Transformer.forward).parameters)[1:] == list(inspect.signature(reference.forward).parameters)


def test_generate_square_subsequent_mask_equals_torchs():
    torch = require("torch")
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    expected = torch.nn.Transformer.generate_square_subsequent_mask(5)
    np.testing.assert_array_equal(mask, expected.numpy())
    assert np.asarray(mask).dtype == np.float32 and mask.size(0) == 5  # a tensor, as torch's
    assert np.asarray(nn.Transformer.generate_square_subsequent_mask(3, dtype="float64")).dtype == np.float64


TRANSFORMERS = {
    "sequence_first": dict(),
    "batch_first_pre_norm_gelu": dict(batch_first=True, norm_first=True, activation="gelu"),
    "no_bias": dict(bias=False, layer_norm_eps=1e-3),
}


def small_transformer(library, dropout=0.0, **options):
    return library.nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=12,
                                  dropout=dropout, **options)


def transformer_inputs(batch_first, dtype="float64"):
    """``src`` (S=5), ``tgt`` (T=4) and key padding masks (True = padding) that leave every query a key to attend."""
    src, tgt = normal(5, 2, 8, dtype=dtype, seed=4), normal(4, 2, 8, dtype=dtype, seed=5)
    if batch_first:
        src, tgt = src.transpose(1, 0, 2).copy(), tgt.transpose(1, 0, 2).copy()
    src_padding = np.array([[False] * 5, [False] * 3 + [True] * 2])
    tgt_padding = np.array([[False] * 4, [False] * 3 + [True]])
    return [src, tgt, src_padding, tgt_padding]


def transformer_call(library):
    """The forward with a causal ``tgt_mask`` from ``generate_square_subsequent_mask`` (a float mask of 0 and -inf)
    and all three key padding masks."""
    causal = library.nn.Transformer.generate_square_subsequent_mask(4)

    def call(model, src, tgt, src_padding, tgt_padding):
        return model(src, tgt, tgt_mask=causal if library is kiln else causal.to(src.dtype), src_key_padding_mask=src_padding,
                     tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding)

    return call


@pytest.mark.parametrize("case", sorted(TRANSFORMERS))
def test_transformer_matches_torch_with_masks(case):
    torch = require("torch")
    options = TRANSFORMERS[case]
    model, reference = small_transformer(kiln, **options).double(), small_transformer(torch, **options).double()
    randomize(model)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert_layer_matches_torch(torch, model, reference, transformer_inputs(options.get("batch_first", False)),
                               call=transformer_call(kiln), torch_call=transformer_call(torch), rtol=1e-10, atol=1e-12)


def test_transformer_in_eval_mode_matches_torch_despite_dropout():
    torch = require("torch")
    model, reference = small_transformer(kiln, dropout=0.3).double().eval(), small_transformer(torch, dropout=0.3).double().eval()
    randomize(model)
    assert_layer_matches_torch(torch, model, reference, transformer_inputs(False), call=transformer_call(kiln),
                               torch_call=transformer_call(torch), rtol=1e-10, atol=1e-12)


def test_transformer_loads_torchs_weights_and_reads_a_traced_float_mask():
    torch = require("torch")
    reference = small_transformer(torch, batch_first=True).double()
    model = small_transformer(kiln, batch_first=True).double()
    model.load_state_dict(reference.state_dict())
    src, tgt = normal(2, 5, 8, dtype="float64", seed=6), normal(2, 4, 8, dtype="float64", seed=7)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    expected = reference(torch.tensor(src), torch.tensor(tgt), tgt_mask=causal).detach().numpy()
    forward = kiln.compile(lambda s, t, mask: model(s, t, tgt_mask=mask), batch_dim=None)
    np.testing.assert_allclose(forward(src, tgt, causal.numpy()), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kiln.compile(lambda s, t: model(s, t, tgt_is_causal=True))(src, tgt), expected, rtol=1e-10, atol=1e-12)


def test_transformer_refuses_bad_inputs_and_masks():
    model = small_transformer(kiln)
    src, tgt = kiln.TensorSpec((5, 2, 8)), kiln.TensorSpec((4, 2, 8))
    with pytest.raises(kiln.TraceError, match="unbatched"):  # one batched, one not (both unbatched is torch's too)
        kiln.trace(model, kiln.TensorSpec((5, 8)), kiln.TensorSpec((4, 2, 8)))
    with pytest.raises(kiln.TraceError, match="batch sizes"):
        kiln.trace(model, src, kiln.TensorSpec((4, 3, 8)))
    with pytest.raises(kiln.TraceError, match="d_model=8"):
        kiln.trace(model, kiln.TensorSpec((5, 2, 6)), kiln.TensorSpec((4, 2, 6)))
    additive = np.triu(np.full((4, 4), -1.0), 1)
    with pytest.raises(kiln.TraceError, match="other than 0 and -inf"):
        kiln.trace(lambda s, t: model(s, t, tgt_mask=additive), src, tgt)
    with pytest.raises(kiln.TraceError, match="bool or float mask"):
        kiln.trace(lambda s, t: model(s, t, tgt_mask=np.triu(np.ones((4, 4), np.int64), 1)), src, tgt)


# Training and export --------------------------------------------------------------------------


def pooled_net(library):
    """The same model in kiln and PyTorch, named through an OrderedDict, with the new pools, shrinks and PReLU."""
    n = library.nn
    return n.Sequential(OrderedDict([
        ("conv", n.Conv1d(2, 6, 3, padding=1)), ("prelu", n.PReLU(6)), ("max", n.MaxPool1d(3, 2, padding=1, ceil_mode=True)),
        ("avg", n.AvgPool1d(3, 1, padding=1, count_include_pad=False)), ("shrink", n.Softshrink(0.05)),
        ("adaptive", n.AdaptiveMaxPool1d(3)), ("flat", n.Flatten()), ("hidden", n.Linear(18, 10)), ("tanhshrink", n.Tanhshrink()),
        ("threshold", n.Threshold(-0.2, -0.2)), ("head", n.Linear(10, 3)),
    ]))


def test_compiled_training_step_with_the_new_layers_matches_torch():
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = pooled_net(kiln), pooled_net(torch)
    x, y = normal(8, 2, 10, seed=3), np.random.default_rng(3).integers(0, 3, 8)  # max pool: a partial last window
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.2, steps=6)
    assert losses[-1] < losses[0], losses
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_model_with_1d_pools_and_prelu_exports_to_onnx_and_matches_onnxruntime(tmp_path):
    onnx, ort, torch = require("onnx"), require("onnxruntime"), require("torch")

    def build(n):
        return n.Sequential(n.Conv1d(2, 4, 3), n.PReLU(4), n.MaxPool1d(2, ceil_mode=True), n.AvgPool1d(3, 1, 1, count_include_pad=False),
                            n.PReLU(), n.MaxPool1d(2, 1, dilation=2), n.AdaptiveAvgPool1d(3), n.AdaptiveMaxPool1d(2), n.Flatten())

    kiln.manual_seed(0)
    model, reference = randomize(build(nn)), build(torch.nn)
    copy_weights(torch, model, reference)
    path = str(tmp_path / "pools.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 2, 16))], path)
    onnx.checker.check_model(proto, full_check=True)
    assert {"MaxPool", "AveragePool"} <= {node.op_type for node in proto.graph.node}
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for batch in (1, 3):
        x = normal(batch, 2, 16, seed=batch) * 2
        expected = reference(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=2, ceil_mode=True)])
def test_max_pool1d_returns_torchs_indices(options):
    torch = require("torch")
    x = np.random.default_rng(4).standard_normal((2, 3, 9))
    values, indices = kiln.compile(lambda t: F.max_pool1d(t, return_indices=True, **options))(x)
    expected_values, expected_indices = torch.nn.functional.max_pool1d(torch.tensor(x), return_indices=True, **options)
    np.testing.assert_array_equal(values, expected_values.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    unbatched = kiln.compile(lambda t: nn.MaxPool1d(return_indices=True, **options)(t)[1], batch_dim=None)(x[0])
    np.testing.assert_array_equal(unbatched, expected_indices.numpy()[0])
