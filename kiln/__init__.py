"""kiln: a deep-learning compiler in Python.

```python
import kiln
import kiln.nn as nn
import kiln.nn.functional as F

model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
loss = step(x, y)
print(step.graph)
```
"""

import os as _os

# In a source checkout (``python -m kiln.cli`` from the repository root, where this folder
# shadows an installed kiln) the subpackages are this folder's siblings: compiler/, frontend/...
_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_CHECKOUT, "pyproject.toml")) and _os.path.isdir(_os.path.join(_CHECKOUT, "compiler")):
    __path__.append(_CHECKOUT)

from kiln.compiler import ops as _ops  # noqa: E402,F401  (registers every op)
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import CheckpointError, InputError, KilnError, ShapeError, TraceError, VerificationError
from kiln.compiler.ir import DType, Graph, TensorType
from kiln.compiler.passes import PassManager
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.init import manual_seed
from kiln.frontend.trace import TensorSpec, trace
from kiln.runtime.checkpoint import load, save
from kiln.runtime.compiled_function import CompiledFunction, compile
from kiln.runtime.export import export_onnx, import_onnx
from kiln.runtime.forward_mode import jvp, vjp
from kiln.runtime.grad import grad, value_and_grad
from kiln.runtime.jacobian import hessian, jacfwd, jacrev
from kiln.runtime.onnx_train_step import export_onnx_train_step, load_onnx_train_step
from kiln.runtime.parity import parity
from kiln.runtime.saliency import saliency
from kiln.runtime.train_step import TrainStep, compile_train_step
from kiln.runtime.trainer import fit
from kiln.runtime.vmap import vmap
from kiln.runtime.eager import install as _install_eager

_install_eager()  # outside a trace, ops run eagerly (loss.backward(), optimizer.step())
from kiln import autograd, cuda, distributions, func, linalg, nn, onnx, optim, utils  # noqa: E402  (after the core, which they re-export)
from kiln import random, sparse  # noqa: E402  (torch.random: get_rng_state, fork_rng...; torch.sparse: mm, addmm, sum)
from kiln.frontend.tensor_device import device, get_default_device, set_default_device  # noqa: E402  (torch.device: kiln.device('cuda'))
from kiln import accelerator  # noqa: E402  (torch.accelerator: is_available(), current_accelerator())
from kiln import special, testing  # noqa: E402  (torch.special: kiln.special.erfcx, ndtri...; torch.testing: assert_close)
from kiln import jit  # noqa: E402  (torch.jit's decorators for model code: @kiln.jit.ignore, is_scripting(); no TorchScript)
from kiln import compiler as _compiler  # noqa: E402  (the IR's package, which also answers as torch.compiler:)
from kiln.frontend.trace import is_compiling as _is_compiling  # noqa: E402

_compiler.is_compiling = _compiler.is_dynamo_compiling = _is_compiling  # torch.compiler.is_compiling()
from kiln.frontend.memory_format import EXPORTS as _memory_formats  # noqa: E402  (kiln.channels_last: a layout hint)

globals().update(_memory_formats)
from kiln.frontend.torch_size import Size  # noqa: E402  (torch.Size: what x.shape and x.size() return)
from kiln.frontend.sparse_grad import sparse_coo, strided  # noqa: E402  (torch.sparse_coo: a sparse .grad's layout)
from kiln.frontend.torch_printoptions import get_printoptions, set_printoptions  # noqa: E402  (eager tensors' repr)
from kiln import amp  # noqa: E402  (torch.amp: autocast, GradScaler; frontend/torch_amp.py)
from kiln.frontend.torch_amp import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: E402
from kiln import cpu  # noqa: E402  (torch.cpu: kiln.cpu.amp.autocast, deprecated as torch's)
from kiln import serialization  # noqa: E402  (torch.serialization: add_safe_globals, safe_globals)
from kiln import multiprocessing  # noqa: E402  (torch.multiprocessing: Python's own, for DataLoader-style workers)
from kiln import profiler  # noqa: E402  (torch.profiler: profile, record_function, schedule; runtime/profiler.py)
float16 = half = DType.f16  # NumPy float16; computed in float32 and rounded per op (widen-half), as torch on CPU
bfloat16 = DType.bf16
dtype = DType  # torch.dtype: the class of kiln.float32, ... (``-> torch.dtype`` annotations, isinstance checks)
from kiln.frontend.tensor import Tensor  # noqa: E402  (torch.Tensor: isinstance(h, kiln.Tensor), traced or eager)
from kiln.frontend.torch_legacy import BoolTensor, DoubleTensor, FloatTensor, IntTensor, LongTensor  # noqa: E402
from kiln.frontend.torch_legacy import BFloat16Tensor, ByteTensor, CharTensor, HalfTensor, ShortTensor  # noqa: E402
from kiln.frontend import torch_functions as _torch_functions
from kiln.frontend import torch_more as _torch_more

