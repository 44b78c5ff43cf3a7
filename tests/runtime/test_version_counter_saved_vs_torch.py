"""``backward()`` after an in-place write refuses exactly where PyTorch 2.13's does: when the backward needs a value the
write overwrote (an op saved it: ``mul`` both operands, ``exp``/``relu``/``sigmoid`` their result, ``add`` nothing, an
operand only where another one requires grad), with PyTorch's words, tensor type and versions
(``runtime/saved_versions.py``, ``frontend/version_counter.py``). Each case runs once on each library."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _parameter(lib, values=(1.0, -2.0, 3.0)):
    make = kiln.nn.Parameter if lib is kiln else lib.nn.Parameter
    return make(lib.tensor(np.array(values)))


def _plain(lib, values=(1.0, 1.0, 1.0)):
    return lib.tensor(np.array(values))


def add_then_buffer_copied(lib):
    w, buffer = _parameter(lib), _plain(lib)
    y = w + buffer
    buffer.copy_(_plain(lib, (5.0, 5.0, 5.0)))
    return y.sum()


def mul_then_buffer_copied(lib):
    w, buffer = _parameter(lib), _plain(lib)
    y = w * buffer
    buffer.copy_(_plain(lib, (5.0, 5.0, 5.0)))
    return y.sum()


def mul_by_constant_then_parameter_written_under_no_grad(lib):
    w = _parameter(lib)
    y = w * 2.0
    with lib.no_grad():
        w.mul_(0.5)
    return y.sum()


def square_then_parameter_written_under_no_grad(lib):
    w = _parameter(lib)
    y = w * w
    with lib.no_grad():
        w.add_(1.0)
    return y.sum()


def square_then_parameter_data_written(lib):
    w = _parameter(lib)
    y = w * w
    w.data.mul_(0.5)
    return y.sum()


def add_then_parameter_copied_under_no_grad(lib):
    w = _parameter(lib)
    y = w + 1.0
    with lib.no_grad():
        w.copy_(_plain(lib, (0.0, 0.0, 0.0)))
    return y.sum()


def exp_result_written(lib):
    y = (_parameter(lib) * 1.0).exp()
    y.add_(1.0)
    return y.sum()


def sigmoid_result_written_twice(lib):
    y = _parameter(lib).sigmoid()
    loss = y.sum()
    y.mul_(2.0)
    y.mul_(2.0)
    return loss


def relu_result_written(lib):
    y = (_parameter(lib) + 1.0).relu()
    loss = y.sum()
    y.add_(1.0)
    return loss


def relu_input_written(lib):
    h = _parameter(lib) + 1.0
    y = h.relu()
    h.add_(1.0)
    return y.sum()


def mul_operand_written(lib):
    w = _parameter(lib)
    h = w + 1.0
    y = h * w
    h.add_(1.0)
    return y.sum()


def add_operand_written(lib):
    w = _parameter(lib)
    h = w * 3.0
    y = h + w
    h.add_(1.0)
    return y.sum()


def sin_of_constant_input_written(lib):
    x = _plain(lib)
    y = x.sin() * _parameter(lib)
    x.add_(1.0)
    return y.sum()


def mul_of_plain_input_written(lib):
    x = _plain(lib)
    y = (x * _parameter(lib)).sigmoid()
    x.add_(1.0)
    return y.sum()


def divisor_written(lib):
    b = _plain(lib, (1.0, 2.0, 4.0))
    y = _parameter(lib) / b
    b.mul_(2.0)
    return y.sum()


def dividend_written(lib):
    b = _plain(lib, (1.0, 2.0, 4.0))
    y = b / _parameter(lib)
    b.mul_(2.0)
    return y.sum()


def matmul_operand_written(lib):
    a = lib.tensor(np.arange(6.0).reshape(2, 3))
    y = a @ _parameter(lib)
    a.mul_(2.0)
    return y.sum()


def matmul_operand_index_assigned(lib):
    w = _parameter(lib)
    h = w + 1.0
    y = h @ w
    h[0] = 5.0
    return y.sum()


def view_of_written_base(lib):
    x = _plain(lib)
    view = x[0:2]
    y = view * _parameter(lib, (1.0, 2.0))
    x.add_(1.0)
    return y.sum()


def mean_then_input_written(lib):
    h = _parameter(lib) * 2.0
    y = h.mean()
    h.add_(1.0)
    return y


def tanh_then_written_after_backward_graph_built(lib):
    h = _parameter(lib).tanh()
    y = (h * 2.0).sum()
    h.zero_()
    return y


def written_before_the_read(lib):
    h = _parameter(lib) * 1.0
    h.add_(1.0)
    return (h * h).sum()


def _matrix_parameter(lib):
    return _parameter(lib, np.arange(9.0).reshape(3, 3) / 10)


def transposed_weight_read_by_a_varying_input_then_updated(lib):
    w = _matrix_parameter(lib)
    y = (_parameter(lib) * 1.0) @ w.t()
    with lib.no_grad():
        w.sub_(0.1)
    return y.sum()


def transposed_weight_read_by_a_constant_input_then_updated(lib):
    w = _matrix_parameter(lib)
    y = (_plain(lib) @ w.t()).tanh()
    with lib.no_grad():
        w.sub_(0.1)
    return y.sum()


def marked_leaf_written_under_no_grad(lib):
    x = _plain(lib).requires_grad_()
    y = x * x
    with lib.no_grad():
        x.add_(1.0)
    return y.sum()


def marked_leaf_summed_then_written_under_no_grad(lib):
    x = _plain(lib).requires_grad_()
    y = (x + 1.0).sum()
    with lib.no_grad():
        x.add_(1.0)
    return y, x  # x kept alive: its .grad is filled


def _functional(lib):
    return kiln.nn.functional if lib is kiln else lib.nn.functional


def silu_in_place(lib):
    x = _parameter(lib) * 1.0
    _functional(lib).silu(x, inplace=True)
    return x.sum()


def silu_in_place_then_written_again(lib):
    x = _parameter(lib) * 1.0
    _functional(lib).silu(x, inplace=True)
    x.add_(1.0)
    return x.sum()


def mul_in_place_by_a_parameter_then_written_again(lib):
    w = _parameter(lib)
    x = w * 1.0
    x.mul_(w)
    x.add_(1.0)
    return x.sum()


def exp_in_place_then_written_again(lib):
    x = _parameter(lib) * 1.0
    x.exp_()
    x.mul_(2.0)
    return x.sum()


def log_and_pow_in_place(lib):
    x = _parameter(lib, (1.0, 2.0, 3.0)) * 1.0
    x.log_()
    x.pow_(2)
    return x.sum()


def relu_in_place_then_read_by_mul(lib):
    w = _parameter(lib)
    x = w * 1.0
    x.relu_()
    return (x * w).sum()


def _logits(lib):
    return _parameter(lib, np.array([[0.5, -1.0, 2.0, 0.3], [1.5, -0.2, 0.7, -0.9]])) * 1.0


def reciprocal_input_written(lib):
    x = _logits(lib)
    y = 1.0 / x
    x.add_(0.25)
    return y.sum()


def cross_entropy_logits_written(lib):
    x = _logits(lib)
    loss = _functional(lib).cross_entropy(x, lib.tensor(np.array([0, 3])))
    x.add_(0.25)
    return loss


def cross_entropy_target_written(lib):
    target = lib.tensor(np.array([0, 3]))
    loss = _functional(lib).cross_entropy(_logits(lib), target)
    target.sub_(0)
    return loss


def softmax_result_written(lib):
    y = _functional(lib).softmax(_logits(lib), dim=-1)
    loss = (y * y).sum()
    y.mul_(2.0)
    return loss


def gelu_input_written(lib):
    x = _logits(lib)
    y = _functional(lib).gelu(x)
    x.add_(0.25)
    return y.sum()


CASES = [reciprocal_input_written, cross_entropy_logits_written, cross_entropy_target_written, softmax_result_written,
         gelu_input_written,
         silu_in_place, silu_in_place_then_written_again, mul_in_place_by_a_parameter_then_written_again,
         exp_in_place_then_written_again, log_and_pow_in_place, relu_in_place_then_read_by_mul,
         marked_leaf_written_under_no_grad, marked_leaf_summed_then_written_under_no_grad,
         transposed_weight_read_by_a_varying_input_then_updated,
         transposed_weight_read_by_a_constant_input_then_updated,
         add_then_buffer_copied, mul_then_buffer_copied, mul_by_constant_then_parameter_written_under_no_grad,
         square_then_parameter_written_under_no_grad, square_then_parameter_data_written,
         add_then_parameter_copied_under_no_grad, exp_result_written, sigmoid_result_written_twice, relu_result_written,
         relu_input_written, mul_operand_written, add_operand_written, sin_of_constant_input_written,
         mul_of_plain_input_written, divisor_written, dividend_written, matmul_operand_written,
         matmul_operand_index_assigned, view_of_written_base, mean_then_input_written,
         tanh_then_written_after_backward_graph_built, written_before_the_read]

_VERSIONS = re.compile(r"\[torch\.\w+ \[[\d, ]*\]\].*?is at version \d+; expected version \d+")


def _outcome(lib, case) -> str | None:
    """None when backward() runs, else its message's tensor, versions part."""
    loss, *_alive = (lambda made: made if isinstance(made, tuple) else (made,))(case(lib))
    try:
        loss.backward()
    except RuntimeError as error:
        assert "needed for gradient computation has been modified by an inplace operation" in str(error)
        found = _VERSIONS.search(str(error))
        assert found is not None, str(error)
        return re.sub(r", which is output \d+ of \S+,", "", found.group(0))
    return None


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_backward_refuses_iff_torch_refuses(case):
    torch = require_torch()
    torch.set_default_dtype(torch.float64)
    try:
        expected = _outcome(torch, case)
    finally:
        torch.set_default_dtype(torch.float32)
    assert _outcome(kiln, case) == expected


