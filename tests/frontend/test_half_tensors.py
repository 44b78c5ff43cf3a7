"""The float16/bfloat16 tensor surface against PyTorch 2.13 on CPU: constructors and casts bit for bit, printing text
for text (``torch.`` read as ``kiln.``), dtype queries over every pair of dtypes, checkpoints both ways (kiln.save and
files torch.save wrote), and ``kiln.testing.assert_close``'s half tolerances decided as torch's.

A half value is compared by its 16 bits (``bits``), so a rounding that differs in the last place fails. kiln's
``Tensor.numpy()`` of a bfloat16 tensor is an ``ml_dtypes.bfloat16`` array (torch refuses: "Got unsupported ScalarType
BFloat16"); the tests read torch's bfloat16 through ``view(torch.int16)``.
"""

from __future__ import annotations

import io

import ml_dtypes
import numpy as np
import pytest

import kiln
import kiln.testing
from kiln.frontend import torch_printoptions
from oracles import require_torch

HALVES = ("float16", "bfloat16")
TIES = [1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40, 0.1, 1 / 3, -2.5, 65519.99, 70000.0, 1e-8, 6e-8, 3e38, 0.0, -0.0]
"""Just past half-ulp ties (torch rounds float64 through float32: 1 + 2**-11 + 2**-40 is 1.0 in float16), overflow,
subnormals, bfloat16's large range, signed zeros."""


def bits(value) -> np.ndarray:
    """A kiln tensor's, a NumPy array's or a torch tensor's 16-bit words."""
    if type(value).__module__.startswith("torch"):
        import torch

        return value.detach().contiguous().view(torch.int16).numpy().view(np.uint16)
    return np.asarray(value).view(np.uint16)


def same(got, want) -> None:
    """Same dtype name, shape and bits."""
    assert str(np.asarray(got).dtype) == str(want.dtype).removeprefix("torch."), (np.asarray(got).dtype, want.dtype)
    assert tuple(got.shape) == tuple(want.shape)
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.fixture
def torch():
    return require_torch()


# constructors and casts ------------------------------------------------------------------------------------------------

CONSTRUCTORS = {
    "tensor": lambda lib, d: lib.tensor(TIES, dtype=d),
    "tensor_2d": lambda lib, d: lib.tensor([[0.1, 0.2], [1e4, -3e-5]], dtype=d),
    "as_tensor": lambda lib, d: lib.as_tensor([0.3, 7.7], dtype=d),
    "tensor_of_float64_array": lambda lib, d: lib.tensor(np.array(TIES), dtype=d),
    "zeros": lambda lib, d: lib.zeros(2, 3, dtype=d),
    "ones": lambda lib, d: lib.ones((4,), dtype=d),
    "full": lambda lib, d: lib.full((2, 2), 1 + 2**-11 + 2**-40, dtype=d),
    "eye": lambda lib, d: lib.eye(3, 4, dtype=d),
    "arange_int_bounds": lambda lib, d: lib.arange(250, 300, dtype=d),
    "arange_dyadic_step": lambda lib, d: lib.arange(-2.0, 3.0, 0.25, dtype=d),
    "linspace": lambda lib, d: lib.linspace(-3, 7, 33, dtype=d),
    "linspace_wide": lambda lib, d: lib.linspace(0, 1000, 101, dtype=d),
    "zeros_like": lambda lib, d: lib.zeros_like(lib.ones(3), dtype=d),
    "ones_like": lambda lib, d: lib.ones_like(lib.zeros(3, dtype=d)),
    "full_like": lambda lib, d: lib.full_like(lib.zeros(2, dtype=d), 0.3),
    "to": lambda lib, d: lib.tensor([0.1, 3.3, 1e5, -7e-6]).to(d),
    "to_from_float64": lambda lib, d: lib.tensor([0.1, 3.3, 1e-9], dtype=lib.float64).to(d),
    "to_device_and_dtype": lambda lib, d: lib.tensor([2.7]).to("cpu", d),
    "type_of_legacy_class": lambda lib, d: lib.tensor([1.1, 2.2]).type(lib.HalfTensor if d is lib.float16 else lib.BFloat16Tensor),
    "type_of_string": lambda lib, d: lib.tensor([1.1]).type("torch.HalfTensor" if d is lib.float16 else "torch.BFloat16Tensor"),
    "legacy_data": lambda lib, d: (lib.HalfTensor if d is lib.float16 else lib.BFloat16Tensor)([[0.1, 1 + 2**-11 + 2**-40]]),
    "legacy_sizes": lambda lib, d: (lib.HalfTensor if d is lib.float16 else lib.BFloat16Tensor)(2, 3).zero_(),
    "half_method": lambda lib, d: lib.tensor([0.1, 5e-5]).half() if d is lib.float16 else lib.tensor([0.1, 5e-5]).bfloat16(),
}


