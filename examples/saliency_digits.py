"""Saliency maps: which pixels of a digit move the trained MLP's score for its class.

    python examples/saliency_digits.py              # writes saliency_digits.png
    python examples/saliency_digits.py -o map.png --epochs 10 --count 6

Trains the demo's MLP on scikit-learn's 8x8 digits with ``kiln.fit``, then
draws, for a few held-out digits, the image and ``|d logit_class / d pixel|``
computed by ``kiln.saliency`` (the input gradient, through the compiled graph).
"""

from __future__ import annotations

import argparse

import numpy as np

import kiln
import kiln.nn.functional as F
from kiln.runtime.callbacks import new_figure
from kiln.runtime.data import ArrayDataset, DataLoader, load_digits, train_test_split
from mlp_model import MLP


def train_model(epochs: int, seed: int = 0):
    kiln.manual_seed(seed)
    x, y = load_digits()
    x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction=0.2, seed=seed)
    model = MLP()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    history = kiln.fit(step, DataLoader(ArrayDataset(x_train, y_train), batch_size=32, shuffle=True, seed=seed), epochs=epochs,
                       eval_loader=DataLoader(ArrayDataset(x_test, y_test), batch_size=512), metrics=["accuracy"], progress=False)
    return model, x_test, y_test, history.epochs[-1]["val_accuracy"]


def render(images: np.ndarray, labels: np.ndarray, maps: np.ndarray, path: str) -> None:
    """One column per digit: the image on top, its saliency (absolute gradient) below."""
    figure = new_figure(figsize=(1.6 * len(images), 3.4), dpi=100)
    axes = figure.subplots(2, len(images), squeeze=False)
    for column, (image, label, heat) in enumerate(zip(images, labels, maps)):
        axes[0][column].imshow(image.reshape(8, 8), cmap="gray_r")
        axes[0][column].set_title(f"label {label}", fontsize=9)
        axes[1][column].imshow(np.abs(heat).reshape(8, 8), cmap="hot")
        for row in (0, 1):
            axes[row][column].set_axis_off()
    figure.suptitle("digits and |d logit / d pixel|", fontsize=10)
    figure.savefig(path)


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="saliency_digits.png")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--count", type=int, default=5, help="how many held-out digits to draw")
    args = parser.parse_args(argv)
    model, x_test, y_test, accuracy = train_model(args.epochs)
    maps = kiln.saliency(model, x_test[: args.count], y_test[: args.count])
    render(x_test[: args.count], y_test[: args.count], maps, args.output)
    print(f"held-out accuracy {accuracy:.3f}; wrote {args.output}")
    return maps


if __name__ == "__main__":
    main()