def test_the_message_names_the_user_line_and_what_made_the_value():
    with pytest.raises(kiln.TraceError, match=r"test_version_counter_saved_vs_torch.py:\d+") as raised:
        exp_result_written(kiln).backward()
    assert "which is output 0 of Exp, is at version 1; expected version 0 instead" in str(raised.value)


def test_a_saved_value_written_then_recomputed_trains_as_torch():
    """A training loop that writes its buffer after each backward (an EMA) is never refused."""
    torch = require_torch()
    grads = {}
    for lib in (kiln, torch):
        w, buffer = _parameter(lib), _plain(lib, (1.0, 2.0, 3.0))
        for _ in range(3):
            (w * buffer).sum().backward()
            with lib.no_grad():
                buffer.mul_(0.5).add_(w)
        grads[lib.__name__] = np.asarray(w.grad)
    np.testing.assert_allclose(grads["kiln"], grads["torch"], rtol=1e-12)


@pytest.mark.parametrize("write", ["weight under no_grad", "nothing"])
def test_a_compiled_call_on_the_chain_refuses_as_torch_eager(write):
    """A ``kiln.compile``d module's call is one op of the eager chain; its residuals (the weight's transpose) are
    computed inside, so a weight written after the call refuses backward() as PyTorch's eager module does."""
    torch = require_torch()
    outcomes = []
    for lib, module in ((kiln, kiln.compile(kiln.nn.Linear(3, 3).double())), (torch, torch.nn.Linear(3, 3).double())):
        x = lib.tensor(np.ones((2, 3))).requires_grad_()
        loss = module(x).tanh().sum()
        if write != "nothing":
            with lib.no_grad():
                module.weight.mul_(2.0)
        try:
            loss.backward()
            outcomes.append("ran")
        except RuntimeError as error:
            assert "modified by an inplace operation" in str(error)
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1] == ("ran" if write == "nothing" else "refused")


