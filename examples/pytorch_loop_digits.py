"""A PyTorch training loop, unchanged, in kiln's eager mode; then the trained model compiled for inference.

    python examples/pytorch_loop_digits.py
    python examples/pytorch_loop_digits.py --epochs 10 --optimizer sgd
    python examples/pytorch_loop_digits.py --compile-step     # the loop body as one compiled graph

The loop is PyTorch's own (``zero_grad``, ``loss.backward()``,
``clip_grad_norm_``, ``optimizer.step()``, a scheduler, ``loss.item()``) over
scikit-learn's bundled 8x8 digits. Outside a trace kiln runs each op at once
and compiles the backward and the update once (``runtime/eager.py``). With
``--compile-step`` the loop body is ``@kiln.compile``d, as ``torch.compile``
users write it: forward, backward, clipping and the update become one graph
(``runtime/step_capture.py``), with the same results. Once
trained, the same model is compiled (``kiln.compile``) for the held-out
accuracy, and the eager and compiled logits are compared.
"""

from __future__ import annotations

import argparse

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.data import ArrayDataset, DataLoader, load_digits, train_test_split
from mlp_model import MLP


def train(epochs: int = 5, optimizer_name: str = "adam", seed: int = 0, verbose: bool = True,
          compile_step: bool = False) -> dict[str, float]:
    kiln.manual_seed(seed)
    x, y = load_digits()
    x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction=0.2, seed=seed)
    model = MLP()
    optimizer = kiln.optim.Adam(model.parameters(), lr=3e-3) if optimizer_name == "adam" else \
        kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = kiln.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
    loader = DataLoader(ArrayDataset(x_train, y_train), batch_size=32, shuffle=True, seed=seed)

    def train_step(inputs: kiln.Tensor, targets: kiln.Tensor) -> kiln.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
        optimizer.step()
        return loss

    step = kiln.compile(train_step) if compile_step else train_step
    epoch_losses = []
    for epoch in range(epochs):
        model.train()
        total, batches = 0.0, 0
        for inputs, targets in loader:
            loss = step(inputs, targets)
            total, batches = total + loss.item(), batches + 1
        scheduler.step()
        epoch_losses.append(total / batches)
        if verbose:
            print(f"epoch {epoch + 1}: mean loss {epoch_losses[-1]:.4f}, lr {scheduler.get_last_lr()[0]:.5f}")
    model.eval()
    with kiln.no_grad():
        eager_logits = model(x_test).numpy()
    compiled_logits = kiln.compile(model)(x_test)
    accuracy = float((compiled_logits.argmax(1) == y_test).mean())
    if verbose:
        print(f"held-out accuracy {accuracy:.3f}; eager and compiled logits differ by at most "
              f"{np.abs(eager_logits - compiled_logits).max():.2e}")
    return {"first_loss": epoch_losses[0], "final_loss": epoch_losses[-1], "accuracy": accuracy,
            "eager_vs_compiled": float(np.abs(eager_logits - compiled_logits).max())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--compile-step", action="store_true", help="@kiln.compile the loop body (one graph per step)")
    args = parser.parse_args(argv)
    return train(args.epochs, args.optimizer, compile_step=args.compile_step)


if __name__ == "__main__":
    main()