@pytest.mark.parametrize("name", CONSTRUCTORS)
@pytest.mark.parametrize("dtype", HALVES)
def test_constructors_give_torchs_bits(torch, name, dtype):
    make = CONSTRUCTORS[name]
    same(make(kiln, getattr(kiln, dtype)), make(torch, getattr(torch, dtype)))


NUMBER_WRITES = {
    "fill_": lambda lib, d, v: lib.zeros(3, dtype=d).fill_(v),
    "setitem": lambda lib, d, v: _assigned(lib.zeros(3, dtype=d), 0, v),
    "slice_setitem": lambda lib, d, v: _assigned(lib.zeros(3, dtype=d), slice(1, None), v),
    "add_number": lambda lib, d, v: lib.zeros(3, dtype=d) + v,
    "sub_number": lambda lib, d, v: lib.zeros(3, dtype=d) - -v,
    "masked_fill": lambda lib, d, v: lib.zeros(3, dtype=d).masked_fill(lib.tensor([True, False, True]), v),
    "parameter_data_fill_": lambda lib, d, v: _filled_data(lib.nn.Parameter(lib.zeros(2, dtype=d)), v),
    "float64_to_half": lambda lib, d, v: lib.tensor([v, -v, 1.0], dtype=lib.float64).to(d),
    "float64_copy_": lambda lib, d, v: lib.zeros(2, dtype=d).copy_(lib.tensor([v, -v], dtype=lib.float64)),
}
"""Numbers and float64 values just past a half tie written into half tensors."""


def _assigned(x, index, value):
    x[index] = value
    return x


def _filled_data(parameter, value):
    parameter.data.fill_(value)
    return parameter.data


@pytest.mark.parametrize("name", NUMBER_WRITES)
@pytest.mark.parametrize("dtype, tie", [("float16", 2**-11), ("bfloat16", 2**-8)])
def test_numbers_past_a_tie_round_through_float32_as_torch(torch, name, dtype, tie):
    """c10's Half and BFloat16 are built from a float: torch rounds a Python number or a float64 to float32, then to
    the half type, so ``1 + tie + 2**-30`` lands on the tie and rounds to even (1.0); NumPy's and ml_dtypes' direct
    casts round it up."""
    value = 1 + tie + 2**-30
    same(NUMBER_WRITES[name](kiln, getattr(kiln, dtype), value), NUMBER_WRITES[name](torch, getattr(torch, dtype), value))


@pytest.mark.parametrize("dtype", HALVES)
def test_arange_with_an_inexact_step_is_the_float64_sequence_rounded(torch, dtype):
    """torch's vectorized half arange rounds each 16-lane chunk's first value to half and steps from it, so its values
    depend on the CPU's vector width; kiln's are the exact sequence rounded once (torch in float64, cast), the
    oracle the scalar path approximates. The length is torch's."""
    for start, end, step in [(0, 10, 0.1), (-3.3, 41.7, 0.7), (1000, 1100, 1.3)]:
        got = kiln.arange(start, end, step, dtype=getattr(kiln, dtype))
        same(got, torch.arange(start, end, step, dtype=torch.float64).to(getattr(torch, dtype)))
        assert got.shape == torch.arange(start, end, step, dtype=getattr(torch, dtype)).shape


def test_from_numpy_takes_float16_and_ml_dtypes_bfloat16_arrays(torch):
    halves = np.array([0.5, -1e-3, 6e4], np.float16)
    same(kiln.from_numpy(halves), torch.from_numpy(halves))
    brains = np.array([1.5, -3e38, 1e-30], ml_dtypes.bfloat16)
    got = kiln.from_numpy(brains)
    assert got.dtype is kiln.bfloat16 and got.numpy().dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bits(got), brains.view(np.uint16))
    assert kiln.as_tensor(brains).dtype is kiln.bfloat16 and kiln.tensor(brains).dtype is kiln.bfloat16


