"""``kiln.autocast`` and ``kiln.amp.GradScaler`` in lockstep with PyTorch 2.13's CPU autocast, in bfloat16 and float16.

The same MLP, small CNN and tiny transformer block, from the same parameters, run in kiln and in torch under
``autocast("cpu", dtype)``: every recorded intermediate has torch's dtype (Linear/Conv/attention outputs half, the
loss float32, a residual sum float32), the values and the float32 parameters' gradients agree, over SGD and Adam
steps, eagerly and compiled (``compile_train_step`` with the region in the model's forward or in the loss).

Tolerances. Both compute each half op in float32 and round its result once, but torch fuses a Linear's or a Conv's
bias into the product (one rounding) where kiln rounds the product and then the sum (``input @ W.T`` then ``+ b``),
so a half result may differ by one unit in the last place (ulp) and the difference travels on. A tensor compared
here agrees within ``ULPS`` ulps of the half dtype, measured against the tensor's own largest magnitude (its
elements are sums whose small entries cancel: an entry-wise relative bound would be meaningless for them):
``|ours - theirs| <= ULPS * eps * max|theirs|`` with ``eps`` 2**-8 for bfloat16 and 2**-11 for float16 (half the
machine epsilon: one rounding). Parameters after optimizer steps differ by the learning rate times the gradients'
differences (Adam normalises them: a differing gradient moves a parameter by at most about lr per step).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch, torch_twins

DTYPES = ["bfloat16", "float16"]
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11}
ULPS = 8
"""One ulp of difference per op, a handful of ops deep (a Linear's product and bias sum, then the next layer's)."""
NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64"}
RNG = np.random.default_rng(7)


def _dtype_name(dtype) -> str:
    return NAMES.get(str(dtype), str(dtype).split(".")[-1])  # torch.float32 and kiln.float32 alike


def _array(tensor) -> np.ndarray:
    value = tensor.detach().float().numpy() if hasattr(tensor, "detach") else tensor
    return np.asarray(value, dtype=np.float64)


def assert_half_close(ours, theirs, dtype: str, what: str, ulps: float = ULPS) -> None:
    theirs, ours = _array(theirs), _array(ours)
    scale = max(float(np.abs(theirs).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ulps * UNIT_ROUNDOFF[dtype] * scale, err_msg=what)


# the models, written once against torch-style names ------------------------------------------------------------------

def make_mlp(lib):
    nn, F = lib.nn, lib.nn.functional

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 5)

        def forward(self, x, seen):
            h = seen("fc1", self.fc1(x))
            a = seen("relu", F.relu(h))
            return seen("fc2", self.fc2(a))

    return MLP()


def make_cnn(lib):
    nn, F = lib.nn, lib.nn.functional

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(4 * 3 * 3, 5)

        def forward(self, x, seen):
            c = seen("conv", self.conv(x))
            p = seen("pool", F.max_pool2d(F.relu(c), 2))
            return seen("fc", self.fc(p.flatten(1)))

    return CNN()


def make_block(lib):
    """A pre-norm transformer block: LayerNorm, q/k/v Linear, scaled dot-product attention, residual, GELU MLP."""
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
            self.head = nn.Linear(d, 5)

        def forward(self, x, seen):
            b, t, d = x.shape
            q, k, v = seen("qkv", self.qkv(seen("norm1", self.norm1(x)))).chunk(3, dim=-1)
            q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
            attention = seen("attention", F.scaled_dot_product_attention(q, k, v, is_causal=True))
            x = seen("residual", x + self.proj(attention.transpose(1, 2).reshape(b, t, d)))
            x = x + self.down(seen("gelu", F.gelu(self.up(seen("norm2", self.norm2(x))))))
            return seen("head", self.head(x.mean(1)))

    return Block()


MODELS = {  # name: (make, input shape, lr)
    "mlp": (make_mlp, (8, 6), 0.05),
    "cnn": (make_cnn, (4, 2, 6, 6), 0.05),
    "block": (make_block, (3, 4, 8), 0.05),
}


class Recorder:
    """``seen(name, tensor)``: keeps each intermediate (and its dtype) of the last forward."""

    def __init__(self):
        self.tensors = {}

    def __call__(self, name, tensor):
        self.tensors[name] = tensor
        return tensor


def _batch(shape, steps):
    """The same batches whatever ran before (each test draws its own): the tolerances were measured on these."""
    rng = np.random.default_rng(7)
    return [(rng.standard_normal(shape).astype(np.float32), rng.integers(0, 5, shape[0])) for _ in range(steps)]


def _eager_step(lib, model, optimizer, dtype, x, y):
    """One step: the intermediates' dtypes and values (the loss among them) and the parameters' gradients."""
    optimizer.zero_grad()
    seen = Recorder()
    with lib.autocast("cpu", dtype=getattr(lib, dtype)):
        logits = model(lib.tensor(x), seen)
        loss = seen("loss", lib.nn.functional.cross_entropy(logits, lib.tensor(y)))
    loss.backward()
    grads = [(_dtype_name(p.dtype), _dtype_name(p.grad.dtype), _array(p.grad)) for p in model.parameters()]
    optimizer.step()
    return {name: (_dtype_name(t.dtype), _array(t)) for name, t in seen.tensors.items()}, grads


def _optimizer(lib, name, model, lr):
    return lib.optim.SGD(model.parameters(), lr=lr, momentum=0.9) if name == "sgd" else lib.optim.Adam(model.parameters(), lr=lr * 0.1)


def _resync(torch, model, twin):
    """torch's parameters := kiln's, so each step compares one step's rounding, not the drift of earlier ones."""
    for p, q in zip(model.parameters(), twin.parameters()):
        q.data = torch.tensor(np.array(p.data))
    return [np.array(p.data, dtype=np.float64) for p in model.parameters()]


