"""The official ONNX node conformance tests, run through kiln's importer and NumPy backend.

Cases are skipped only when the model uses a dtype kiln does not support (anything
but f16, bf16, f32, f64, u8, i8, i16, i32, i64, bool: fp8, int4, uint16, strings...) or an ONNX op
kiln does not import; both rules live in ``KilnBackend.is_compatible``. A compatible
case either passes, or the importer refuses it with one clear ``OnnxImportError``
naming an attribute value kiln cannot express; any other outcome fails this test.
With onnx 1.23 every compatible case passes (576 with the float16/bfloat16 and uint8/int8/int16 ones, none refused): dilated, 1-D and 3-D
windows, MaxPool's Indices, ConvTranspose's auto_pad, ScatterElements' mul/max/min,
Sin/Cos/Floor/Ceil/Round/Atan/Asin/Acos, Det and CumSum (exclusive and reverse) included. The refusals, if a newer onnx adds cases, are listed in the printed summary.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np

from oracles import require

EXPECTED_REFUSALS = (
    "is not supported by kiln's importer",  # a named attribute value kiln cannot express (a Pad mode, negative pads...)
)


def run_case(case, backend, as_array) -> None:
    rep = backend.prepare(case.model)
    for inputs, outputs in case.data_sets:
        for got, expected in zip(rep.run(inputs), outputs):
            expected = as_array(expected)
            assert got.dtype == expected.dtype, f"dtype {got.dtype} != {expected.dtype}"
            np.testing.assert_allclose(got, expected, rtol=case.rtol, atol=case.atol)


def test_node_conformance_for_every_imported_op():
    require("onnx")
    from onnx.backend.test.loader import load_model_tests

    from kiln.backends.onnx.backend import KilnBackend, _as_array
    from kiln.backends.onnx.importer import OnnxImportError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    passed, refused, failed = [], collections.Counter(), []
    for case in cases:
        if not KilnBackend.is_compatible(case.model):
            continue
        try:
            run_case(case, KilnBackend, _as_array)
            passed.append(case.name)
        except OnnxImportError as error:
            reason = next((r for r in EXPECTED_REFUSALS if r in str(error)), None)
            (refused.update([reason]) if reason else failed.append((case.name, str(error).splitlines()[0])))
        except Exception as error:  # a wrong number or a crash
            failed.append((case.name, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"))
    print(f"\nONNX node conformance: {len(passed)} passed, {sum(refused.values())} refused {dict(refused)}, {len(failed)} failed")
    assert not failed, failed
    assert len(passed) >= 570  # the importer covers at least this much; a regression drops it
