"""``autograd.gradcheck`` / ``gradgradcheck`` and the grad-mode names of ``autograd``, written once against torch's
names and run on kiln and on torch: the same functions get the same verdicts (``frontend/gradcheck.py``).

The wrong backwards (twice the gradient, a gradient not multiplied by ``grad_output``, a double backward through a
detached saved tensor) are what a stub returning True would pass: each must fail in both libraries.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from oracles import libraries

LIBRARIES = ["kiln", "torch"]


def _inputs(lib, *shapes, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    return tuple(lib.tensor(rng.standard_normal(shape), dtype=getattr(lib, dtype), requires_grad=True)
                 for shape in shapes)


def _gradcheck_error(lib):
    return importlib.import_module(f"{lib.__name__}.autograd.gradcheck").GradcheckError


def _functions(lib):
    """Custom ``autograd.Function``s: a right backward, a doubled one, one not multiplied by its ``grad_output`` at
    zero, and a cube whose backward is right but reads its saved input detached (so its double backward is wrong)."""

    class Exp(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y

    class DoubledSin(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * grad * x.cos()

    class OffsetSin(lib.autograd.Function):
        """Right for unit ``grad_outputs`` (where ``max |grad| = 1``), not zero for a zero one."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x.cos() + (1 - grad.abs().amax())

    class DetachedCube(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 3 * x.detach() ** 2

    return {"exp": Exp, "doubled": DoubledSin, "offset": OffsetSin, "detached_cube": DetachedCube}


def _correct_case(name, lib):
    """``(func, inputs)`` of a function whose gradients are right."""
    _, nn, F = libraries(lib.__name__)
    if name == "matmul_tanh":
        return (lambda a, b: (a @ b).tanh()), _inputs(lib, (3, 4), (4, 2))
    if name == "softmax":
        return (lambda x: F.softmax(x, dim=-1)), _inputs(lib, (2, 5))
    if name == "linear":
        lib.manual_seed(0)
        linear = nn.Linear(3, 2).double()
        return (lambda x, w, b: lib.func.functional_call(linear, {"weight": w, "bias": b}, (x,))), \
            _inputs(lib, (4, 3), (2, 3), (2,))
    return _functions(lib)["exp"].apply, _inputs(lib, (2, 3))


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize("case", ["matmul_tanh", "softmax", "linear", "custom_function"])
def test_gradcheck_passes_right_gradients(name, case):
    lib = libraries(name)[0]
    func, inputs = _correct_case(case, lib)
    assert lib.autograd.gradcheck(func, inputs) is True


@pytest.mark.parametrize("name", LIBRARIES)
def test_gradcheck_leaves_the_inputs_as_they_were(name):
    lib = libraries(name)[0]
    func, inputs = _correct_case("matmul_tanh", lib)
    before = [x.detach().numpy().copy() for x in inputs]
    lib.autograd.gradcheck(func, inputs)
    assert all(np.array_equal(x.detach().numpy(), b) for x, b in zip(inputs, before))


@pytest.mark.parametrize("name", LIBRARIES)
def test_wrong_backward_raises_gradcheck_error_with_torchs_message(name):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (3,))
    with pytest.raises(_gradcheck_error(lib)) as caught:
        lib.autograd.gradcheck(_functions(lib)["doubled"].apply, (x,))
    assert isinstance(caught.value, RuntimeError)
    message = str(caught.value)
    assert message.startswith("Jacobian mismatch for output 0 with respect to input 0,\nnumerical:tensor([[")
    assert "\nanalytical:tensor([[" in message


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize("fast_mode", [False, True])
def test_wrong_backward_is_false_without_raise_exception(name, fast_mode):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (3,))
    doubled, exp = _functions(lib)["doubled"], _functions(lib)["exp"]
    assert lib.autograd.gradcheck(doubled.apply, (x,), raise_exception=False, fast_mode=fast_mode) is False
    assert lib.autograd.gradcheck(exp.apply, (x,), raise_exception=False, fast_mode=fast_mode) is True