def assert_update_close(ours, theirs, optimizer, lr, dtype, what):
    """SGD's update is lr times the momentum of gradients that agree within ULPS; Adam's divides each gradient by its
    own running magnitude, so a component near zero whose rounding differs may step by up to lr either way."""
    if optimizer == "sgd":
        assert_half_close(ours, theirs, dtype, what)
    else:
        assert np.abs(ours - theirs).max() <= 2 * lr * 0.1 * (1 + 1e-3), what


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_eager_training_in_autocast_is_torchs(dtype, model_name, optimizer):
    make, shape, lr = MODELS[model_name]
    torch, model, twin = torch_twins(make)
    ours_optimizer, theirs_optimizer = _optimizer(kiln, optimizer, model, lr), _optimizer(torch, optimizer, twin, lr)
    for step, (x, y) in enumerate(_batch(shape, 3)):
        before = _resync(torch, model, twin)
        our_seen, our_grads = _eager_step(kiln, model, ours_optimizer, dtype, x, y)
        their_seen, their_grads = _eager_step(torch, twin, theirs_optimizer, dtype, x, y)
        assert {n: d for n, (d, _) in our_seen.items()} == {n: d for n, (d, _) in their_seen.items()}, f"step {step}"
        for name, (_, value) in their_seen.items():
            assert_half_close(our_seen[name][1], value, dtype, f"step {step}: {name}")
        for index, (ours, theirs) in enumerate(zip(our_grads, their_grads)):
            assert ours[:2] == theirs[:2] == ("float32", "float32")  # float32 gradients of float32 parameters
            assert_half_close(ours[2], theirs[2], dtype, f"step {step}: gradient of parameter {index}")
        for index, (p, q, b) in enumerate(zip(model.parameters(), twin.parameters(), before)):
            assert_update_close(_array(p.data) - b, _array(q.detach()) - b, optimizer, lr, dtype, f"step {step}: update of parameter {index}")


def test_the_dtypes_of_a_region_are_torchs_op_by_op():
    """One op of each kind: listed lower-precision ops, float32 losses, promoting cat, unlisted ops in their inputs'
    dtype, float64 never cast, an explicit region inside, and a region off inside an enabled one."""

    def dtypes(name):
        lib, _, F = libraries(name)
        x, w, b = (lib.tensor(RNG.standard_normal(s).astype(np.float32)) for s in ((4, 8), (6, 8), (6,)))
        image, kernel = lib.tensor(np.ones((1, 2, 5, 5), np.float32)), lib.tensor(np.ones((3, 2, 3, 3), np.float32))
        seen = {}
        with lib.autocast("cpu", dtype=lib.float16):
            h = F.linear(x, w, b)
            seen.update(linear=h, matmul=x @ w.T, bmm=x[None].bmm(w.T[None]), addmm=lib.addmm(b, x, w.T), conv=F.conv2d(image, kernel),
                        conv1d=F.conv1d(image[:, :, 0], kernel[:, :, 0]), prelu=F.prelu(x, lib.tensor(np.array([0.25], np.float32))),
                        sdpa=F.scaled_dot_product_attention(x[None], x[None], x[None]), softmax=F.softmax(h, -1),
                        softmax_f32=F.softmax(x, -1), mse=F.mse_loss(h, lib.zeros(4, 6)), l1=F.l1_loss(h, lib.zeros(4, 6)),
                        nll=F.nll_loss(F.log_softmax(h, -1), lib.tensor(np.array([0, 1, 2, 3]))), sum=h.sum(), residual=h + b,
                        cat=lib.cat([h, b[None]]), stack=lib.stack([h, x[:, :6]]), float64=x.double() @ w.double().T,
                        index_copy=h.index_copy(0, lib.tensor(np.array([0, 2])), lib.ones(2, 6)),
                        bce=F.binary_cross_entropy_with_logits(h, lib.zeros(4, 6)), gelu=F.gelu(h), layer_norm=F.layer_norm(x, (8,)))
            with lib.autocast("cpu", enabled=False):
                seen["off"] = F.linear(x, w, b)
            with lib.autocast("cpu", dtype=lib.bfloat16):
                seen["inner_bfloat16"] = x @ w.T
        seen["after"] = x @ w.T
        return {key: _dtype_name(value.dtype) for key, value in seen.items()}

    theirs = dtypes("torch")
    assert theirs["linear"] == "float16" and theirs["mse"] == "float32" and theirs["softmax"] == "float16"  # the oracle's own word
    assert dtypes("kiln") == theirs