@pytest.fixture
def default_dtype_restored():
    yield
    kiln.set_default_dtype(kiln.float32)
    import torch

    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("dtype", HALVES)
def test_default_half_dtype_makes_python_floats_half(torch, dtype, default_dtype_restored):
    kiln.set_default_dtype(getattr(kiln, dtype))
    torch.set_default_dtype(getattr(torch, dtype))
    for make in (lambda lib: lib.tensor([1.5, 0.1]), lambda lib: lib.zeros(2), lambda lib: lib.arange(0.0, 2.0, 0.5),
                 lambda lib: lib.full((2,), 0.3), lambda lib: lib.linspace(0, 1, 3)):
        same(make(kiln), make(torch))
        assert repr(make(kiln)) == repr(make(torch)).replace("torch.", "kiln.")  # no dtype= for the default dtype
    assert repr(kiln.tensor([1.5], dtype=kiln.float32)) == repr(torch.tensor([1.5], dtype=torch.float32)).replace("torch.", "kiln.")
    assert kiln.tensor([1, 2]).dtype is kiln.int64


@pytest.mark.parametrize("dtype", HALVES)
def test_random_draws_in_half(dtype):
    """rand's draws are k / 2**digits (11 for float16, 8 for bfloat16) as torch's, so never 1.0 (a float32 draw rounded
    to bfloat16 reaches 1.0 about once in 512); randn is computed in float32 and rounded once."""
    kiln.manual_seed(0)
    half = getattr(kiln, dtype)
    steps = 2 ** (ml_dtypes.finfo(half.numpy).nmant + 1)
    draws = kiln.rand(200_000, dtype=half).numpy().astype(np.float64)
    assert kiln.rand(3, dtype=half).dtype is half and kiln.rand_like(kiln.zeros(3, dtype=half)).dtype is half
    assert draws.min() >= 0 and draws.max() < 1 and np.array_equal(draws * steps, np.floor(draws * steps))
    assert len(np.unique(draws)) == steps  # every grid point is drawn
    normal = kiln.randn(200_000, dtype=half)
    assert normal.dtype is half and abs(normal.numpy().astype(np.float64).mean()) < 0.01
    assert abs(normal.numpy().astype(np.float64).std() - 1) < 0.01
    integers = kiln.randint(3, 10, (1000,), dtype=half)
    values = integers.numpy().astype(np.float64)
    assert integers.dtype is half and set(values) == set(range(3, 10))


@pytest.mark.parametrize("dtype", HALVES)
def test_traced_half_constructors_and_draws(dtype):
    """Inside kiln.compile the creation functions give half constants and rand draws on the same grid, fresh each call."""
    half = getattr(kiln, dtype)
    steps = 2 ** (ml_dtypes.finfo(half.numpy).nmant + 1)
    function = kiln.compile(lambda x: (x * kiln.ones(x.shape[0], dtype=half), kiln.rand(x.shape[0], 64, dtype=half),
                                       kiln.linspace(0, 1, 3, dtype=half)), seed=0)
    product, draws, line = function(np.full(4, 1.5, half.numpy))
    assert np.asarray(product).dtype == np.asarray(draws).dtype == np.asarray(line).dtype == half.numpy
    values = np.asarray(draws).astype(np.float64)
    assert values.shape == (4, 64) and values.max() < 1 and np.array_equal(values * steps, np.floor(values * steps))
    assert not np.array_equal(np.asarray(function(np.ones(4, half.numpy))[1]), np.asarray(draws))


@pytest.mark.parametrize("dtype", HALVES)
def test_make_tensor_in_half(dtype):
    kiln.manual_seed(0)
    made = kiln.testing.make_tensor(2000, dtype=getattr(kiln, dtype), low=-2, high=3, exclude_zero=True)
    values = made.numpy().astype(np.float64)
    assert made.dtype is getattr(kiln, dtype) and values.min() >= -2 and values.max() <= 3 and (values != 0).all()


@pytest.mark.parametrize("dtype", HALVES)
def test_requires_grad_half_leaf(torch, dtype):
    x = kiln.tensor([0.5, 2.0], dtype=getattr(kiln, dtype), requires_grad=True)
    (x * x).sum().backward()
    t = torch.tensor([0.5, 2.0], dtype=getattr(torch, dtype), requires_grad=True)
    (t * t).sum().backward()
    same(x.grad, t.grad)