@pytest.mark.parametrize("name", LIBRARIES)
def test_wrong_second_input_is_named(name):
    lib = libraries(name)[0]
    doubled = _functions(lib)["doubled"]
    a, b = _inputs(lib, (3,), (3,))
    with pytest.raises(_gradcheck_error(lib), match="^Jacobian mismatch for output 0 with respect to input 1,"):
        lib.autograd.gradcheck(lambda a, b: a.tanh() + doubled.apply(b), (a, b))


@pytest.mark.parametrize("name", LIBRARIES)
def test_backward_not_multiplied_by_grad_output(name):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (3,))
    with pytest.raises(_gradcheck_error(lib), match="backward not multiplied by grad_output"):
        lib.autograd.gradcheck(_functions(lib)["offset"].apply, (x,))


@pytest.mark.parametrize("name", LIBRARIES)
def test_float32_input_warns_as_torch(name):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (2, 3), dtype="float32")
    with pytest.warns(UserWarning, match="^Input #0 requires gradient and is not a double precision floating point or "
                                         "complex. This check will likely fail"):
        assert lib.autograd.gradcheck(lambda x: x.tanh(), (x,), eps=1e-3, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("name", LIBRARIES)
def test_double_inputs_do_not_warn(name):
    lib = libraries(name)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lib.autograd.gradcheck(lambda x: x.tanh(), _inputs(lib, (2, 3)))


@pytest.mark.parametrize("name", LIBRARIES)
def test_no_input_requiring_grad_is_a_value_error(name):
    lib = libraries(name)[0]
    x = _inputs(lib, (3,))[0].detach()
    with pytest.raises(ValueError, match="gradcheck expects at least one input tensor to require gradient, but none "
                                         "of them have requires_grad=True."):
        lib.autograd.gradcheck(lambda x: x.sin(), (x,))


@pytest.mark.parametrize("name", LIBRARIES)
def test_an_output_that_is_not_a_tensor_is_torchs_attribute_error(name):
    lib = libraries(name)[0]
    with pytest.raises(AttributeError, match="'float' object has no attribute 'requires_grad'"):
        lib.autograd.gradcheck(lambda x: 3.0, _inputs(lib, (3,)))


@pytest.mark.parametrize("name", LIBRARIES)
def test_non_tensor_inputs_pass_through_and_integer_outputs_are_left_out(name):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (3,))
    assert lib.autograd.gradcheck(lambda x, k: (x.sin() * k, x.argmax()), (x, 2.5))


@pytest.mark.parametrize("name", LIBRARIES)
def test_an_output_cut_from_its_input_fails(name):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (3,))
    assert lib.autograd.gradcheck(lambda x: x.detach() * 2, (x,), raise_exception=False) is False
    with pytest.raises(_gradcheck_error(lib), match="Numerical gradient for function expected to be zero"):
        lib.autograd.gradcheck(lambda x: x.detach() * 2, (x,))


@pytest.mark.parametrize("name", LIBRARIES)
def test_batched_grad_and_forward_ad_checks_pass_right_gradients(name):
    lib = libraries(name)[0]
    func, inputs = _correct_case("matmul_tanh", lib)
    assert lib.autograd.gradcheck(func, inputs, check_batched_grad=True, check_forward_ad=True,
                                  check_batched_forward_grad=True)
    assert lib.autograd.gradcheck(func, inputs, check_forward_ad=True, check_backward_ad=False)


