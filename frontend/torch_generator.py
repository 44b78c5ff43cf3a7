"""``kiln.Generator``: PyTorch's ``torch.Generator``, a seeded stream of random draws of its own, and the
``generator=`` argument of kiln's samplers (``kiln.randn``, ``rand``, ``randint``, ``randperm``, ``normal``,
``bernoulli``, ``multinomial``), of ``kiln.utils.data.DataLoader`` (its shuffling) and of ``random_split``.

```python
g = kiln.Generator().manual_seed(0)
a = kiln.randn(3, generator=g)
b = kiln.randn(3, generator=kiln.Generator().manual_seed(0))   # the same draws as a
loader = kiln.utils.data.DataLoader(data, batch_size=32, shuffle=True, generator=kiln.Generator().manual_seed(1))
```

Eagerly a draw with ``generator=g`` takes its seed from ``g`` instead of kiln's global generator (``kiln.manual_seed``),
so two generators seeded alike give the same numbers, and the global stream is left as it was. The numbers are
kiln's, not PyTorch's (their distributions are PyTorch's). Inside a trace every draw comes from the compiled step's
seed, which the step advances per call; a generator passed there is not consulted. ``get_state``/``set_state`` hold
a NumPy bit-generator state (a dict), not PyTorch's byte tensor.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, Iterator

import numpy as np

_DEFAULT_SEED = 67280421310721
"""PyTorch's ``torch.Generator().initial_seed()``."""


class Generator:
    """A random stream seeded by ``manual_seed``; ``device`` is kept for ``torch.Generator(device)``'s sake."""

    def __init__(self, device: Any = "cpu") -> None:
        self.device = device
        self.manual_seed(_DEFAULT_SEED)

    def manual_seed(self, seed: int) -> "Generator":
        """Restart the stream from ``seed``; returns the generator (``Generator().manual_seed(0)``)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"Generator.manual_seed takes an int, got {type(seed).__name__} {seed!r}")
        self._seed = int(seed)
        self._numpy = np.random.default_rng(self._seed & 0xFFFFFFFFFFFFFFFF)
        return self

    def seed(self) -> int:
        """Reseed from the operating system's entropy and return the new seed."""
        seed = secrets.randbits(63)
        self.manual_seed(seed)
        return seed

    def initial_seed(self) -> int:
        """The seed the stream last started from."""
        return self._seed

    def get_state(self) -> dict:
        return self._numpy.bit_generator.state

    def set_state(self, state: dict) -> "Generator":
        self._numpy.bit_generator.state = state
        return self

    # What kiln's loaders draw (DataLoader's shuffling seed, random_split's permutation): NumPy's names.
    def integers(self, *args: Any, **kwargs: Any) -> Any:
        return self._numpy.integers(*args, **kwargs)

    def permutation(self, n: int) -> np.ndarray:
        return self._numpy.permutation(n)

    def __repr__(self) -> str:
        return f"<kiln.Generator seed={self._seed}>"


class DefaultGenerator(Generator):
    """``torch.default_generator``: kiln's global stream (``frontend/init.py``) as a ``Generator``, which
    ``kiln.manual_seed`` returns, as torch's (diffusers' ``generator = torch.manual_seed(0)``, then
    ``pipe(..., generator=generator)``): seeding it seeds the global stream, and a draw given it draws from it."""

    def __init__(self) -> None:
        self.device = "cpu"

    @property
    def _numpy(self) -> np.random.Generator:  # type: ignore[override]
        from kiln.frontend import init  # lazily: initialisation returns this generator

        return init._generator

    @property
    def _seed(self) -> int:  # type: ignore[override]
        from kiln.frontend import init

        return init.current_seed()

    def manual_seed(self, seed: int) -> "Generator":
        from kiln.frontend import init

        init.manual_seed(seed)
        return self

    def __repr__(self) -> str:
        return f"<kiln.default_generator seed={self._seed}>"


default_generator = DefaultGenerator()


@contextlib.contextmanager
def drawing_from(generator: Generator | None) -> Iterator[None]:
    """Eager draws inside take their seeds from ``generator`` (none given: kiln's global generator, unchanged)."""
    if generator is None:
        yield
        return
    if not isinstance(generator, Generator):
        raise TypeError(f"generator= takes a kiln.Generator, got {type(generator).__name__}; make one with "
                        "kiln.Generator().manual_seed(seed)")
    from kiln.frontend import init

    saved = init._generator
    init._generator = generator._numpy
    try:
        yield
    finally:
        init._generator = saved


__all__ = ["DefaultGenerator", "Generator", "default_generator"]