# queries ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALVES)
def test_tensor_queries_match_torch(torch, dtype):
    values = [[0.1, 1 / 3, -2.5], [1e-5, 7.0, 300.0]]
    x, t = kiln.tensor(values, dtype=getattr(kiln, dtype)), torch.tensor(values, dtype=getattr(torch, dtype))
    assert x.is_floating_point() and x.element_size() == t.element_size() == 2
    assert (x.itemsize, x.nbytes) == (t.itemsize, t.nbytes)
    assert x.tolist() == t.tolist() and x[0, 1].item() == t[0, 1].item()
    assert type(x[1, 2].item()) is float
    assert x.type() == t.type()


def test_numpy_of_half_tensors(torch):
    """float16 as torch's numpy(); bfloat16, which torch refuses, as an ml_dtypes array of the same bits."""
    got, want = kiln.tensor([0.1, 3.0]).half().numpy(), torch.tensor([0.1, 3.0]).half().numpy()
    assert got.dtype == want.dtype == np.float16 and np.array_equal(got, want)
    brains = kiln.tensor([0.1, 3.0]).bfloat16()
    with pytest.raises(TypeError, match="BFloat16"):
        torch.tensor([0.1, 3.0]).bfloat16().numpy()
    assert brains.numpy().dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bits(brains.numpy()), bits(torch.tensor([0.1, 3.0]).bfloat16()))


@pytest.mark.parametrize("dtype", HALVES)
def test_finfo_equals_torchs(torch, dtype):
    got, want = kiln.finfo(getattr(kiln, dtype)), torch.finfo(getattr(torch, dtype))
    for field in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype"):
        assert getattr(got, field) == getattr(want, field), field


ALL_DTYPES = ("bool", "int32", "int64", "float16", "bfloat16", "float32", "float64")


def test_promote_types_and_can_cast_every_pair(torch):
    for first in ALL_DTYPES:
        for second in ALL_DTYPES:
            a, b = getattr(kiln, first), getattr(kiln, second)
            ta, tb = getattr(torch, first), getattr(torch, second)
            assert str(kiln.promote_types(a, b).numpy) == str(torch.promote_types(ta, tb)).removeprefix("torch."), (first, second)
            assert kiln.can_cast(a, b) == torch.can_cast(ta, tb), (first, second)


def test_result_type_of_tensors_and_numbers(torch):
    """Every pair of operands among tensors with dims, 0-d tensors of each dtype and Python numbers."""
    def operands(lib):
        made = [lib.ones(2, dtype=getattr(lib, name)) for name in ALL_DTYPES]
        made += [lib.tensor(1, dtype=getattr(lib, name)) for name in ALL_DTYPES]
        return made + [True, 3, 2.5]

    for a, ta in zip(operands(kiln), operands(torch)):
        for b, tb in zip(operands(kiln), operands(torch)):
            if not (hasattr(ta, "dtype") or hasattr(tb, "dtype")):
                continue
            want = str(torch.result_type(ta, tb)).removeprefix("torch.")
            assert str(kiln.result_type(a, b).numpy) == want, (ta, tb)


# printing --------------------------------------------------------------------------------------------------------------

@pytest.fixture
def printoptions_restored():
    saved = dict(torch_printoptions._options)
    yield
    torch_printoptions._options.clear()
    torch_printoptions._options.update(saved)
    import torch

    torch.set_printoptions(profile="default")


def _print_cases():
    rng = np.random.default_rng(3)
    return [
        [1.1, 2.5], [1.1, 2.5, 1e-5], 3.5, -0.0, [0.0, 1.0], [[0.0] * 3] * 2, [float("inf"), float("nan"), 1.0, -2.0],
        [60000.0, 1.0], [-0.0, 0.5], [1e-8, 1e-8], [0.001, 100.0], [123456.0, 1.0], [float("nan")], 1e-5,
        rng.normal(size=(10, 10)), np.arange(2000.0), rng.normal(size=(40, 50)) * 100, rng.normal(size=(2, 3, 4)),
        np.arange(30.0).reshape(5, 6) * 1000, rng.normal(size=(1, 40)), rng.normal(size=(3, 0)), [], rng.normal(size=(7, 400)),
    ]