def test_the_dtypes_of_more_ops_in_a_region_are_torchs():
    """Ops whose kiln composites are built from listed ops: float32-list ones (adaptive_avg_pool3d, linalg, prod,
    trace, cdist) and ``mv``/``addmv`` (on no list) keep float32 and compute in it; ``linalg.vecdot`` is on the
    lower-precision list; einsum/tensordot/inner/cov/matrix_power are built from matmul in torch too."""

    def run(name):
        lib, _, F = libraries(name)
        a = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
        m, v = lib.tensor(a), lib.tensor(a[0])
        spd = lib.tensor(a @ a.T + 4 * np.eye(4, dtype=np.float32))
        volume = lib.tensor(np.linspace(0.1, 1, 64, dtype=np.float32).reshape(1, 1, 4, 4, 4))
        with lib.autocast("cpu"):
            out = dict(mv=m.mv(v), addmv=lib.addmv(v, m, v), vecdot=lib.linalg.vecdot(m, m), pool3d=F.adaptive_avg_pool3d(volume, 1),
                       inv=lib.linalg.inv(spd), solve=lib.linalg.solve(spd, m), cholesky=lib.linalg.cholesky(spd), prod=m.prod(1),
                       trace=m.trace(), cdist=lib.cdist(m, m), einsum=lib.einsum("ij,jk->ik", m, m), tensordot=lib.tensordot(m, m, 1),
                       inner=lib.inner(m, m), cov=lib.cov(m), matrix_power=lib.linalg.matrix_power(m, 3), outer=lib.outer(v, v))
        return {key: (_dtype_name(value.dtype), _array(value)) for key, value in out.items()}

    ours, theirs = run("kiln"), run("torch")
    assert {k: d for k, (d, _) in ours.items()} == {k: d for k, (d, _) in theirs.items()}
    for key, (dtype, value) in theirs.items():
        if dtype == "float32":  # computed in float32 in both: to float32's rounding, not half's
            np.testing.assert_allclose(ours[key][1], value, rtol=1e-5, atol=1e-5 * np.abs(value).max(), err_msg=key)


def test_float32_list_ops_take_half_inputs_up_to_float32_as_torchs():
    """A half tensor (a Linear's output, say) reaching an op on the float32 list is cast up: the result is float32 and
    computed from the half values exactly as torch does (the inputs are bfloat16 numbers, so both see the same)."""

    def run(name):
        lib, _, F = libraries(name)
        a = np.random.default_rng(4).standard_normal((4, 4)).astype(np.float32)
        m, spd = lib.tensor(a).bfloat16(), lib.tensor(a @ a.T + 4 * np.eye(4, dtype=np.float32)).bfloat16()
        volume = lib.tensor(np.linspace(0.1, 1, 128, dtype=np.float32).reshape(1, 2, 4, 4, 4)).bfloat16()
        with lib.autocast("cpu"):
            out = dict(prod=m.prod(1), trace=m.trace(), inv=lib.linalg.inv(spd), inverse=spd.inverse(), cholesky=lib.linalg.cholesky(spd),
                       solve=lib.linalg.solve(spd, m), eigvalsh=lib.linalg.eigvalsh(spd), svdvals=lib.linalg.svdvals(m),
                       avg_pool3d=F.avg_pool3d(volume, 2), max_pool3d=F.max_pool3d(volume, 2), quantile=lib.quantile(m[0], 0.3),
                       adaptive_max_pool3d=F.adaptive_max_pool3d(volume, 2), fractional_max_pool2d=F.fractional_max_pool2d(
                           volume[:, :, 0], 2, output_size=2, _random_samples=lib.tensor(np.full((1, 2, 2), 0.5, np.float32))))
        return {key: (_dtype_name(value.dtype), _array(value)) for key, value in out.items()}

    ours, theirs = run("kiln"), run("torch")
    assert {k: d for k, (d, _) in theirs.items()} == dict.fromkeys(theirs, "float32")  # the oracle's own word
    assert {k: d for k, (d, _) in ours.items()} == dict.fromkeys(theirs, "float32")
    for key, (_, value) in theirs.items():
        np.testing.assert_allclose(ours[key][1], value, rtol=1e-5, atol=1e-5 * np.abs(value).max(), err_msg=key)


