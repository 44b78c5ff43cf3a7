"""Eager mode against the compiled step and PyTorch eager: the same training step five ways, in one run.

    python benchmarks/eager_loop.py                  # W1-sized MLP, the W5 CNN and a small transformer, 1 thread
    python benchmarks/eager_loop.py --steps 200 --threads 2

Per workload: kiln's eager loop (``optimizer.zero_grad(); loss =
F.cross_entropy(model(x), y); loss.backward(); optimizer.step()``, each op
run at once and the backward and update compiled once and cached,
``runtime/eager.py``), the same loop over ``kiln.compile(model)`` (the forward
one compiled function recorded as one op of the chain, its backward compiled
with the loss's: ``runtime/compiled_training.py``), the loop body itself under ``@kiln.compile`` (backward and
``optimizer.step()`` traced into one graph: ``runtime/step_capture.py``), kiln's compiled step
(``kiln.compile_train_step``: the same work as one fused, memory-planned function) and PyTorch's eager loop,
from the same initial weights, SGD with momentum. Median step times measured
in alternating rounds (``train_step.interleaved_medians``); ratios are over
PyTorch eager's time (below 1: faster). Thread pools are pinned before NumPy
loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    return parser.parse_args(argv)


def eager_step(model: Any, optimizer: Any, x: Any, y: Any, whole: bool = False) -> Callable[[], float]:
    """PyTorch's loop body, run by kiln's eager mode (on tensors: a ``kiln.compile``d model given NumPy arrays
    answers with arrays, for inference); ``whole``: the body under ``@kiln.compile``."""
    import kiln
    import kiln.nn.functional as F

    def train(inputs: Any, targets: Any) -> Any:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    run, x, y = kiln.compile(train) if whole else train, kiln.tensor(x), kiln.tensor(y)
    return lambda: run(x, y).item()


def mlp_candidates() -> dict[str, Callable[[], object]]:
    import numpy as np

    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F
    from torch_peer import torch_training_step

    import torch

    def mlp() -> Any:
        kiln.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    rng = np.random.default_rng(0)
    x, y = rng.random((128, 64), dtype=np.float32), rng.integers(0, 10, 128)
    eager_model, compiled_model, loop_model, whole_model = mlp(), mlp(), mlp(), mlp()
    compiled = kiln.compile_train_step(compiled_model, F.cross_entropy, kiln.optim.SGD(compiled_model.parameters(), lr=0.1, momentum=0.9))
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    net.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in eager_model.state_dict().items()})
    loss_of = lambda inputs, targets: torch.nn.functional.cross_entropy(net(inputs), targets)  # noqa: E731
    return {"kiln eager": eager_step(eager_model, kiln.optim.SGD(eager_model.parameters(), lr=0.1, momentum=0.9), x, y),
            "kiln.compile loop": eager_step(kiln.compile(loop_model), kiln.optim.SGD(loop_model.parameters(), lr=0.1, momentum=0.9), x, y),
            "@kiln.compile step": eager_step(whole_model, kiln.optim.SGD(whole_model.parameters(), lr=0.1, momentum=0.9), x, y, True),
            "kiln compiled": lambda: compiled(x, y),
            "torch eager": torch_training_step(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), loss_of,
                                               torch.from_numpy(x), torch.from_numpy(y))}


def cnn_candidates(threads: int) -> dict[str, Callable[[], object]]:
    import kiln
    from cnn_workload import CNNConfig, cnn_batch, kiln_cnn, kiln_cnn_step, torch_cnn_step

    config = CNNConfig()
    compiled, model, _ = kiln_cnn_step(config)
    (eager_model, _), (loop_model, _), (whole_model, _) = kiln_cnn(config), kiln_cnn(config), kiln_cnn(config)
    x, y = cnn_batch(config)
    sgd = lambda model: kiln.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)  # noqa: E731
    return {"kiln eager": eager_step(eager_model, sgd(eager_model), x, y),
            "kiln.compile loop": eager_step(kiln.compile(loop_model), sgd(loop_model), x, y),
            "@kiln.compile step": eager_step(whole_model, sgd(whole_model), x, y, True), "kiln compiled": compiled,
            "torch eager": torch_cnn_step(model, config, threads)}


def transformer(lib: Any, vocab: int = 100, width: int = 64) -> Any:
    """A 4-layer encoder language model (embedding, TransformerEncoder with dropout 0.1, head), in kiln or torch."""
    nn = lib.nn
    extra = {"enable_nested_tensor": False} if lib.__name__ == "torch" else {}

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab, width)
            layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 4, **extra)
            self.head = nn.Linear(width, vocab)

        def forward(self, tokens: Any) -> Any:
            return self.head(self.encoder(self.embedding(tokens)))

    return Encoder()


def transformer_candidates() -> dict[str, Callable[[], object]]:
    import numpy as np

    import kiln
    import kiln.nn.functional as F
    from torch_peer import torch_training_step

    import torch

    def models() -> Any:
        kiln.manual_seed(0)
        return transformer(kiln)

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 100, (16, 32)), rng.integers(0, 100, (16, 32))
    loss_of = lambda out, targets: F.cross_entropy(out.reshape(-1, 100), targets.reshape(-1))  # noqa: E731
    eager_model, loop_model, compiled_model, whole_model = models(), models(), models(), models()
    net = transformer(torch)
    net.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in eager_model.state_dict().items()})

    def step_of(model: Any, call: Any, whole: bool = False) -> Callable[[], float]:
        optimizer, tokens, targets = kiln.optim.AdamW(model.parameters(), lr=1e-3), kiln.tensor(x), kiln.tensor(y)

        def train(inputs: Any, labels: Any) -> Any:
            optimizer.zero_grad()
            loss = loss_of(call(inputs), labels)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(train) if whole else train
        return lambda: run(tokens, targets).item()

    compiled = kiln.compile_train_step(compiled_model, loss_of, kiln.optim.AdamW(compiled_model.parameters(), lr=1e-3))
    torch_loss = lambda inputs, targets: torch.nn.functional.cross_entropy(net(inputs).reshape(-1, 100), targets.reshape(-1))  # noqa: E731
    return {"kiln eager": step_of(eager_model, eager_model), "kiln.compile loop": step_of(loop_model, kiln.compile(loop_model)),
            "@kiln.compile step": step_of(whole_model, whole_model, True),
            "kiln compiled": lambda: compiled(x, y),
            "torch eager": torch_training_step(torch.optim.AdamW(net.parameters(), lr=1e-3), torch_loss,
                                               torch.from_numpy(x), torch.from_numpy(y))}


def report(name: str, seconds: dict[str, float | None]) -> str:
    torch_seconds = seconds["torch eager"] or float("nan")
    cells = " | ".join(f"{seconds[key] * 1e3:8.2f} ({seconds[key] / torch_seconds:4.2f}x)"
                       for key in ("kiln eager", "kiln.compile loop", "@kiln.compile step", "kiln compiled"))
    return f"{name:<23} | {cells} | {torch_seconds * 1e3:8.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
    import torch

    torch.set_num_threads(args.threads)
    from train_step import interleaved_medians

    print(f"one training step, {args.threads} thread(s), median of {args.steps} steps; (ratio to torch eager)")
    print("workload                | kiln eager ms     | kiln.compile loop | @kiln.compile step | kiln compiled ms  | torch eager ms")
    print("----------------------- | ----------------: | ----------------: | -----------------: | ----------------: | -------------:")
    workloads = (("MLP 64-128-64-10, 128", mlp_candidates), ("W5 CNN, 256", lambda: cnn_candidates(args.threads)),
                 ("Transformer 4x64, 16x32", transformer_candidates))
    for name, make in workloads:
        candidates = make()
        print(report(name, interleaved_medians(candidates, args.steps, args.warmup)), flush=True)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