OPTIONS = [{}, {"precision": 2}, {"sci_mode": True}, {"sci_mode": False}, {"threshold": 5, "edgeitems": 2},
           {"linewidth": 40}, {"profile": "short"}, {"threshold": 10, "edgeitems": 0}, {"profile": "full", "linewidth": 120}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("dtype", HALVES)
def test_repr_is_torchs(torch, dtype, options, printoptions_restored):
    kiln.set_printoptions(**options)
    torch.set_printoptions(**options)
    for values in _print_cases():
        want = torch.tensor(values, dtype=torch.float64).to(getattr(torch, dtype))
        got = kiln.tensor(np.asarray(values, np.float64), dtype=kiln.float64).to(getattr(kiln, dtype))
        assert repr(got) == repr(want).replace("torch.", "kiln."), f"\n{got!r}\n{want!r}"
        assert str(got) == repr(got)


# checkpoints -----------------------------------------------------------------------------------------------------------

def test_kiln_save_load_keeps_half_bits(tmp_path):
    model = kiln.nn.Sequential(kiln.nn.Linear(4, 3), kiln.nn.LayerNorm(3))
    tree = {"f16": kiln.tensor(TIES[:-3], dtype=kiln.float16), "bf16": kiln.tensor(TIES, dtype=kiln.bfloat16),
            "array": np.array([1.5, -2e38], ml_dtypes.bfloat16), "model": model.bfloat16().state_dict(), "step": 3}
    kiln.save(tree, tmp_path / "half.npz")
    back = kiln.load(tmp_path / "half.npz")
    for key in ("f16", "bf16", "array"):
        assert isinstance(back[key], kiln.Tensor) and np.asarray(back[key]).dtype == np.asarray(tree[key]).dtype
        np.testing.assert_array_equal(bits(back[key]), bits(tree[key]))
    for name, array in tree["model"].items():
        assert back["model"][name].dtype == kiln.bfloat16
        np.testing.assert_array_equal(bits(back["model"][name]), bits(array))
    twin = kiln.nn.Sequential(kiln.nn.Linear(4, 3), kiln.nn.LayerNorm(3)).bfloat16()
    twin.load_state_dict(back["model"])
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(bits(p.data), bits(q.data))


def test_torch_saved_half_storages_load(torch, tmp_path):
    """HalfStorage and BFloat16Storage, strided views into them and offsets, as torch.load reads them."""
    generator = torch.Generator().manual_seed(0)
    saved = {"f16": torch.randn(3, 4, generator=generator).half(), "bf16": torch.randn(5, generator=generator).bfloat16(),
             "bf16_view": torch.randn(4, 6, generator=generator).bfloat16()[:, 1::2],
             "f16_offset": torch.randn(10, generator=generator).half()[3:7], "f32": torch.ones(2)}
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    loaded = kiln.load(buffer)
    for key, tensor in saved.items():
        if tensor.dtype == torch.float32:
            np.testing.assert_array_equal(loaded[key], tensor.numpy())
        else:
            same(loaded[key], tensor)


def _pair(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 5), lib.nn.ReLU(), lib.nn.Linear(5, 3))


@pytest.mark.parametrize("dtype", HALVES)
def test_torch_half_model_loads_bit_for_bit(torch, tmp_path, dtype):
    """A model torch trained and saved in half loads into kiln's same model with the same bits; both then compute the
    same outputs within 4 half ulps of the largest output: kiln rounds a Linear's matmul and its bias add each once
    where torch's addmm rounds once, and the second layer sums those half-ulp differences (a relative tolerance
    alone fails where an output cancels to near zero)."""
    torch.manual_seed(0)
    source = _pair(torch).to(getattr(torch, dtype))
    torch.save(source.state_dict(), tmp_path / "model.pt")
    model = _pair(kiln).to(getattr(kiln, dtype))
    model.load_state_dict(kiln.load(tmp_path / "model.pt"))
    for p, q in zip(model.parameters(), source.parameters()):
        same(p.data, q.data)
    twin = _pair(kiln).to(getattr(kiln, dtype))
    twin.load_state_dict(source.state_dict())  # torch tensors straight in (torch's bfloat16 has no numpy())
    for p, q in zip(twin.parameters(), source.parameters()):
        same(p.data, q.data)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)).to(getattr(torch, dtype))
    got = model(kiln.tensor(x.float().numpy()).to(getattr(kiln, dtype))).numpy().astype(np.float64)
    want = source(x).detach().double().numpy()
    ulp = kiln.finfo(getattr(kiln, dtype)).eps * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * ulp)