def test_values_of_listed_ops_are_torchs_in_each_dtype():
    torch = require_torch()
    x, w, b = (RNG.standard_normal(s).astype(np.float32) for s in ((5, 16), (7, 16), (7,)))
    for dtype in DTYPES:
        results = {}
        for lib in (kiln, torch):
            F = lib.nn.functional
            with lib.autocast("cpu", dtype=getattr(lib, dtype)):
                h = F.linear(lib.tensor(x), lib.tensor(w), lib.tensor(b))
                results[lib.__name__] = (h, lib.tensor(x) @ lib.tensor(w).T, F.cross_entropy(h, lib.tensor(np.arange(5) % 7)))
        for ours, theirs, what in zip(results["kiln"], results["torch"], ("linear", "matmul", "cross_entropy")):
            assert_half_close(ours, theirs, dtype, f"{dtype} {what}", ulps=2)  # one op (two roundings for linear)
        # the product alone is torch's to the bit: each computes it in float32 and rounds once
        np.testing.assert_array_equal(_array(results["kiln"][1]), _array(results["torch"][1]))


# compiled training steps ---------------------------------------------------------------------------------------------

class InForward:
    """The region inside the model's forward (``model.forward`` runs under autocast, the loss outside it)."""

    def __init__(self, lib, model, dtype):
        self.lib, self.model, self.dtype = lib, model, dtype

    def __call__(self, x):
        with self.lib.autocast("cpu", dtype=getattr(self.lib, self.dtype)):
            return self.model(x, Recorder())


def _compiled_training(model_name, dtype, where, optimizer_name, steps=3):
    make, shape, lr = MODELS[model_name]
    torch, model, twin = torch_twins(make)
    batches = _batch(shape, steps)

    def torch_step(x, y):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=getattr(torch, dtype)):
            logits = twin(torch.tensor(x), Recorder())
            if where == "loss":
                loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
        if where == "forward":  # the loss of half logits outside the region: half, as kiln's
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
        loss.backward()
        optimizer.step()
        return loss.item()

    optimizer = _optimizer(torch, optimizer_name, twin, lr)
    wrapped = kiln.nn.Module()
    wrapped.inner = model
    if where == "forward":
        wrapped.forward = InForward(kiln, model, dtype)
        loss_fn = kiln.nn.functional.cross_entropy
    else:  # the model and the loss both inside a region opened by the loss function (a decorator)
        wrapped.forward = lambda x: x
        loss_fn = kiln.autocast("cpu", dtype=getattr(kiln, dtype))(lambda x, y: kiln.nn.functional.cross_entropy(model(x, Recorder()), y))
    step = kiln.compile_train_step(wrapped, loss_fn, _optimizer(kiln, optimizer_name, model, lr))
    history = []
    for x, y in batches:
        before = _resync(torch, model, twin)
        losses = step(x, y), torch_step(x, y)
        updates = [(_array(p.data) - b, _array(q.detach()) - b) for p, q, b in zip(model.parameters(), twin.parameters(), before)]
        history.append((losses, updates))
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    return history, lr, str(step.graph)