def test_forward_ad_check_follows_a_functions_backward_in_kiln():
    """kiln's tangents are the VJP of the VJP, so a doubled backward fails the forward-mode check too (torch would
    ask the Function for a ``jvp``): proof that ``check_forward_ad`` compares something."""
    lib = libraries("kiln")[0]
    (x,) = _inputs(lib, (3,))
    doubled = _functions(lib)["doubled"].apply
    with pytest.raises(lib.autograd.GradcheckError, match="^Jacobian computed with forward mode mismatch for output 0"):
        lib.autograd.gradcheck(doubled, (x,), check_forward_ad=True, check_backward_ad=False)


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize("case", ["tanh", "sin", "matmul"])
def test_gradgradcheck_passes_right_second_derivatives(name, case):
    lib = libraries(name)[0]
    funcs = {"tanh": lambda x: x.tanh(), "sin": lambda x: x.sin() * x,
             "matmul": lambda a, b: (a @ b).tanh().sin()}
    inputs = _inputs(lib, (3, 4), (4, 2)) if case == "matmul" else _inputs(lib, (2, 3))
    assert lib.autograd.gradgradcheck(funcs[case], inputs) is True


@pytest.mark.parametrize("name", LIBRARIES)
def test_gradgradcheck_with_given_grad_outputs(name):
    lib = libraries(name)[0]
    a, b = _inputs(lib, (3, 4), (4, 2))
    (seed,) = _inputs(lib, (3, 2), seed=1)
    assert lib.autograd.gradgradcheck(lambda a, b: (a @ b).tanh(), (a, b), (seed,))
    assert lib.autograd.gradgradcheck(lambda a, b: (a @ b).tanh(), (a, b), gen_non_contig_grad_outputs=True)


@pytest.mark.parametrize("name", LIBRARIES)
def test_gradgradcheck_finds_a_backward_that_is_not_differentiable(name):
    lib = libraries(name)[0]
    cube = _functions(lib)["detached_cube"].apply
    (x,) = _inputs(lib, (3,))
    assert lib.autograd.gradcheck(cube, (x,)) is True  # the first derivative is right
    assert lib.autograd.gradgradcheck(cube, (x,), raise_exception=False) is False
    with pytest.raises(_gradcheck_error(lib), match="^Jacobian mismatch for output 0 with respect to input 0,"):
        lib.autograd.gradgradcheck(cube, (x,))


@pytest.mark.parametrize("name", LIBRARIES)
def test_gradgradcheck_of_a_function_with_a_right_double_backward(name):
    lib = libraries(name)[0]
    (x,) = _inputs(lib, (2, 3))
    assert lib.autograd.gradgradcheck(_functions(lib)["exp"].apply, (x,))


@pytest.mark.parametrize("name", LIBRARIES)
def test_contradictory_switches_are_refused(name):
    lib = libraries(name)[0]
    with pytest.raises(AssertionError, match="at least one of check_forward_ad or check_backward_ad"):
        lib.autograd.gradcheck(lambda x: x, _inputs(lib, (2,)), check_backward_ad=False)


@pytest.mark.parametrize("name", LIBRARIES)
def test_grad_mode_names_and_module_paths(name):
    lib = libraries(name)[0]
    for mode in ["no_grad", "enable_grad", "set_grad_enabled", "inference_mode"]:
        assert getattr(lib.autograd, mode) is getattr(lib, mode)
    grad_mode = importlib.import_module(f"{name}.autograd.grad_mode")
    assert lib.autograd.grad_mode is grad_mode and grad_mode.no_grad is lib.no_grad
    assert callable(lib.autograd.gradcheck) and callable(lib.autograd.gradgradcheck)
    assert not isinstance(lib.autograd.gradcheck, type(importlib))  # the function, not the module
    gradcheck_module = importlib.import_module(f"{name}.autograd.gradcheck")
    assert issubclass(gradcheck_module.GradcheckError, RuntimeError)
    assert gradcheck_module.gradcheck is lib.autograd.gradcheck
    with lib.autograd.no_grad():
        assert not (_inputs(lib, (2,))[0] * 2).requires_grad


def test_kiln_exports_gradcheck_error_from_autograd():
    kiln = libraries("kiln")[0]
    from kiln.autograd.gradcheck import GradcheckError

    assert kiln.autograd.GradcheckError is GradcheckError
