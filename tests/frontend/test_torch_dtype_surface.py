"""kiln's dtypes answer as ``torch.dtype`` does (``str``, ``repr``, queries, pickling, ``finfo``/``iinfo``), while the
IR text keeps its own spelling (``tensor<3xf32>``). Oracle: torch 2.13 on CPU, dtype by dtype."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from oracles import require_torch

import kiln
from kiln import DType
from kiln.compiler.errors import ParseError, ShapeError
from kiln.compiler.ir import parse

NAMES = ["float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool", "complex64",
         "complex128"]
ALIASES = {"half": "float16", "float": "float32", "double": "float64", "short": "int16", "int": "int32", "long": "int64",
           "cfloat": "complex64", "cdouble": "complex128"}
FLOATS = ["float16", "bfloat16", "float32", "float64"]
INTEGERS = ["uint8", "int8", "int16", "int32", "int64"]


def test_every_kiln_dtype_has_a_torch_name():
    assert {getattr(kiln, name) for name in NAMES} == set(DType)


@pytest.mark.parametrize("name", NAMES + list(ALIASES))
def test_str_and_repr_are_torchs_with_kiln_for_torch(name):
    torch = require_torch()
    ours, theirs = getattr(kiln, name), getattr(torch, name)
    assert str(ours) == str(theirs).replace("torch.", "kiln.")
    assert repr(ours) == repr(theirs).replace("torch.", "kiln.")
    assert f"{ours}" == f"{theirs}".replace("torch.", "kiln.")
    assert repr([ours]) == repr([theirs]).replace("torch.", "kiln.")


@pytest.mark.parametrize("name", NAMES)
def test_queries_match_torch(name):
    torch = require_torch()
    ours, theirs = getattr(kiln, name), getattr(torch, name)
    assert (ours.is_floating_point, ours.is_complex, ours.is_signed, ours.itemsize, ours.abbr) == \
        (theirs.is_floating_point, theirs.is_complex, theirs.is_signed, theirs.itemsize, theirs.abbr)
    assert str(ours.to_real()) == str(theirs.to_real()).replace("torch.", "kiln.")


@pytest.mark.parametrize("name", NAMES)
def test_to_complex_gives_torchs_complex_dtype_or_says_which_dtypes_have_one(name):
    torch = require_torch()
    if name in ("float32", "float64", "complex64", "complex128"):
        assert str(getattr(kiln, name).to_complex()) == str(getattr(torch, name).to_complex()).replace("torch.", "kiln.")
        return
    with pytest.raises(ShapeError, match=rf"kiln\.{name}\.to_complex\(\): only float32 and float64 have a complex"):
        getattr(kiln, name).to_complex()


@pytest.mark.parametrize("name", NAMES)
def test_name_round_trips_as_ported_code_parses_it(name):
    torch = require_torch()
    ours = getattr(kiln, name)
    assert getattr(kiln, str(ours).split(".")[-1]) is ours
    assert str(getattr(torch, str(ours).replace("kiln.", ""))) == str(ours).replace("kiln.", "torch.")
    assert DType.of(str(ours)) is ours
    assert DType.of(getattr(torch, name)) is ours
    assert DType.of(str(getattr(torch, name))) is ours


@pytest.mark.parametrize("alias, name", ALIASES.items())
def test_aliases_are_the_same_dtype(alias, name):
    torch = require_torch()
    assert getattr(kiln, alias) is getattr(kiln, name)
    assert {getattr(kiln, name): 1}[getattr(kiln, alias)] == 1
    assert hash(getattr(kiln, alias)) == hash(getattr(kiln, name))
    assert DType.of(f"torch.{alias}") is DType.of(getattr(torch, alias)) is getattr(kiln, name)


def test_equality_is_identity_and_dtypes_do_not_order():
    torch = require_torch()
    assert kiln.float32 == kiln.float32 and kiln.float32 != kiln.float64 and kiln.float32 != "float32"
    assert (torch.float32 == "float32") is (kiln.float32 == "float32")
    with pytest.raises(TypeError):
        torch.float32 < torch.float64  # noqa: B015
    with pytest.raises(TypeError):
        kiln.float32 < kiln.float64  # noqa: B015


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_copy_give_the_same_dtype(name):
    ours = getattr(kiln, name)
    assert pickle.loads(pickle.dumps(ours)) is ours
    assert copy.copy(ours) is ours and copy.deepcopy(ours) is ours
    assert pickle.loads(pickle.dumps({ours: [ours]})) == {ours: [ours]}


def test_unknown_prefixed_name_says_what_kiln_has():
    with pytest.raises(ShapeError, match=r"unknown dtype 'torch\.complex32'.*kiln\.float32"):
        DType.of("torch.complex32")


@pytest.mark.parametrize("name", FLOATS)
def test_finfo_matches_torch(name):
    torch = require_torch()
    ours, theirs = kiln.finfo(getattr(kiln, name)), torch.finfo(getattr(torch, name))
    fields = ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype")
    assert {field: getattr(ours, field) for field in fields} == {field: getattr(theirs, field) for field in fields}
    assert repr(ours) == repr(theirs) and str(ours) == str(theirs)


@pytest.mark.parametrize("name", INTEGERS)
def test_iinfo_matches_torch(name):
    torch = require_torch()
    ours, theirs = kiln.iinfo(getattr(kiln, name)), torch.iinfo(getattr(torch, name))
    fields = ("bits", "max", "min", "dtype")
    assert {field: getattr(ours, field) for field in fields} == {field: getattr(theirs, field) for field in fields}
    assert repr(ours) == repr(theirs) and str(ours) == str(theirs)


@pytest.mark.parametrize("info, name", [("finfo", "int32"), ("finfo", "bool"), ("iinfo", "float32"), ("iinfo", "bool")])
def test_finfo_and_iinfo_refuse_the_other_kind_and_bool(info, name):
    torch = require_torch()
    with pytest.raises(TypeError):
        getattr(torch, info)(getattr(torch, name))
    with pytest.raises(kiln.KilnError, match=f"{info} takes an? (float|integer) dtype"):
        getattr(kiln, info)(getattr(kiln, name))


def test_default_dtype_prints_as_torchs():
    torch = require_torch()
    before, torch_before = kiln.get_default_dtype(), torch.get_default_dtype()
    try:
        kiln.set_default_dtype(kiln.float64), torch.set_default_dtype(torch.float64)
        assert str(kiln.get_default_dtype()) == str(torch.get_default_dtype()).replace("torch.", "kiln.")
        assert kiln.finfo().dtype == torch.finfo().dtype == "float64"
    finally:
        kiln.set_default_dtype(before), torch.set_default_dtype(torch_before)


@pytest.mark.parametrize("name", NAMES)
def test_tensor_repr_and_dtype_print_as_torchs(name):
    torch = require_torch()
    values = [1, 0] if name == "bool" else [1, 2]
    ours, theirs = kiln.tensor(values, dtype=getattr(kiln, name)), torch.tensor(values, dtype=getattr(torch, name))
    assert repr(ours) == repr(theirs).replace("torch.", "kiln.")
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "kiln.")


def flatten(x):
    return x.reshape(-1)


def to_bfloat16(x):
    return x.to(kiln.bfloat16)


def test_ir_text_keeps_its_own_spelling():
    spellings = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64", "uint8": "u8", "int8": "i8",
                 "int16": "i16", "int32": "i32", "int64": "i64", "bool": "bool"}
    for name, spelling in spellings.items():
        dtype = getattr(kiln, name)
        graph = kiln.trace(flatten, kiln.TensorSpec((2, 3), dtype))
        text = str(graph)
        assert f"tensor<2x3x{spelling}>" in text and f"tensor<6x{spelling}>" in text and "kiln." not in text
        assert dtype.value == spelling and str(kiln.TensorType((2,), dtype)) == f"tensor<2x{spelling}>"
        assert str(parse(text)) == text


def test_ir_attributes_and_parse_errors_keep_the_ir_spelling():
    graph = kiln.trace(to_bfloat16, kiln.TensorSpec((2,), kiln.float32))
    text = str(graph)
    assert "dtype = bf16" in text and "kiln." not in text and str(parse(text)) == text
    with pytest.raises(ParseError, match="for dtype i32"):
        parse('func @f() {\n  %0 = "tensor.constant"() {value = dense<1.5>} : () -> tensor<i32>\n  return %0 : tensor<i32>\n}\n')