@pytest.mark.parametrize("where", ["forward", "loss"])
@pytest.mark.parametrize("model_name, optimizer", [("mlp", "sgd"), ("cnn", "adam"), ("block", "adam")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_training_in_autocast_is_torchs(dtype, model_name, optimizer, where):
    history, lr, ir = _compiled_training(model_name, dtype, where, optimizer)
    for step, ((ours, theirs), updates) in enumerate(history):
        assert_half_close(ours, theirs, dtype, f"loss at step {step}")
        for index, (our_update, their_update) in enumerate(updates):
            assert_update_close(our_update, their_update, optimizer, lr, dtype, f"step {step}: update of parameter {index}")
    short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    assert f'"tensor.cast"' in ir and f"x{short}>) -> tensor<" in ir  # the casts and the half matmuls are in the IR
    loss_type = ir.split("%loss = ")[1].split("\n")[0].split("-> ")[-1]
    assert loss_type == ("tensor<f32>" if where == "loss" else f"tensor<{short}>")  # float32 inside the region, else half


def test_autocast_region_is_in_the_printed_ir_and_a_trace_outside_has_none():
    def forward(x, w):
        with kiln.autocast("cpu"):
            return (x @ w).sum()

    traced = kiln.trace(forward, kiln.TensorSpec((2, 3)), kiln.TensorSpec((3, 4)))
    text = str(traced)
    assert '"tensor.cast"(%x) {dtype = bf16}' in text and "tensor<2x4xbf16>" in text
    plain = str(kiln.trace(lambda x, w: (x @ w).sum(), kiln.TensorSpec((2, 3)), kiln.TensorSpec((3, 4))))
    assert "tensor.cast" not in plain and "bf16" not in plain


# the region itself ---------------------------------------------------------------------------------------------------

def test_decorator_nesting_and_state_follow_torch():
    def run(name):
        lib, _, F = libraries(name)
        x, w = lib.tensor(np.ones((2, 3), np.float32)), lib.tensor(np.ones((4, 3), np.float32))

        @lib.autocast("cpu", dtype=lib.float16)
        def decorated():
            with lib.autocast("cpu", enabled=False):
                off = F.linear(x, w)
            return F.linear(x, w), off, lib.is_autocast_enabled("cpu")

        with lib.autocast("cpu"):
            outer = F.linear(x, w)
            inner, off, enabled = decorated()
            back = F.linear(x, w)
        recursion = decorated()  # the same region object entered again
        return [_dtype_name(t.dtype) for t in (outer, inner, off, back, recursion[0])] + [enabled, lib.is_autocast_enabled("cpu")]

    assert run("kiln") == run("torch") == ["bfloat16", "float16", "float32", "bfloat16", "float16", True, False]


def test_an_exception_leaves_the_region():
    with pytest.raises(ZeroDivisionError):
        with kiln.autocast("cpu"):
            1 / 0
    assert not kiln.is_autocast_enabled("cpu")
    assert kiln.nn.functional.linear(kiln.ones(2, 3), kiln.ones(4, 3)).dtype == kiln.float32


def test_gradients_of_float32_inputs_through_the_casts_are_float32_and_torchs():
    torch = require_torch()
    x, w = RNG.standard_normal((3, 5)).astype(np.float32), RNG.standard_normal((4, 5)).astype(np.float32)
    grads = {}
    for lib in (kiln, torch):
        xt, wt = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
        with lib.autocast("cpu", dtype=lib.bfloat16):
            loss = (lib.nn.functional.linear(xt, wt) ** 2).sum()
        loss.backward()
        grads[lib.__name__] = (xt.grad, wt.grad)
    for ours, theirs in zip(grads["kiln"], grads["torch"]):
        assert _dtype_name(ours.dtype) == "float32"
        assert_half_close(ours, theirs, "bfloat16", "gradient", ulps=2)


def test_cache_enabled_casts_an_eager_parameter_once_per_region():
    from kiln.frontend import autocast as state

    layer = kiln.nn.Linear(3, 2)
    x = kiln.ones(4, 3)
    with kiln.autocast("cpu"):
        first, second = layer(x), layer(x)
        cached = dict(state._STATE.cache)
    assert len(cached) == 2 and not state._STATE.cache  # weight and bias, forgotten when the region exits
    np.testing.assert_array_equal(_array(first), _array(second))
    with kiln.autocast("cpu", cache_enabled=False):
        layer(x)
        assert not state._STATE.cache
    assert kiln.amp.is_autocast_cache_enabled()
    optimizer = kiln.optim.SGD(layer.parameters(), lr=1.0)
    with kiln.autocast("cpu"):
        layer(x).float().sum().backward()
        optimizer.step()  # writes the parameters: their cached casts are stale
        after_step = layer(x)
    with kiln.autocast("cpu"):
        fresh = layer(x)
    np.testing.assert_array_equal(_array(after_step), _array(fresh))
    assert not np.array_equal(_array(after_step), _array(first))
    with kiln.autocast("cpu"):
        with kiln.no_grad():
            layer(x)  # casts without a gradient link: not reused below
        layer.zero_grad()
        layer(x).float().sum().backward()
    assert layer.weight.grad is not None and np.abs(layer.weight.grad).sum() > 0


def test_custom_fwd_and_custom_bwd_are_torchs():
    """``cast_inputs``: the forward sees float32 and runs with autocast off, its backward too; without it the forward
    runs in the region and ``custom_bwd`` runs the backward in it again (the dtype of a product in each, recorded)."""

    def run(name):
        lib, _, _ = libraries(name)
        seen = []

        def define(cast_inputs):
            class Product(lib.autograd.Function):
                @staticmethod
                @lib.amp.custom_fwd(device_type="cpu", cast_inputs=cast_inputs)
                def forward(ctx, a, b):
                    ctx.save_for_backward(a, b)
                    product = a @ b
                    seen.append(("forward", _dtype_name(a.dtype), _dtype_name(product.dtype)))
                    return product.float()

                @staticmethod
                @lib.amp.custom_bwd(device_type="cpu")
                def backward(ctx, grad):
                    a, b = ctx.saved_tensors
                    grad_a = grad @ b.T
                    seen.append(("backward", _dtype_name(grad_a.dtype), lib.is_autocast_enabled("cpu")))
                    return grad_a.to(a.dtype), (a.T @ grad).to(b.dtype)

            return Product

        a = lib.tensor(np.ones((2, 3), np.float32), requires_grad=True)
        b = lib.tensor(np.full((3, 2), 0.5, np.float32), requires_grad=True)
        with lib.autocast("cpu"):
            outputs = define(lib.float32).apply(a.to(lib.bfloat16), b), define(None).apply(a, b)
        sum(output.sum() for output in outputs).backward()
        return sorted(seen), [_dtype_name(t.dtype) for t in (*outputs, a.grad, b.grad)], _array(a.grad), _array(b.grad)

    ours, theirs = run("kiln"), run("torch")
    assert ours[:2] == theirs[:2]
    assert theirs[0] == [("backward", "bfloat16", True), ("backward", "float32", False),
                         ("forward", "float32", "bfloat16"), ("forward", "float32", "float32")]
    np.testing.assert_allclose(ours[2], theirs[2]) and np.testing.assert_allclose(ours[3], theirs[3])


def test_cpu_amp_is_torchs_deprecated_spelling():
    torch = require_torch()
    import warnings

    for lib in (kiln, torch):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with lib.cpu.amp.autocast():
                dtype = _dtype_name((lib.ones(2, 3) @ lib.ones(3, 2)).dtype)
            scaler = lib.cpu.amp.GradScaler()
        assert dtype == "bfloat16" and scaler.is_enabled()
        assert [str(w.message).replace("torch.", "kiln.") for w in caught] == [
            "`kiln.cpu.amp.autocast(args...)` is deprecated. Please use `kiln.amp.autocast('cpu', args...)` instead.",
            "`kiln.cpu.amp.GradScaler(args...)` is deprecated. Please use `kiln.amp.GradScaler('cpu', args...)` instead."]


# GradScaler with real float16 gradients ------------------------------------------------------------------------------

def _scaled_float16_training(lib, model, scaler, batches, lr):
    """Eager float16-autocast SGD through ``scaler``: per step the scale, the growth tracker, whether the parameters
    moved, and the parameters."""
    optimizer = lib.optim.SGD(model.parameters(), lr=lr)
    history = []
    for x, y in batches:
        optimizer.zero_grad()
        with lib.autocast("cpu", dtype=lib.float16):
            loss = lib.nn.functional.cross_entropy(model(lib.tensor(x), Recorder()), lib.tensor(y))
        before = [_array(p.detach()).copy() for p in model.parameters()]
        scaler.scale(loss).backward()
        grads = [_array(p.grad) for p in model.parameters()]
        scaler.step(optimizer)
        scaler.update()
        after = [_array(p.detach()) for p in model.parameters()]
        moved = any(not np.array_equal(b, a) for b, a in zip(before, after))
        history.append((scaler.get_scale(), scaler.state_dict()["_growth_tracker"], moved, after,
                        all(np.isfinite(g).all() for g in grads)))
    return history


def test_grad_scaler_with_float16_autocast_is_torchs_step_by_step():
    """A scale of 2**20 makes the float16 backward overflow (inf gradients): those steps are skipped and the scale
    halves, until the gradients fit; then clean steps grow it every growth_interval; all as torch's."""
    torch, model, twin = torch_twins(make_mlp)
    batches = [(x * 4, y) for x, y in _batch((8, 6), 9)]
    make = lambda lib: lib.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=3)  # noqa: E731
    ours = _scaled_float16_training(kiln, model, make(kiln), batches, 0.05)
    theirs = _scaled_float16_training(torch, twin, make(torch), batches, 0.05)
    assert [h[:3] for h in ours] == [h[:3] for h in theirs]
    assert [h[2] for h in theirs][:2] == [False, False] and not theirs[0][4]  # the oracle overflowed and skipped first
    assert any(later[0] > earlier[0] for earlier, later in zip(theirs, theirs[1:]))  # ... and grew the scale again later
    for step, (our, their) in enumerate(zip(ours, theirs)):
        for p, q in zip(our[3], their[3]):
            assert_half_close(p, q, "float16", f"parameters after step {step}")


def test_grad_scaler_refuses_float16_gradients_and_misuse_as_torch():
    torch = require_torch()
    messages = []
    for lib in (kiln, torch):
        p = lib.nn.Parameter(lib.ones(3).half() if lib is torch else np.ones(3, np.float16))
        optimizer = lib.optim.SGD([p], lr=0.1)
        scaler = lib.amp.GradScaler("cpu")
        with pytest.raises(AssertionError) as before_scale:
            scaler.step(optimizer)
        scaler.scale((p * p).sum()).backward()
        with pytest.raises(ValueError) as half:
            scaler.step(optimizer)
        q = lib.nn.Parameter(lib.ones(3) if lib is torch else np.ones(3, np.float32))
        other = lib.optim.SGD([q], lr=0.1)
        scaler.scale((q * q).sum()).backward()
        scaler.step(other)
        with pytest.raises(RuntimeError) as twice:
            scaler.step(other)
        with pytest.raises(RuntimeError) as unscale_after:
            scaler.unscale_(other)
        messages.append([str(e.value) for e in (before_scale, half, twice, unscale_after)])
    assert messages[0] == messages[1]


def test_grad_scaler_scale_is_float32_as_torchs():
    torch = require_torch()
    histories = []
    for lib in (kiln, torch):
        p = lib.nn.Parameter(lib.tensor(np.array([1.0, 2.0], np.float32)) if lib is torch else np.array([1.0, 2.0], np.float32))
        optimizer = lib.optim.SGD([p], lr=0.1)
        scaler = lib.amp.GradScaler("cpu", init_scale=0.1, growth_factor=1.1, backoff_factor=0.3, growth_interval=1)
        history = [scaler.state_dict()["scale"]]
        for factor in (1.0, 1e39, 1.0):  # 1e39 overflows float32: the middle step is skipped, the scale backs off
            optimizer.zero_grad()
            scaled = scaler.scale((p * p * factor).sum())
            history.append(_dtype_name(scaled.dtype))
            scaled.backward()
            scaler.step(optimizer)
            scaler.update()
            history.append(scaler.get_scale())
        histories.append(history)
    assert histories[0] == histories[1]
    assert histories[1][2] == float(np.float32(float(np.float32(0.1)) * 1.1))  # the oracle rounds the scale to float32



def test_grad_scaler_declines_a_growth_past_float32_quietly_as_torch():
    """A scale whose growth would overflow float32 (timm's NativeScaler with a huge init_scale) stays where it is, with
    no warning: torch's float32 tensor product overflows to inf silently and ``_amp_update_scale_`` declines it."""
    import warnings

    torch = require_torch()
    scales = []
    for lib in (kiln, torch):
        p = lib.nn.Parameter(lib.tensor(np.array([1.0, 2.0])))
        optimizer = lib.optim.SGD([p], lr=0.1)
        scaler = lib.amp.GradScaler("cpu", init_scale=3e38, growth_interval=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(2):
                scaler.scale((p * p).sum()).backward()  # float64 gradients: finite, so the scale tries to grow
                scaler.step(optimizer)
                scaler.update()
        scales.append(scaler.state_dict())
    assert scales[0] == scales[1]
    assert scales[1]["scale"] == float(np.float32(3e38))

def test_a_listed_function_runs_its_body_with_autocast_off():
    """As PyTorch's dispatcher excludes autocast below an autocast kernel: a float32-list function built from ops on
    the lower-precision list computes them in float32, and its result stays float32."""
    from kiln.frontend.autocast import autocasts

    @autocasts("cdist")
    def distances(a, b):
        inner = a @ b.T  # matmul is on the lower-precision list: not cast here
        return inner, (a * a).sum(-1, keepdim=True) - 2 * inner + (b * b).sum(-1)

    a, b = kiln.ones(3, 4), kiln.ones(5, 4).half()
    with kiln.autocast("cpu"):
        inner, result = distances(a, b)  # b arrives float16: cast to float32 with the rest
        outside = a @ b.float().T
    assert (inner.dtype, result.dtype, outside.dtype) == (kiln.float32, kiln.float32, kiln.bfloat16)


def test_compiled_code_called_in_and_out_of_a_region_traces_each_once():
    """A compiled function or step keys its graphs on the region's dtype too (torch.compile guards on autocast)."""
    forward = kiln.compile(lambda x: x @ kiln.ones(3, 2))
    x = np.ones((2, 3), np.float32)
    outside = forward(x).dtype
    with kiln.autocast("cpu"):
        inside = forward(x).dtype
        with kiln.autocast("cpu", dtype=kiln.float16):
            half = forward(x).dtype
    assert (outside, inside, half, forward(x).dtype) == (np.float32, kiln.bfloat16.numpy, np.float16, np.float32)
    assert len(forward.variants) == 3

    model = kiln.nn.Linear(3, 2)
    step = kiln.compile_train_step(model, kiln.nn.functional.mse_loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    target = np.zeros((2, 2), np.float32)
    step(x, target)
    assert "bf16" not in str(step.graph)
    with kiln.autocast("cpu"):
        step(x, target)
    assert "xbf16>" in str(step.graph) and len(step.compiled) == 2

    gradient = kiln.grad(lambda a: (a @ kiln.full((3, 2), 1.01)).sum())
    exact = np.asarray(gradient(x))
    with kiln.autocast("cpu"):
        rounded = np.asarray(gradient(x))
    assert len(gradient.compiled) == 2 and not np.array_equal(exact, rounded)  # 1.01 is not a bfloat16


def test_cuda_region_with_a_gpu_casts_by_the_same_lists_in_float16(monkeypatch):
    """With CuPy and a GPU, ``autocast("cuda")`` computes (float16 by default) by the CPU lists; a "cpu" region inside
    it then decides, as the innermost region kiln computes in; without a GPU the "cuda" region stays a no-op."""
    import kiln.frontend.torch_amp as torch_amp

    monkeypatch.setattr(torch_amp, "_gpu_available", lambda: True)
    x, w = kiln.ones(2, 3), kiln.ones(4, 3)
    with kiln.autocast("cuda"):
        on_gpu = kiln.nn.functional.linear(x, w)
        loss = kiln.nn.functional.mse_loss(on_gpu, kiln.zeros(2, 4))
        with kiln.autocast("cpu"):
            inner = kiln.nn.functional.linear(x, w)
        states = kiln.is_autocast_enabled("cuda"), kiln.is_autocast_enabled(), kiln.is_autocast_enabled("cpu")
    assert (on_gpu.dtype, loss.dtype, inner.dtype) == (kiln.float16, kiln.float32, kiln.bfloat16)
    assert states == (True, True, False) and kiln.get_autocast_dtype("cuda") == kiln.float16
    monkeypatch.setattr(torch_amp, "_gpu_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        with kiln.autocast("cuda"):
            assert kiln.nn.functional.linear(x, w).dtype == kiln.float32


LIBRARY_MODULES = {  # name: (make, call)
    "encoder_layer": (lambda lib: lib.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), lambda m, t: m(t)),
    "multihead_attention": (lambda lib: lib.nn.MultiheadAttention(8, 2, batch_first=True), lambda m, t: m(t, t, t, need_weights=False)[0]),
    "multihead_attention_weights": (lambda lib: lib.nn.MultiheadAttention(8, 2, batch_first=True), lambda m, t: m(t, t, t)[0]),
    "gru": (lambda lib: lib.nn.GRU(8, 6, batch_first=True), lambda m, t: m(t)[0]),
}


@pytest.mark.parametrize("module", sorted(LIBRARY_MODULES))
def test_library_modules_in_a_bfloat16_region_are_torchs(module):
    """torch's own layers (its TransformerEncoderLayer, MultiheadAttention, GRU run their Python paths in training
    mode): the output's dtype, its values and the input's gradient."""
    make, call = LIBRARY_MODULES[module]
    torch, model, twin = torch_twins(make)
    x = np.random.default_rng(5).standard_normal((2, 5, 8)).astype(np.float32)
    results = {}
    for lib, layer in ((kiln, model), (torch, twin)):
        inputs = lib.tensor(x, requires_grad=True)
        with lib.autocast("cpu"):
            out = call(layer, inputs)
        weights = lib.tensor(np.linspace(-1, 1, out.numel(), dtype=np.float32).reshape(tuple(out.shape)))
        (out.float() * weights).sum().backward()
        results[lib.__name__] = (_dtype_name(out.dtype), _array(out), _array(inputs.grad))
    ours, theirs = results["kiln"], results["torch"]
    assert ours[0] == theirs[0]
    assert_half_close(ours[1], theirs[1], "bfloat16", f"{module} output")
    assert_half_close(ours[2], theirs[2], "bfloat16", f"{module} input gradient")


def test_pad_modes_are_cast_as_torchs_listed_pads():
    """reflection_pad1d/2d and replication_pad1d/2d/3d are on the float32 list; reflect in 3-d, circular and constant
    padding are on none: one ``F.pad``, dtypes as torch's for each mode and rank."""

    def dtypes(name):
        lib, _, F = libraries(name)
        seen = []
        with lib.autocast("cpu"):
            for mode in ("reflect", "replicate", "circular", "constant"):
                for shape, pads in (((1, 2, 5), (1, 1)), ((1, 2, 5, 5), (1, 1, 1, 1)), ((1, 2, 5, 5, 5), (1, 1, 1, 1, 1, 1))):
                    padded = F.pad(lib.tensor(np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)).bfloat16(), pads, mode=mode)
                    seen.append((mode, len(shape), _dtype_name(padded.dtype), float(padded.float().sum())))
        return seen

    theirs = dtypes("torch")
    assert [dtype for _, _, dtype, _ in theirs].count("float32") == 5
    assert dtypes("kiln") == theirs


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_exported_autocast_region_runs_in_onnxruntime_as_in_kiln(dtype, tmp_path):
    """The region's casts are ordinary IR casts: exported, onnxruntime computes the same half ops (ONNX Cast,
    MatMul... in float16/bfloat16) and gives kiln's result, and torch's dtypes for the region."""
    from oracles import require

    ort = require("onnxruntime")

    class Model(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = kiln.nn.Linear(6, 8), kiln.nn.Linear(8, 3)

        def forward(self, x):
            with kiln.autocast("cpu", dtype=getattr(kiln, dtype)):
                probabilities = kiln.nn.functional.softmax(self.fc2(kiln.nn.functional.relu(self.fc1(x))), -1)
            assert _dtype_name(probabilities.dtype) == dtype  # computed in half (onnxruntime's Python API has no bfloat16 arrays: cast up)
            return probabilities.float()

    kiln.manual_seed(0)
    model = Model().eval()
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    ours = model(kiln.tensor(x))
    kiln.export_onnx(model, [kiln.TensorSpec((4, 6))], str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    (theirs,) = session.run(None, {session.get_inputs()[0].name: x})
    short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    assert f"x{short}>" in str(kiln.trace(model, kiln.TensorSpec((4, 6))))  # the half ops are in the exported graph
    np.testing.assert_array_equal(theirs, ours.numpy())
