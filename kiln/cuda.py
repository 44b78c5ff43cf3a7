"""``kiln.cuda``: the ``torch.cuda`` questions PyTorch scripts ask, answered by the CuPy backend.

``"cuda" if kiln.cuda.is_available() else "cpu"`` works as in PyTorch; in kiln the GPU is chosen by compiling with
``backend="cupy"`` (``kiln.backends.available()`` says why a backend cannot run), and a device passed to ``to`` or
``device=`` changes nothing (``frontend/tensor_device.py``).
"""

from __future__ import annotations

from kiln.backends import why_unavailable


_initialized = False
"""``torch.cuda._initialized``: whether torch has set up CUDA's state (its generators among it), which checkpointing
code asks before saving CUDA's random state (reformer_pytorch's ``Deterministic``). Never in kiln: one generator draws
every random number, whatever the backend, and ``kiln.get_rng_state()`` holds all of it."""


def is_available() -> bool:
    """Whether the CuPy backend runs here: CuPy imports and sees a GPU."""
    return why_unavailable("cupy") is None


def device_count() -> int:
    if not is_available():
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def is_bf16_supported(including_emulation: bool = True) -> bool:
    """``torch.cuda.is_bf16_supported``: False without a GPU, as torch's; on one, whether it computes in bfloat16
    natively (compute capability 8.0+), else ``including_emulation`` (torch then checks that a bfloat16 tensor can be
    made there, which any CUDA GPU allows)."""
    if not is_available():
        return False
    import cupy

    return int(cupy.cuda.Device().compute_capability) >= 80 or including_emulation


def synchronize() -> None:
    """Wait for the GPU's queued work (CuPy's current device), as ``torch.cuda.synchronize``; nothing without one."""
    if is_available():
        import cupy

        cupy.cuda.runtime.deviceSynchronize()


def manual_seed(seed: int) -> None:
    """``kiln.manual_seed``: kiln draws every random number from one seed, whatever the backend."""
    from kiln.frontend.init import manual_seed as seed_everything

    seed_everything(seed)


manual_seed_all = manual_seed


def get_rng_state_all() -> list:
    """``torch.cuda.get_rng_state_all``: the random state of each GPU, which kiln keeps none of (one generator draws
    every random number whatever the backend; ``kiln.get_rng_state()`` holds it), so an empty list, as torch's CPU
    wheel answers. Training scripts save it in their checkpoints next to ``get_rng_state()``."""
    return []


def set_rng_state_all(new_states: list) -> None:
    """``torch.cuda.set_rng_state_all``: restores what ``get_rng_state_all`` gave, which in kiln is nothing; a state
    given is refused (``kiln.set_rng_state`` restores every random state)."""
    if len(new_states):
        from kiln.frontend.trace import located_error

        raise located_error("set_rng_state_all: kiln keeps no per-GPU random states (get_rng_state_all gives none); "
                            "restore kiln.get_rng_state() with kiln.set_rng_state")


__all__ = ["device_count", "get_rng_state_all", "is_available", "is_bf16_supported", "manual_seed", "manual_seed_all",
           "set_rng_state_all", "synchronize"]


def _amp() -> object:
    from kiln.frontend.torch_amp import cuda_amp_module

    return cuda_amp_module()


amp = _amp()  # kiln.cuda.amp.autocast / GradScaler: torch.cuda.amp's deprecated spellings (frontend/torch_amp.py)
