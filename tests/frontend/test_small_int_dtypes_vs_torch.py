"""uint8, int8 and int16 tensors against PyTorch 2.13: promotion over every dtype pair (tensors with dims, 0-d tensors,
Python numbers), wrap-around arithmetic, casts, reductions, the constructors and queries, and gradients refused.

Casts torch leaves undefined (a negative or out-of-range float to uint8, e.g. ``torch.tensor(-1.5).byte()``: C++'s
float-to-integer conversion outside the target's range) are not tested; integer-to-integer casts wrap and are.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from oracles import require_torch, torch_twins
import kiln
from kiln.compiler.ir.types import DType

NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]
SMALL = ["uint8", "int8", "int16"]
SCALARS = [True, 3, -2, 300, 2.5]


def pair(name: str, values, shape=None):
    """The same values as a kiln tensor and a torch tensor of dtype ``name``."""
    torch = require_torch()
    theirs = torch.tensor(values, dtype=getattr(torch, name))
    ours = kiln.tensor(values, dtype=getattr(kiln, name))
    return ours, theirs


def torch_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def kiln_name(dtype) -> str:
    return np.dtype(DType.of(dtype).numpy).name


def assert_like_torch(ours, theirs, where: str) -> None:
    assert kiln_name(ours.dtype) == torch_name(theirs.dtype), f"{where}: {ours.dtype} vs {theirs.dtype}"
    expected = theirs.float().numpy() if theirs.dtype == require_torch().bfloat16 else theirs.numpy()
    np.testing.assert_allclose(np.asarray(ours.numpy(), np.float64), expected.astype(np.float64), rtol=1e-2, err_msg=where)


@pytest.mark.parametrize("a, b", list(itertools.product(NAMES, NAMES)))
def test_promote_types_and_result_type_match_torch(a, b):
    torch = require_torch()
    assert kiln_name(kiln.promote_types(getattr(kiln, a), getattr(kiln, b))) == torch_name(
        torch.promote_types(getattr(torch, a), getattr(torch, b)))
    for shape in [(2,), ()]:  # a tensor with dims and a 0-d one: the 0-d one counts only if of a higher kind
        (x, tx), (y, ty) = pair(a, [1, 2]), pair(b, np.ones(shape).tolist())
        assert kiln_name(kiln.result_type(x, y)) == torch_name(torch.result_type(tx, ty)), (a, b, shape)
    assert kiln.can_cast(getattr(kiln, a), getattr(kiln, b)) == torch.can_cast(getattr(torch, a), getattr(torch, b))


BINARY = {"add": lambda p, q: p + q, "mul": lambda p, q: p * q, "div": lambda p, q: p / q, "less": lambda p, q: p < q,
          "equal": lambda p, q: p == q, "maximum": lambda p, q: p.maximum(q) if hasattr(p, "maximum") else q.maximum(p)}


@pytest.mark.parametrize("a, b", [(a, b) for a, b in itertools.product(NAMES, NAMES) if a in SMALL or b in SMALL])
def test_ops_on_mixed_dtypes_take_torchs_result_dtype(a, b):
    for shape in [(3,), ()]:
        (x, tx), (y, ty) = pair(a, [1, 2, 3]), pair(b, np.full(shape, 2).tolist())
        for name, op in BINARY.items():
            if name == "maximum" and (a == "bool") != (b == "bool"):
                continue  # torch.maximum refuses a bool operand with a non-bool one
            assert_like_torch(op(x, y), op(tx, ty), f"{a} {name} {b}{list(shape)}")
        assert_like_torch(kiln.where(x > 1, x, y), require_torch().where(tx > 1, tx, ty), f"where {a} {b}")


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("number", SCALARS)
def test_a_python_number_keeps_the_tensors_kind_as_torch(name, number):
    x, tx = pair(name, [1, 7, 100])
    assert kiln_name(kiln.result_type(x, number)) == torch_name(require_torch().result_type(tx, number))
    ops = [lambda p: p + number, lambda p: number * p, lambda p: p / number, lambda p: p > number]
    ops += [] if isinstance(number, bool) else [lambda p: p - number]  # torch refuses subtracting a bool
    for op in ops:
        assert_like_torch(op(x), op(tx), f"{name} with {number!r}")


@pytest.mark.parametrize("name, values, other", [
    ("uint8", [200, 255, 0, 17], [100, 1, 255, 16]),
    ("int8", [100, 127, -128, -7], [100, 1, -1, 20]),
    ("int16", [30000, 32767, -32768, 300], [30000, 1, -1, 300]),
])
def test_arithmetic_wraps_around_as_torch(name, values, other):
    (x, tx), (y, ty) = pair(name, values), pair(name, other)
    for op in (lambda p, q: p + q, lambda p, q: p - q, lambda p, q: p * q, lambda p, q: -p, lambda p, q: p * 3 + 250,
               lambda p, q: p // q.clamp(min=1), lambda p, q: p % q.clamp(min=1), lambda p, q: p ** 2,
               lambda p, q: p & q, lambda p, q: p | q, lambda p, q: p ^ q, lambda p, q: ~p, lambda p, q: p << 3,
               lambda p, q: p >> 2, lambda p, q: p.abs(), lambda p, q: p.clamp(1, 100), lambda p, q: p.sign()):
        assert_like_torch(op(x, y), op(tx, ty), name)
    np.testing.assert_array_equal((x + y).numpy(), (tx + ty).numpy())  # exactly: every bit


def test_the_briefs_examples():
    assert (kiln.tensor([200], dtype=kiln.uint8) + 100).tolist() == [44]
    assert (kiln.tensor([1], dtype=kiln.uint8) + kiln.tensor([1], dtype=kiln.int8)).dtype == kiln.int16
    assert (kiln.tensor([1], dtype=kiln.uint8) + kiln.tensor([1], dtype=kiln.int64)).dtype == kiln.int64
    assert (kiln.tensor([1], dtype=kiln.uint8) + 1.5).dtype == kiln.float32
    assert (kiln.tensor([True]) + kiln.tensor([1], dtype=kiln.uint8)).dtype == kiln.uint8


@pytest.mark.parametrize("name", SMALL)
def test_casts_from_floats_truncate_and_from_integers_wrap_as_torch(name):
    torch = require_torch()
    info = torch.iinfo(getattr(torch, name))
    floats = [0.0, 0.4, 1.7, 99.99, float(info.max) - 0.5] + ([-0.9, -3.7, float(info.min)] if info.min < 0 else [])
    x, tx = pair("float32", floats)
    assert_like_torch(x.to(getattr(kiln, name)), tx.to(getattr(torch, name)), f"float32 -> {name}")
    wide, twide = pair("int64", [0, 255, 256, 300, -1, -129, 40000, -40000, 2**40 + 7])
    assert_like_torch(wide.to(getattr(kiln, name)), twide.to(getattr(torch, name)), f"int64 -> {name}")
    np.testing.assert_array_equal(wide.to(getattr(kiln, name)).numpy(), twide.to(getattr(torch, name)).numpy())
    small, tsmall = pair(name, [0, 1, info.max, info.min])
    for target in NAMES:
        assert_like_torch(small.to(getattr(kiln, target)), tsmall.to(getattr(torch, target)), f"{name} -> {target}")


def test_byte_char_short_and_the_constructors_match_torch():
    torch = require_torch()
    x, tx = pair("float32", [0.5, 1.9, 100.2, 254.7])
    for method in ("byte", "char", "short"):
        got, expected = getattr(x, method)(), getattr(tx, method)()
        assert_like_torch(got, expected, method)
        assert got.type() == expected.type()
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert_like_torch(kiln.from_numpy(image), torch.from_numpy(image), "from_numpy")
    assert_like_torch(kiln.tensor(image), torch.tensor(image), "tensor of a uint8 array")
    for name in ("ByteTensor", "CharTensor", "ShortTensor"):
        assert_like_torch(getattr(kiln, name)([1, 2, 3]), getattr(torch, name)([1, 2, 3]), name)
        assert getattr(kiln, name)(2, 3).shape == (2, 3)
    assert kiln.short is kiln.int16 and x.short().type(kiln.ByteTensor).dtype == kiln.uint8
    assert [kiln.zeros(2, dtype=d).is_signed() for d in (kiln.uint8, kiln.int8, kiln.int16)] == [False, True, True]
    assert [kiln.zeros(2, dtype=d).itemsize for d in (kiln.uint8, kiln.int8, kiln.int16)] == [1, 1, 2]


@pytest.mark.parametrize("name", SMALL)
def test_iinfo_matches_torch(name):
    torch = require_torch()
    ours, theirs = kiln.iinfo(getattr(kiln, name)), torch.iinfo(getattr(torch, name))
    assert (ours.bits, ours.min, ours.max, ours.dtype) == (theirs.bits, theirs.min, theirs.max, theirs.dtype)


@pytest.mark.parametrize("name", SMALL)
def test_reductions_and_scans_match_torch(name):
    x, tx = pair(name, [[100, 7, 120], [90, 1, 3]])
    for op in (lambda p: p.sum(), lambda p: p.sum(0), lambda p: p.prod(1), lambda p: p.cumsum(1), lambda p: p.max(),
               lambda p: p.min(0).values, lambda p: p.amax(1), lambda p: p.argmax(1), lambda p: p.sort(1).values,
               lambda p: p.float().mean(), lambda p: p.sum(dtype=getattr(kiln if isinstance(p, kiln.Tensor) else require_torch(), name))):
        assert_like_torch(op(x), op(tx), name)
    with pytest.raises(kiln.KilnError, match="floating-point"):
        x.mean()  # torch: "mean(): could not infer output dtype. Input dtype must be either a floating point ..."


@pytest.mark.parametrize("name", SMALL)
def test_gradients_are_refused_as_for_other_integers(name):
    with pytest.raises(kiln.KilnError, match=f"only floating-point tensors can require gradients, got {name}"):
        kiln.zeros(3, dtype=getattr(kiln, name), requires_grad=True)
    with pytest.raises(kiln.KilnError, match=f"requires_grad_\\(\\): only floating-point tensors can require gradients, not {name}"):
        kiln.zeros(3, dtype=getattr(kiln, name)).requires_grad_()
    with pytest.raises(kiln.KilnError, match="argument 0 must be a floating-point tensor"):
        kiln.grad(lambda x: x.float().sum())(kiln.zeros(3, dtype=getattr(kiln, name)))


def test_compile_runs_uint8_images_over_a_symbolic_batch_as_eager_and_torch():
    torch = require_torch()

    def preprocess(images, offsets):
        shifted = images + offsets                 # uint8 + int8 -> int16
        scaled = images.float() / 255.0
        return shifted * 3, scaled.sum(1), images // 7, images.sum(0), (images & 0xF0) >> 4, images > 128

    compiled = kiln.compile(preprocess, batch_dim=(0, None))
    offsets = np.array([-100, 5, 1], np.int8)
    for batch in (2, 5):  # one trace serves both sizes
        images = np.random.default_rng(batch).integers(0, 256, (batch, 3), dtype=np.uint8)
        ours = compiled(kiln.from_numpy(images), kiln.from_numpy(offsets))
        theirs = preprocess(torch.from_numpy(images), torch.from_numpy(offsets))
        for got, expected in zip(ours, theirs):
            assert_like_torch(kiln.from_numpy(np.asarray(got)), expected, f"batch {batch}")
    assert len(compiled.cache) == 1 if hasattr(compiled, "cache") else True
    graph = kiln.trace(preprocess, kiln.TensorSpec(("N", 3), "uint8"), kiln.TensorSpec((3,), "int8"))
    assert str(graph.inputs[0].type) == "tensor<Nx3xu8>" and str(graph.outputs[0].type) == "tensor<Nx3xi16>"


def test_a_uint8_dataset_batches_as_uint8_through_the_data_loader():
    torch = require_torch()
    images = np.random.default_rng(0).integers(0, 256, (6, 2, 2), dtype=np.uint8)
    labels = np.arange(6, dtype=np.int8)
    dataset = kiln.utils.data.TensorDataset(images, labels)
    theirs = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    for (x, y), (tx, ty) in zip(kiln.utils.data.DataLoader(dataset, batch_size=4), torch.utils.data.DataLoader(theirs, batch_size=4)):
        assert_like_torch(x, tx, "images")
        assert_like_torch(y, ty, "labels")
        assert_like_torch(x.float() / 255, tx.float() / 255, "scaled")


def image_classifier(lib):
    """A linear classifier reading uint8 images itself (``x.float() / 255`` inside the traced step)."""
    class Classifier(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = lib.nn.Linear(4, 3)

        def forward(self, images):
            return self.fc(images.float().flatten(1) / 255)

    return Classifier()


def test_a_training_step_on_uint8_image_batches_matches_torch():
    torch, model, twin = torch_twins(image_classifier)
    step = kiln.compile_train_step(model, kiln.nn.functional.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    their_optimizer = torch.optim.SGD(twin.parameters(), lr=0.5)
    images = np.random.default_rng(0).integers(0, 256, (7, 2, 2), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, 7)
    loader = kiln.utils.data.DataLoader(kiln.utils.data.TensorDataset(images, labels), batch_size=3)
    for x, y in loader:  # batches of 3, 3 and 1, uint8 into the compiled step
        assert x.dtype == kiln.uint8
        loss = float(np.asarray(step(x, y)))
        their_optimizer.zero_grad()
        their_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x.numpy())), torch.from_numpy(y.numpy()))
        their_loss.backward()
        their_optimizer.step()
        assert loss == pytest.approx(their_loss.item(), rel=1e-5)
    assert step.compile_count == 1
