"""Every ``np.<name>`` the re-bound NumPy kernels use exists in CuPy, read from their source (all code paths).

On the device the NumPy backend's kernel modules run with ``np`` bound to CuPy, falling back to NumPy for names
CuPy lacks (``lowering.ArrayModule``); a NumPy function reached that way would get a device array and fail on the
GPU. The two NumPy-only names are in kernels the CuPy table replaces. Without CuPy the test skips with one line.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from kiln.backends.cupy.lowering import NOT_REBOUND

cupy = pytest.importorskip("cupy", reason="CuPy is not importable: pip install '.[cuda12]' to check its names")

NUMPY_BACKEND = pathlib.Path(__file__).resolve().parents[2] / "backends" / "numpy"
REPLACED_ON_THE_DEVICE = {
    "frompyfunc": "tensor.erf without SciPy: the CuPy table uses cupyx.scipy.special.erf",
    "random.Philox": "tensor.random_uniform: the CuPy table draws with backends/cupy/philox.py",
    "errstate": "NumPy's warning switches around a substitution: on the device a host no-op (CuPy's kernels never warn)",
}


def numpy_names(path: pathlib.Path) -> set[str]:
    """``name`` for each ``np.name`` and ``name.attr`` for each ``np.name.attr`` in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np":
            names.add(node.attr)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and getattr(node.value.value, "id", None) == "np":
            names.add(f"{node.value.attr}.{node.attr}")
    return names


def in_cupy(name: str) -> bool:
    value = cupy
    for part in name.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


def test_every_numpy_name_of_the_rebound_kernels_exists_in_cupy():
    modules = [p for p in sorted(NUMPY_BACKEND.glob("*.py")) if p.stem not in NOT_REBOUND | {"__init__"}]
    used = {name: path.stem for path in modules for name in numpy_names(path)}
    assert len(used) > 50
    missing = {name: where for name, where in used.items() if not in_cupy(name) and name not in REPLACED_ON_THE_DEVICE}
    assert not missing, f"NumPy names CuPy {cupy.__version__} lacks (they would run on the host): {missing}"


def keyword_calls(path: pathlib.Path, module: str = "np") -> list[tuple[str, str, int]]:
    """``(name, keyword, line)`` for each keyword argument of a call to ``module.name(...)`` (or
    ``module.name.attr``), and of ``as_strided`` (imported by name and re-bound to CuPy's)."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        function, name = node.func, None
        if isinstance(function, ast.Name) and function.id == "as_strided":
            name = "lib.stride_tricks.as_strided"
        elif isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == module:
            name = function.attr
        elif isinstance(function, ast.Attribute) and getattr(getattr(function.value, "value", None), "id", None) == module:
            name = f"{function.value.attr}.{function.attr}"
        calls += [(name, keyword.arg, node.lineno) for keyword in node.keywords if name and keyword.arg]
    return calls


def accepts(function: object, keyword: str) -> bool:
    """Whether CuPy's ``function`` takes ``keyword``; True where its signature cannot be read (ufuncs, Cython)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True
    return keyword in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def test_every_keyword_the_rebound_kernels_pass_is_one_cupy_takes():
    """On the device a NumPy-only keyword raises TypeError (``as_strided(..., writeable=False)`` did, in the
    convolutions); the stand-in for CuPy runs NumPy's functions, so only CuPy's own signatures can tell. The CuPy
    backend's own ``cupy.*`` calls are read too."""
    modules = [(p, "np") for p in sorted(NUMPY_BACKEND.glob("*.py")) if p.stem not in NOT_REBOUND | {"__init__"}]
    modules += [(p, "cupy") for p in sorted((NUMPY_BACKEND.parent / "cupy").glob("*.py"))]
    refused = []
    for path, module in modules:
        for name, keyword, line in keyword_calls(path, module):
            if name in REPLACED_ON_THE_DEVICE or not in_cupy(name):
                continue
            function = cupy
            for part in name.split("."):
                function = getattr(function, part)
            if not accepts(function, keyword):
                refused.append(f"{path.name}:{line} {module}.{name}(..., {keyword}=)")
    assert not refused, f"keywords CuPy {cupy.__version__} does not take: {refused}"