@pytest.mark.parametrize("dtype", HALVES)
def test_load_state_dict_of_float32_into_half_model_casts_as_torch(torch, dtype):
    kiln.manual_seed(0)
    float_model = _pair(kiln)
    state = {name: np.asarray(value) for name, value in float_model.state_dict().items()}
    model = _pair(kiln).to(getattr(kiln, dtype))
    model.load_state_dict(state)
    twin = _pair(torch).to(getattr(torch, dtype))
    twin.load_state_dict({name: torch.tensor(value) for name, value in state.items()})
    for p, q in zip(model.parameters(), twin.parameters()):
        same(p.data, q.data)


def test_kiln_save_refuses_a_traced_tensor(tmp_path):
    def step(x):
        kiln.save({"x": x}, tmp_path / "bad.npz")
        return x

    with pytest.raises(Exception, match="traced tensor"):
        kiln.compile(step)(np.ones(2, np.float16))
    assert not (tmp_path / "bad.npz").exists()


# assert_close ------------------------------------------------------------------------------------------------------------

def _outcome(check) -> str | None:
    try:
        check()
    except AssertionError as error:
        return str(error)
    return None


@pytest.mark.parametrize("dtype", HALVES)
def test_assert_close_tolerances_and_messages_are_torchs(torch, dtype):
    """Pairs around the default tolerance (bfloat16 rtol 1.6e-2, float16 1e-3; atol 1e-5) pass or fail as torch's
    and fail with its message; the comparison rounds as torch's half isclose does."""
    rng = np.random.default_rng(5)
    kiln_dtype, torch_dtype = getattr(kiln, dtype), getattr(torch, dtype)
    failures = 0
    for scale in [1e-6, 1e-4, 1e-2, 1.0, 1e2]:
        for spread in [1e-4, 1e-3, 5e-3, 2e-2, 1e-1]:
            expected = torch.tensor(rng.normal(size=8) * scale).to(torch_dtype)
            actual = (expected.double() * torch.tensor(1 + rng.normal(size=8) * spread)).to(torch_dtype)
            want = _outcome(lambda: torch.testing.assert_close(actual, expected))
            got = _outcome(lambda: kiln.testing.assert_close(kiln.tensor(actual.double().numpy()).to(kiln_dtype),
                                                             kiln.tensor(expected.double().numpy()).to(kiln_dtype)))
            assert got == (None if want is None else want.replace("torch.", "kiln.")), (scale, spread)
            failures += want is not None
    assert 0 < failures < 25  # both outcomes were exercised
    mixed = _outcome(lambda: kiln.testing.assert_close(kiln.tensor([1.0]).to(kiln_dtype), kiln.tensor([1.0])))
    assert mixed == _outcome(lambda: torch.testing.assert_close(torch.tensor([1.0]).to(torch_dtype), torch.tensor([1.0]))).replace("torch.", "kiln.")


@pytest.mark.parametrize("dtype", HALVES)
def test_assert_close_rounds_at_the_edge_as_torchs_half_isclose(torch, dtype):
    """200000 pairs within two tolerances of each other: torch's isclose computes ``|a - e|`` and ``atol + rtol |e|``
    in the half dtype, rounding each step, and so calls about 30 of them close that exact arithmetic would not; the
    mismatch count in the message tells whether kiln decided each one as torch did."""
    rng = np.random.default_rng(0)
    kiln_dtype, torch_dtype = getattr(kiln, dtype), getattr(torch, dtype)
    rtol = {"float16": 1e-3, "bfloat16": 1.6e-2}[dtype]
    expected = torch.tensor(rng.normal(size=200_000)).to(torch_dtype)
    actual = (expected.double() * torch.tensor(1 + rng.uniform(-2, 2, size=200_000) * rtol)).to(torch_dtype)
    want = _outcome(lambda: torch.testing.assert_close(actual, expected))
    got = _outcome(lambda: kiln.testing.assert_close(kiln.tensor(actual.double().numpy()).to(kiln_dtype),
                                                     kiln.tensor(expected.double().numpy()).to(kiln_dtype)))
    assert want is not None and got == want.replace("torch.", "kiln.")