def _spectral_norm_net(lib):
    return lib.nn.Sequential(lib.nn.utils.spectral_norm(lib.nn.Linear(2, 4)), lib.nn.Tanh(), lib.nn.Linear(4, 1))


@pytest.mark.parametrize("second", ["eager", "compiled"])
def test_a_compiled_spectral_norm_call_then_another_forward_trains_as_torch(second):
    """JEM's ``f(x_p) ... f.classify(x_lab)`` with spectral-normed layers: a compiled call in training mode writes
    ``weight_u``/``weight_v`` (the power iteration, under ``no_grad``) and its backward reads copies of them, so a second
    forward writing them again before ``backward()`` leaves the first one's gradient alone, as in PyTorch. The compiled
    call counted every input as saved and refused, where the next forward was eager."""
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((5, 2))
    kiln.manual_seed(0)
    ours = _spectral_norm_net(kiln).double()
    theirs = _spectral_norm_net(torch).double()
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    grads = []
    for lib, net in ((kiln, ours), (torch, theirs)):
        run = kiln.compile(net, fullgraph=True) if lib is kiln else net
        again = run if second == "compiled" else net
        loss = run(lib.tensor(x)).sum() - again(lib.tensor(2 * x)).sum()
        loss.backward()
        grads.append({name: np.array(p.grad) for name, p in net.named_parameters()})
        grads[-1]["weight_u"] = np.array(net[0].weight_u)
    for name in grads[1]:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_a_compiled_call_writing_a_buffer_another_call_saved_refuses_as_torch():
    """A compiled call in eval mode reads ``weight_u`` itself (saved, as PyTorch's ``mul`` saves it); a compiled call in
    training mode then writes it: the first call's ``backward()`` refuses, as PyTorch's. The compiled call's buffer
    write was not counted, so the backward read the new values silently."""
    torch = require_torch()
    outcomes = []
    for lib in (kiln, torch):
        net = _spectral_norm_net(lib).double()
        run = kiln.compile(net, fullgraph=True) if lib is kiln else net
        x = lib.tensor(np.ones((3, 2)))
        net.eval()
        loss = run(x).sum()
        net.train()
        run(x)
        try:
            loss.backward()
            outcomes.append("ran")
        except RuntimeError as error:
            assert "modified by an inplace operation" in str(error)
            outcomes.append("refused")
    assert outcomes == ["refused", "refused"]
