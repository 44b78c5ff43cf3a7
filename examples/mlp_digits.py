"""The main demo: the classic PyTorch-style MLP trained with SGD, compiled by kiln.

    python examples/mlp_digits.py                 # scikit-learn's bundled 8x8 digits (64 inputs)
    python examples/mlp_digits.py --style keras   # the same model as Sequential([Dense(...)])
    python examples/mlp_digits.py --data DIR      # MNIST-format IDX files (784 inputs: 784-128-64-10)
    python examples/mlp_digits.py --dtype bfloat16  # parameters, activations and the ONNX file in bfloat16 (or float16)

Prints progress, the training step's IR summary and the held-out accuracy, then
exports the trained model to ONNX (``--onnx PATH``, default ``mlp_digits.onnx``)
and checks the file's accuracy in onnxruntime.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.data import load_digits, load_idx_dataset, train_test_split


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden1: int = 128, hidden2: int = 64, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, classes)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def keras_mlp(in_features: int) -> nn.Sequential:
    model = nn.Sequential([nn.Dense(128, activation="relu"), nn.Dense(64, activation="relu"), nn.Dense(10)])
    return model.build((in_features,))


def load_data(data_dir: str | None):
    if data_dir is None:
        x, y = load_digits()
        return train_test_split(x, y, test_fraction=0.2, seed=0)
    x_train, y_train = load_idx_dataset(data_dir, "train")
    x_test, y_test = load_idx_dataset(data_dir, "test")
    return x_train, y_train, x_test, y_test


def ir_summary(graph: kiln.Graph) -> str:
    counts = collections.Counter(op.name for op in graph.ops)
    ops = ", ".join(f"{name} x{count}" for name, count in counts.most_common())
    return f"@{graph.name}: {len(graph.inputs)} inputs, {len(graph.ops)} ops, {len(graph.outputs)} outputs\n  {ops}"


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(x).argmax(axis=1) == y).mean())


def train(epochs: int = 20, batch_size: int = 32, lr: float = 0.1, style: str = "torch", data_dir: str | None = None,
          seed: int = 0, verbose: bool = True, onnx_path: str | None = None, dtype: str = "float32") -> float:
    """Train and return the held-out accuracy; export to ``onnx_path`` when given. ``dtype``: float32, float16 or
    bfloat16 (the NumPy backend computes each half op in float32 and rounds its result, as PyTorch's CPU kernels)."""
    kiln.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_data(data_dir)
    x_train, x_test = x_train.astype(kiln.DType.of(dtype).numpy), x_test.astype(kiln.DType.of(dtype).numpy)
    model = MLP(x_train.shape[1]) if style == "torch" else keras_mlp(x_train.shape[1])
    model.to(kiln.DType.of(dtype))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=lr))
    predict = kiln.compile(model)
    order_rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = order_rng.permutation(len(x_train))
        losses = [step(x_train[batch], y_train[batch]) for batch in np.array_split(order, max(1, len(order) // batch_size))]
        if verbose and (epoch % 5 == 4 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  test accuracy {accuracy(predict, x_test, y_test):.4f}")
    if verbose:
        print(f"trained {epochs} epochs in {time.perf_counter() - start:.1f} s (compiled {step.compile_count} step graph)")
        print("IR summary of the training step:\n" + ir_summary(step.graph))
    final = accuracy(predict, x_test, y_test)
    if verbose:
        print(f"held-out accuracy: {final:.4f}")
    if onnx_path:
        export(model, x_test, y_test, onnx_path, verbose)
    return final


def export(model, x_test: np.ndarray, y_test: np.ndarray, path: str, verbose: bool) -> float:
    """Write the trained model as ONNX and measure the file's accuracy in onnxruntime."""
    import onnxruntime

    kiln.export_onnx(model, [kiln.TensorSpec(("N", x_test.shape[1]), x_test.dtype)], path)
    session = onnxruntime.InferenceSession(path)
    logits = run_onnx(session, x_test)
    onnx_accuracy = float((logits.argmax(axis=1) == y_test).mean())
    if verbose:
        print(f"exported {path}; onnxruntime held-out accuracy: {onnx_accuracy:.4f}")
    return onnx_accuracy


def run_onnx(session, x: np.ndarray) -> np.ndarray:
    """The session's first output for input ``x``; bfloat16 crosses onnxruntime's Python API as 16-bit patterns."""
    if x.dtype != kiln.DType.bf16.numpy:
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    from kiln.backends.onnx.half import bfloat16_ortvalue, ortvalue_to_numpy

    return ortvalue_to_numpy(session.run_with_ort_values(None, {session.get_inputs()[0].name: bfloat16_ortvalue(x)})[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--style", choices=("torch", "keras"), default="torch")
    parser.add_argument("--data", default=None, help="a folder of MNIST-format IDX files instead of the bundled digits")
    parser.add_argument("--onnx", default="mlp_digits.onnx", help="where to export the trained model ('' to skip)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    args = parser.parse_args()
    train(args.epochs, args.batch_size, args.lr, args.style, args.data, onnx_path=args.onnx, dtype=args.dtype)


if __name__ == "__main__":
    main()
