"""``kiln train config.toml``: a training run described by a TOML or JSON file.

```toml
model = "model.py"            # a model file (see kiln/model_file.py); relative to this file
data = "digits"               # or "npz:arrays.npz" (arrays x, y), "csv:table.csv" (last column = label), "idx:DIR"
epochs = 10
batch_size = 32
eval_fraction = 0.2           # held out for validation (digits, npz, csv); idx uses its test split
metrics = ["accuracy"]
seed = 0

[optimizer]
name = "SGD"                  # any kiln.optim class
lr = 0.1

[run]                         # optional: where checkpoints, the log and the loss curve go
checkpoint_dir = "runs/digits"
checkpoint_every = 100
resume = true
log = "runs/digits/log.jsonl"
plot = "runs/digits/loss.png"
```
"""

from __future__ import annotations

import json
import os
import tomllib
from typing import Any

import numpy as np

from kiln.compiler.errors import KilnError

KNOWN = {"model", "model_attribute", "data", "epochs", "batch_size", "eval_fraction", "metrics", "seed", "optimizer", "run", "progress"}
RUN_KEYS = {"checkpoint_dir", "checkpoint_every", "keep_checkpoints", "resume", "log", "plot"}


def read_config(path: str) -> dict[str, Any]:
    """The config at ``path`` (``.toml`` or ``.json``), with unknown keys reported by name."""
    if not os.path.exists(path):
        raise KilnError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as file:
            config = tomllib.load(file) if path.endswith(".toml") else json.load(file)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise KilnError(f"{path} is not a valid {'TOML' if path.endswith('.toml') else 'JSON'} config: {error}") from error
    unknown = sorted(set(config) - KNOWN) + sorted(f"run.{key}" for key in set(config.get("run", {})) - RUN_KEYS)
    if unknown:
        raise KilnError(f"{path}: unknown key(s) {unknown}; known: {sorted(KNOWN)} and run.{{{', '.join(sorted(RUN_KEYS))}}}")
    if "model" not in config:
        raise KilnError(f"{path} needs `model = \"model.py\"` naming a model file")
    return config


def load_arrays(spec: str, base: str, eval_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)`` from a data spec (``digits``, ``npz:``, ``csv:``, ``idx:``)."""
    from kiln.runtime.data import datasets

    kind, _, location = spec.partition(":")
    location = os.path.join(base, location) if location else location
    if kind == "idx":
        return (*datasets.load_idx_dataset(location, "train"), *datasets.load_idx_dataset(location, "test"))
    loaders = {"digits": lambda: datasets.load_digits(), "npz": lambda: datasets.load_npz(location), "csv": lambda: datasets.load_csv(location)}
    if kind not in loaders:
        raise KilnError(f"unknown data {spec!r}; use digits, npz:FILE, csv:FILE or idx:DIR")
    x, y = loaders[kind]()
    return datasets.train_test_split(x, y, test_fraction=eval_fraction, seed=seed)


def run_config(path: str) -> Any:
    """Train as ``path`` describes; returns the ``History``."""
    import kiln
    from kiln.model_file import load_model_file
    from kiln.runtime.data import ArrayDataset, DataLoader
    from kiln.runtime.trainer import fit

    config = read_config(path)
    base = os.path.dirname(os.path.abspath(path))
    seed = int(config.get("seed", 0))
    kiln.manual_seed(seed)
    model_file = load_model_file(os.path.join(base, config["model"]), config.get("model_attribute", "model"))
    x_train, y_train, x_test, y_test = load_arrays(config.get("data", "digits"), base, float(config.get("eval_fraction", 0.2)), seed)
    step = kiln.compile_train_step(model_file.model, model_file.loss or kiln.nn.functional.cross_entropy, _optimizer(config, model_file.model))
    batch_size = int(config.get("batch_size", 32))
    train = DataLoader(ArrayDataset(x_train, y_train), batch_size=batch_size, shuffle=True, seed=seed)
    test = DataLoader(ArrayDataset(x_test, y_test), batch_size=max(256, batch_size)) if len(x_test) else None
    run = {key: value for key, value in config.get("run", {}).items()}
    for key in ("checkpoint_dir", "log", "plot"):
        if key in run:
            run[key] = os.path.join(base, run[key])
    return fit(step, train, epochs=int(config.get("epochs", 1)), eval_loader=test, metrics=config.get("metrics", ["accuracy"]) if test else (),
               checkpoint_dir=run.get("checkpoint_dir"), checkpoint_every=run.get("checkpoint_every"), keep_checkpoints=run.get("keep_checkpoints", 3),
               resume=bool(run.get("resume", False)), log_path=run.get("log"), plot_path=run.get("plot"), progress=config.get("progress"))


def _optimizer(config: dict[str, Any], model: Any) -> Any:
    import kiln

    options = dict(config.get("optimizer", {"name": "SGD", "lr": 0.1}))
    name = options.pop("name", "SGD")
    cls = getattr(kiln.optim, name, None)
    if not isinstance(cls, type):
        raise KilnError(f"unknown optimizer {name!r}; use a kiln.optim class name such as SGD, Adam or AdamW")
    return cls(model.parameters(), **options)
