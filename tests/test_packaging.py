"""Packaging: every package folder is listed in pyproject.toml, and the installed kiln imports."""

from __future__ import annotations

import os
import tomllib

import kiln

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LEVEL = {"kiln": "kiln", "compiler": "kiln.compiler", "frontend": "kiln.frontend", "backends": "kiln.backends", "runtime": "kiln.runtime"}


def package_folders() -> set[str]:
    found = set()
    for folder, package in TOP_LEVEL.items():
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            if "__init__.py" in files and "__pycache__" not in root:
                relative = os.path.relpath(root, os.path.join(REPO, folder))
                found.add(package if relative == "." else package + "." + relative.replace(os.sep, "."))
    return found


def test_every_package_folder_is_listed_in_pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as file:
        listed = set(tomllib.load(file)["tool"]["setuptools"]["packages"])
    assert package_folders() == listed


def test_public_facade():
    for name in ("trace", "TensorSpec", "compile_train_step", "compile", "manual_seed", "nn", "optim"):
        assert hasattr(kiln, name), name
    import kiln.nn.functional as F

    assert callable(F.relu) and callable(F.cross_entropy) and kiln.nn.Linear and kiln.optim.SGD