globals().update({name: getattr(_torch_functions, name) for name in _torch_functions.__all__})  # kiln.zeros, kiln.cat...
globals().update(_torch_functions.FORWARDERS)  # kiln.exp(x) is x.exp(), as torch.exp(x)
globals().update(_torch_functions.DTYPES)  # kiln.float32, kiln.long, ... as torch's
globals().update(_torch_more.exports())  # kiln.conv2d, kiln.hstack, kiln.finfo, kiln.exp_, ... (frontend/torch_more.py)
from kiln.frontend import complex_functions as _complex_functions  # noqa: E402

globals().update(_complex_functions.with_complex_dtypes(globals()))  # kiln.zeros(3, dtype=kiln.cfloat), complex einsum
globals().update(_complex_functions.EXPORTS)  # kiln.complex64, kiln.complex, kiln.polar, kiln.view_as_real, ...
from kiln import fft  # noqa: E402  (torch.fft: kiln.fft.rfft, fftn, fftfreq, ... frontend/fft.py)
from kiln.frontend.stft import stft  # noqa: E402  (torch.stft: frames, window, rfft; frontend/stft.py)
from kiln.frontend.istft import istft  # noqa: E402  (torch.istft: irfft, window, overlap-add; frontend/istft.py)
from kiln.frontend.torch_generator import Generator, default_generator  # noqa: E402  (torch.Generator: kiln.randn(..., generator=g))
from kiln.backends.matmul_precision import get_float32_matmul_precision, set_float32_matmul_precision  # noqa: E402  (TF32 on CuPy)
from kiln.frontend.torch_threads import get_num_interop_threads, get_num_threads, set_num_interop_threads, set_num_threads  # noqa: E402
from kiln.frontend.torch_assert import _assert  # noqa: E402,F401  (torch._assert: torchvision's traceable assert)
from math import e, inf, nan, pi  # noqa: E402  (torch.e, torch.inf, torch.nan, torch.pi: Python floats, as torch's)
from kiln.frontend import torch_global_modes as _torch_global_modes  # noqa: E402  (use_deterministic_algorithms, ...)
from kiln.frontend import torch_tensor_queries as _torch_tensor_queries  # noqa: E402  (typename, empty_strided, ...)
from kiln.frontend.lowrank_svd import pca_lowrank, svd_lowrank  # noqa: E402  (randomized SVD: frontend/lowrank_svd.py)
from kiln.frontend.control_flow import cond, while_loop  # noqa: E402  (torch.cond: both branches traced, one selected)

globals().update({name: getattr(_torch_global_modes, name) for name in _torch_global_modes.__all__})
globals().update({name: getattr(_torch_tensor_queries, name) for name in _torch_tensor_queries.__all__})

__version__ = "0.1.0"

__all__ = [
    "hessian", "jacfwd", "jacrev", "jvp", "vjp", "vmap", "accelerator",
    "autograd", "CheckpointError", "compile", "cuda", "random", "sparse", "func", "device", "distributions", "linalg", "compile_train_step", "CompiledFunction", "differentiate", "DType", "dtype",
    "get_default_device", "set_default_device",
    "export_onnx", "export_onnx_train_step", "fit", "grad", "Graph", "import_onnx", "InputError", "KilnError",
    "load", "load_onnx_train_step", "manual_seed", "nn", "no_grad", "onnx", "optim", "parity", "PassManager", "saliency", "save", "amp", "autocast", "cpu", "get_autocast_dtype", "is_autocast_enabled", "bfloat16", "float16", "half", "Generator", "default_generator", "get_printoptions", "set_printoptions", "Size", "sparse_coo", "strided", "special", "testing", "jit", *_memory_formats,
    "BFloat16Tensor", "BoolTensor", "ByteTensor", "CharTensor", "ShortTensor", "DoubleTensor", "HalfTensor", "FloatTensor", "IntTensor", "LongTensor", "ShapeError", "Tensor", "TensorSpec", "TensorType", "trace", "TraceError", "TrainStep", "utils", "value_and_grad",
    "VerificationError", *_torch_functions.__all__, *_torch_functions.FORWARDERS,
    *_torch_functions.DTYPES, *_torch_more.exports(), *_complex_functions.EXPORTS, "fft", "stft", "istft",
    *_torch_global_modes.__all__, *_torch_tensor_queries.__all__, "pca_lowrank", "svd_lowrank", "cond", "while_loop",
]
