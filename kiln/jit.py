"""``kiln.jit``: the parts of ``torch.jit`` that model code uses outside TorchScript, so such code runs unchanged.

```python
class SwinTransformer(nn.Module):
    @torch.jit.ignore
    def no_weight_decay_keywords(self):          # read by the training script's parameter groups
        return {"relative_position_bias_table"}

    def forward(self, x):
        if torch.jit.is_scripting(): ...         # False: kiln never scripts
```

``ignore``, ``unused``, ``export``, ``script_if_tracing`` and ``script_method`` return the function unchanged (they
only steer the TorchScript compiler, which kiln does not have), and so does ``script`` on a function;
``is_scripting()`` and ``is_tracing()`` are False (also inside ``kiln.compile``, as torch's are inside
``torch.compile``); ``annotate(type, value)`` is ``value``; ``Final`` is ``typing.Final``. ``ScriptModule`` is an
``nn.Module`` whose methods run as the Python they are (RWKV's ``class RWKV_RNN(torch.jit.ScriptModule)`` with
``@torch.jit.script_method``s: torch compiles them to TorchScript, which computes what the Python computes).
``script`` of anything else, ``trace``, ``save`` and ``load`` raise an error that names kiln's counterparts:
``kiln.compile`` for a compiled function or module, ``kiln.onnx.export`` for a file to deploy, ``kiln.save``/``load``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Final, TypeVar

from kiln.compiler.errors import KilnError
from kiln.frontend.module import Module

__all__ = ["Final", "ScriptModule", "annotate", "export", "ignore", "is_scripting", "is_tracing", "load", "save", "script",
           "script_if_tracing", "script_method", "trace", "unused"]

Function = TypeVar("Function", bound=Callable[..., Any])


class TorchScriptError(KilnError, NotImplementedError):
    """A TorchScript entry point (``script``, ``trace``, ``save``, ``load``) was called: kiln has no TorchScript."""


def ignore(drop: Any = False, **kwargs: Any) -> Any:
    """``@torch.jit.ignore`` and ``@torch.jit.ignore(drop=True)``: the function itself (``drop=True`` warns as torch's:
    it is deprecated for ``unused``)."""
    if callable(drop):
        return drop
    if drop:
        warnings.warn("ignore(True) has been deprecated. TorchScript will now drop the function call on compilation. "
                      "Use kiln.jit.unused now.", FutureWarning, stacklevel=2)
    return lambda function: function


def unused(function: Function) -> Function:
    """``@torch.jit.unused``: the function itself."""
    return function


def export(function: Function) -> Function:
    """``@torch.jit.export``: the function itself."""
    return function


def script_method(function: Function) -> Function:
    """``@torch.jit.script_method`` on a ``ScriptModule``'s method: the function itself (run as Python), with torch
    2.13's DeprecationWarning."""
    warnings.warn("`kiln.jit.script_method` is deprecated. Please switch to `kiln.compile`.", DeprecationWarning,
                  stacklevel=2)
    return function


def script_if_tracing(function: Function) -> Function:
    """``@torch.jit.script_if_tracing``: the function itself (kiln never traces TorchScript)."""
    return function


def is_scripting() -> bool:
    """False: kiln code is never being compiled by TorchScript."""
    return False


def is_tracing() -> bool:
    """False: ``torch.jit.trace`` is not kiln's tracer (``kiln.compile``'s tracing runs the Python as written)."""
    return False


def annotate(the_type: Any, the_value: Any) -> Any:
    """``torch.jit.annotate(List[int], [])``: the value."""
    return the_value


def _no_torchscript(name: str, instead: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise TorchScriptError(f"kiln.jit.{name}: kiln has no TorchScript; {instead}")

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


_refuse_script = _no_torchscript("script", "use kiln.compile(model_or_function) for a compiled one (it runs the Python "
                                           "as written), or kiln.onnx.export to write a file to deploy")


def script(obj: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``@torch.jit.script`` on a function (Graphormer's ``convert_to_single_emb``, fused-activation helpers): the
    function itself, run as Python (torch's ScriptFunction computes what the Python computes), with torch 2.13's
    DeprecationWarning. Anything else (a module to script and save) raises, naming ``kiln.compile`` and
    ``kiln.onnx.export``."""
    if not inspect.isfunction(obj):
        return _refuse_script(obj, *args, **kwargs)
    warnings.warn("`kiln.jit.script` is deprecated. Please switch to `kiln.compile`.", DeprecationWarning, stacklevel=2)
    return obj


trace = _no_torchscript("trace", "use kiln.compile(model_or_function) for a compiled one, or "
                                 "kiln.onnx.export(model, example_inputs, path) to write a file to deploy")
save = _no_torchscript("save", "save the weights with kiln.save(model.state_dict(), path), or export the model with "
                               "kiln.onnx.export")
load = _no_torchscript("load", "load weights with model.load_state_dict(kiln.load(path)), or an ONNX file with "
                               "kiln.import_onnx")


class ScriptModule(Module):
    """``torch.jit.ScriptModule`` as a base class: an ``nn.Module`` (its ``script_method``s run as Python); saving it
    as TorchScript (``.save``) raises as ``kiln.jit.save`` does."""

    def save(self, *args: Any, **kwargs: Any) -> None:
        save(*args, **kwargs)
