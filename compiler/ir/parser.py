"""Parses the text form that ``printer.py`` prints back into a ``Graph``.

```
func @mlp(%x: tensor<Nx784xf32>, %w1: tensor<784x128xf32>) {
  %h = "tensor.matmul"(%x, %w1) : (tensor<Nx784xf32>, tensor<784x128xf32>) -> tensor<Nx128xf32>
  return %h : tensor<Nx128xf32>
}
```

A small tokenizer feeds a recursive-descent parser. Every op is checked
against the registry as it is read: its name must be registered, its operand
types must be the types of the values it reads, missing attributes take the
op's defaults (canonicalized as the ``Builder`` does), and its declared result
types must be what the shape rule infers. Names in the text become name hints,
so ``print_graph(parse(print_graph(g)))`` equals ``print_graph(g)``. ``//``
starts a comment that runs to the end of the line.

Errors read like clang's and MLIR's:

```
model.ir:2:8: error: unknown op "tensor.matmull"; did you mean "tensor.matmul"?
  %h = "tensor.matmull"(%x, %w1) : ...
       ^
```
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from kiln.compiler.errors import ParseError, ShapeError
from kiln.compiler.ir.builder import canonical_attr
from kiln.compiler.ir.core import Graph, Op, Region, Value
from kiln.compiler.ir.types import DType, Dim, TensorType
from kiln.compiler.ops.registry import OPS, infer_types, lookup

Item = TypeVar("Item")

_TOKEN_PATTERNS = (
    ("space", r"\s+|//[^\n]*"),
    ("type", r"tensor<[^>\n]*>"),
    ("value", r"%[A-Za-z0-9_.]+"),
    ("symbol", r"@[A-Za-z0-9_.$-]+"),
    ("string", r'"(?:[^"\\\n]|\\.)*"'),
    ("number", r"-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|inf\b|nan\b)"),
    ("word", r"[A-Za-z_][A-Za-z0-9_]*"),
    ("punct", r"->|[(){}\[\]<>,:=]"),
)
_TOKEN = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _TOKEN_PATTERNS))
_INTEGER = re.compile(r"-?[0-9]+")
_DIM = re.compile(r"[0-9]+|([0-9]+\*)?[A-Za-z_][A-Za-z0-9_]*(\*[A-Za-z_][A-Za-z0-9_]*)*")
_KEYWORD_KINDS = ("punct", "word")
_SCALAR_HINT = "a number, true or false"
_ATTR_HINT = "an attribute value: a number, a \"string\", true/false, a dtype, a [list], dense<...> or a func"


@dataclass(frozen=True)
class Token:
    """One token: its kind (a group name of ``_TOKEN_PATTERNS``, or ``eof``), its text and where it starts."""

    kind: str
    text: str
    offset: int
    """Characters from the start of the source."""


@dataclass(frozen=True)
class Source:
    """The text being parsed, which turns offsets into ``file:line:col`` diagnostics."""

    text: str
    filename: str

    def position(self, offset: int) -> tuple[int, int]:
        """1-based line and column of ``offset``."""
        line_start = self.text.rfind("\n", 0, offset) + 1
        return self.text.count("\n", 0, offset) + 1, offset - line_start + 1

    def location(self, offset: int) -> str:
        line, column = self.position(offset)
        return f"{self.filename}:{line}:{column}"

    def error(self, offset: int, message: str) -> ParseError:
        """``file:line:col: error: message``, then the source line and a caret under the column."""
        line_start = self.text.rfind("\n", 0, offset) + 1
        line_end = self.text.find("\n", offset)
        line = self.text[line_start : len(self.text) if line_end < 0 else line_end].rstrip("\r")
        caret = re.sub(r"[^\t]", " ", line[: offset - line_start]) + "^"
        return ParseError(f"{self.location(offset)}: error: {message}\n{line}\n{caret}")


def tokenize(source: Source) -> list[Token]:
    """Every token of ``source`` but spaces and comments, ending with an ``eof`` token."""
    tokens: list[Token] = []
    offset = 0
    while offset < len(source.text):
        match = _TOKEN.match(source.text, offset)
        if match is None:
            raise source.error(offset, f"unexpected character {source.text[offset]!r}")
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup or "", match.group(), offset))
        offset = match.end()
    tokens.append(Token("eof", "", len(source.text.rstrip())))
    return tokens


def parse(text: str, filename: str = "<ir>") -> Graph:
    """Parse one ``func`` in kiln's text form; ``filename`` appears in error messages."""
    return _Parser(Source(text, filename)).parse_function()


def parse_file(path: str | Path) -> Graph:
    """Parse the ``.ir`` file at ``path``."""
    return parse(Path(path).read_text(), str(path))


@dataclass(frozen=True)
class _Dense:
    """A ``dense<...>`` literal before its shape and dtype are known (they come from the op's result type)."""

    elements: Any
    """A scalar (a splat) or nested lists of scalars."""
    token: Token


_Use = tuple[Value, Token]
_Attr = tuple[Token, Any]


@dataclass(frozen=True)
class _OpText:
    """One op line as read, before it is checked against the registry."""

    name_token: Token
    name: str
    operands: list[_Use]
    attrs: list[_Attr]
    """Attribute names with their values, in the order written."""
    results: list[Token]
    """The result names (``%r``)."""
    result_types: list[Token]


class _Parser:
    """Recursive descent over the token list; one method per piece of the grammar.

    ```
    function   := "func" @name "(" [%arg ":" type, ...] ")" "{" op* return "}"
    op         := [%r, ... "="] "dialect.op" "(" [%a, ...] ")" ["{" [key "=" attr, ...] "}"]
                  ":" "(" [type, ...] ")" "->" (type | "(" [type, ...] ")") [region]
    region     := "checkpoint" "(" int ["," "output"] ")" | "recompute" "(" int ")"
    return     := "return" [%a, ... ":" type, ...]
    attr       := int | float | true | false | "string" | dtype | "[" [attr, ...] "]" | dense | function
    dense      := "dense" "<" (scalar | nested lists of scalars) ">"
    ```
    """

    def __init__(self, source: Source, tokens: list[Token] | None = None, index: int = 0):
        self.source = source
        self.tokens = tokenize(source) if tokens is None else tokens
        self.index = index
        self.graph = Graph()
        self.scope: dict[str, tuple[Value, Token]] = {}

    # Tokens.

    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        """Consume the next token; the ``eof`` token is never consumed."""
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def at(self, text: str) -> bool:
        """Whether the next token is the keyword or punctuation ``text``."""
        token = self.peek()
        return token.kind in _KEYWORD_KINDS and token.text == text

    def accept(self, text: str) -> bool:
        """Consume the next token if it is the keyword or punctuation ``text``."""
        if self.at(text):
            self.index += 1
            return True
        return False

    def expect(self, text: str, context: str = "") -> Token:
        token = self.peek()
        if not self.accept(text):
            raise self.unexpected(token, f"'{text}'" + (f" {context}" if context else ""))
        return token

    def expect_kind(self, kind: str, description: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.unexpected(token, description)
        return self.advance()

    def unexpected(self, token: Token, wanted: str) -> ParseError:
        found = "the end of the input" if token.kind == "eof" else f"'{token.text}'"
        return self.error(token, f"expected {wanted}, found {found}")

    def error(self, token: Token, message: str) -> ParseError:
        return self.source.error(token.offset, message)

    def parse_list(self, parse_item: Callable[[], Item], close: str) -> list[Item]:
        """Comma-separated items up to and including the ``close`` token."""
        if self.accept(close):
            return []
        items = self.parse_separated(parse_item)
        self.expect(close, "or ','")
        return items

    def parse_separated(self, parse_item: Callable[[], Item]) -> list[Item]:
        items = [parse_item()]
        while self.accept(","):
            items.append(parse_item())
        return items

    # The function: func @name(%a: type, ...) { op* return }.

    def parse_function(self) -> Graph:
        self.parse_function_body()
        self.expect_kind("eof", "the end of the input after the function's closing '}'")
        return self.graph

    def parse_nested_function(self) -> Graph:
        """A sub-graph attribute (``backward = func @f(...) {...}``): a function with its own names, read in place."""
        inner = _Parser(self.source, self.tokens, self.index)
        graph = inner.parse_function_body()
        self.index = inner.index
        return graph

    def parse_function_body(self) -> Graph:
        self.expect("func", "to start the function")
        self.graph.name = self.expect_kind("symbol", "a function name like @main").text[1:]
        self.expect("(", "before the function's parameters")
        self.parse_list(self.parse_parameter, ")")
        self.expect("{", "to open the function body")
        while not self.at("return"):
            self.parse_op()
        self.parse_return(self.advance())
        self.expect("}", "to close the function body")
        return self.graph

    def parse_parameter(self) -> None:
        name = self.expect_kind("value", "a parameter like %x")
        self.expect(":", "between a parameter and its type")
        type = self.parse_type()
        self.define(name, self.graph.add_input(type))

    def parse_return(self, keyword: Token) -> None:
        """``return %a, %b : t1, t2``, or a bare ``return``."""
        if self.peek().kind != "value":
            return
        uses = self.parse_separated(self.parse_use)
        self.expect(":", "before the types of the returned values")
        type_tokens = self.parse_separated(self.parse_type_token)
        self.check_types(uses, type_tokens, "return", keyword)
        self.graph.outputs = [value for value, _ in uses]

    # Values.

    def define(self, token: Token, value: Value) -> None:
        name = token.text[1:]
        if name in self.scope:
            line, column = self.source.position(self.scope[name][1].offset)
            raise self.error(token, f"redefinition of %{name}, first defined at line {line} column {column}")
        self.scope[name] = (value, token)
        value.name_hint = name

    def parse_use(self) -> _Use:
        token = self.expect_kind("value", "a value like %x")
        if token.text[1:] not in self.scope:
            raise self.error(token, f"use of undefined value {token.text}; define it above or take it as a parameter")
        return self.scope[token.text[1:]][0], token

    def check_types(self, uses: list[_Use], type_tokens: list[Token], where: str, anchor: Token) -> None:
        """The types written in the text must be the types of the values they describe."""
        if len(uses) != len(type_tokens):
            raise self.error(anchor, f"{where} lists {len(uses)} values but {len(type_tokens)} types")
        for (value, use), type_token in zip(uses, type_tokens):
            written = self.tensor_type(type_token)
            if written != value.type:
                raise self.error(type_token, f"{use.text} has type {value.type}, but {where} declares {written}")

    # Types: tensor<Nx784xf32>.

    def parse_type(self) -> TensorType:
        return self.tensor_type(self.parse_type_token())

    def parse_type_token(self) -> Token:
        return self.expect_kind("type", "a tensor type like tensor<Nx784xf32>")

    def tensor_type(self, token: Token) -> TensorType:
        parts = token.text[len("tensor<") : -1].split("x")
        starts = [token.offset + len("tensor<") + sum(len(part) + 1 for part in parts[:i]) for i in range(len(parts))]
        if parts[-1] not in DType.__members__:
            message = f"unknown dtype '{parts[-1]}' in tensor type; use one of {', '.join(DType.__members__)}"
            raise self.source.error(starts[-1], message)
        return TensorType(tuple(self.dim(part, start) for part, start in zip(parts[:-1], starts)), DType[parts[-1]])

    def dim(self, text: str, offset: int) -> Dim:
        if not _DIM.fullmatch(text):
            raise self.source.error(offset, f"bad dim '{text}': a dim is an int >= 0, a symbol without the letter x like N, or a product like 5*N")
        return int(text) if text.isdigit() else text

    # Ops: %r = "dialect.op"(%a, %b) {attrs} : (types) -> type.

    def parse_op(self) -> None:
        results = self.parse_separated(self.parse_result_name) if self.peek().kind == "value" else []
        if results:
            self.expect("=", "after the result names")
        name_token = self.expect_kind("string", 'an op like %r = "tensor.add"(%a, %b) ..., or return')
        name = self.op_name(name_token)
        self.expect("(", "before the op's operands")
        operands = self.parse_list(self.parse_use, ")")
        attrs = self.parse_list(self.parse_attr, "}") if self.accept("{") else []
        signature = self.expect(":", "before the op's type signature")
        self.expect("(", "before the operand types")
        self.check_types(operands, self.parse_list(self.parse_type_token, ")"), f"the signature of {name}", signature)
        self.expect("->", "before the result types")
        op = self.build_op(_OpText(name_token, name, operands, attrs, results, self.parse_result_types()))
        op.region = self.parse_region()

    def parse_result_name(self) -> Token:
        return self.expect_kind("value", "a result name like %r")

    def parse_result_types(self) -> list[Token]:
        if self.accept("("):
            return self.parse_list(self.parse_type_token, ")")
        return [self.parse_type_token()]

    def parse_region(self) -> Region | None:
        """``checkpoint(3)``, ``checkpoint(3, output)`` or ``recompute(3)`` after an op's types, if there."""
        if not (self.at("checkpoint") or self.at("recompute")):
            return None
        keyword = self.advance().text
        self.expect("(", f"after {keyword}")
        number = self.expect_kind("number", "a region number")
        if not _INTEGER.fullmatch(number.text) or int(number.text) < 0:
            raise self.error(number, f"a checkpoint region number is an int >= 0, not {number.text}")
        role = "recompute" if keyword == "recompute" else "checkpoint"
        if keyword == "checkpoint" and self.accept(","):
            self.expect("output", "(the only role written after a checkpoint region's number)")
            role = "output"
        self.expect(")", f"to close {keyword}(...)")
        return Region(int(number.text), role)

    def op_name(self, token: Token) -> str:
        name = self.string(token)
        if name in OPS:
            return name
        guesses = difflib.get_close_matches(name, OPS, n=3)
        if guesses:
            raise self.error(token, f"unknown op {token.text}; did you mean {' or '.join(json.dumps(g) for g in guesses)}?")
        raise self.error(token, f"unknown op {token.text}; registered ops: {', '.join(sorted(OPS))}")

    def build_op(self, text: _OpText) -> Op:
        """Check the op against its shape rule, then append it to the graph and name its results."""
        result_types = [self.tensor_type(token) for token in text.result_types]
        if len(text.results) != len(result_types):
            anchor = text.results[0] if text.results else text.name_token
            raise self.error(anchor, f"{text.name} names {len(text.results)} results but declares {len(result_types)} result types")
        attrs = self.resolve_attrs(text.name, text.attrs, result_types)
        operands = [value for value, _ in text.operands]
        self.check_results(text, result_types, self.infer(text, operands, attrs))
        op = Op(text.name, operands, result_types, attrs, self.source.location(text.name_token.offset))
        for token, result in zip(text.results, self.graph.insert(op).results):
            self.define(token, result)
        return op

    def infer(self, text: _OpText, operands: list[Value], attrs: dict[str, Any]) -> tuple[TensorType, ...]:
        try:
            return infer_types(text.name, [value.type for value in operands], attrs)
        except (TypeError, ValueError) as error:  # ShapeError, or a shape rule called with the wrong arity
            raise self.error(text.name_token, f"{text.name} rejects these operands or attributes: {error}") from None

    def check_results(self, text: _OpText, declared: list[TensorType], inferred: tuple[TensorType, ...]) -> None:
        if len(declared) != len(inferred):
            raise self.error(text.name_token, f"{text.name} produces {len(inferred)} results, but its signature declares {len(declared)}")
        for token, written, expected in zip(text.result_types, declared, inferred):
            if written != expected:
                raise self.error(token, f"result type {written} does not match {expected}, which {text.name} infers from its operands")

    # Attributes: {key = value, ...}.

    def parse_attr(self) -> _Attr:
        key = self.expect_kind("word", "an attribute name")
        self.expect("=", f"after attribute name '{key.text}'")
        return key, self.parse_attr_value(nested=False)

    def parse_attr_value(self, nested: bool) -> Any:
        if self.at("func") and not nested:
            return self.parse_nested_function()
        token = self.advance()
        if token.text == "[" and token.kind == "punct":
            return tuple(self.parse_list(lambda: self.parse_attr_value(nested=True), "]"))
        if token.kind == "string":
            return self.string(token)
        if token.kind == "word" and token.text in DType.__members__:
            return DType[token.text]
        if token.kind == "word" and token.text == "dense":
            if nested:
                raise self.error(token, "dense<...> must be a whole attribute value: its shape comes from the op's result type")
            return self.parse_dense(token)
        return self.scalar(token, _ATTR_HINT)

    def parse_dense(self, keyword: Token) -> _Dense:
        self.expect("<", "after dense")
        elements = self.parse_dense_elements()
        self.expect(">", "to close dense<...>")
        return _Dense(elements, keyword)

    def parse_dense_elements(self) -> Any:
        token = self.advance()
        if token.text == "[" and token.kind == "punct":
            return self.parse_list(self.parse_dense_elements, "]")
        return self.scalar(token, f"{_SCALAR_HINT} or a [list] in dense<...>")

    def scalar(self, token: Token, wanted: str) -> bool | int | float:
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true"
        if token.kind == "number":
            return int(token.text) if _INTEGER.fullmatch(token.text) else float(token.text)
        raise self.unexpected(token, wanted)

    def string(self, token: Token) -> str:
        try:
            return json.loads(token.text)
        except json.JSONDecodeError as error:
            raise self.error(token, f"bad string literal: {error.msg}") from None

    def resolve_attrs(self, name: str, attrs: list[_Attr], result_types: list[TensorType]) -> dict[str, Any]:
        """The op's defaults overridden by ``attrs``, dense literals built, canonicalized like the Builder does."""
        defaults = lookup(name).defaults
        resolved = dict(defaults)
        for index, (key, value) in enumerate(attrs):
            if key.text not in defaults:
                raise self.error(key, f"{name} has no attribute '{key.text}'; it takes: {', '.join(defaults) or 'none'}")
            if any(other.text == key.text for other, _ in attrs[:index]):
                raise self.error(key, f"attribute '{key.text}' is given twice")
            if isinstance(value, _Dense):
                value = self.dense_array(value, result_types)
            resolved[key.text] = self.canonical(key, value)
        return resolved

    def canonical(self, key: Token, value: Any) -> Any:
        try:
            return canonical_attr(key.text, value)
        except ShapeError as error:
            raise self.error(key, f"bad value for attribute '{key.text}': {error}") from None

    # dense<...> literals.

    def dense_array(self, dense: _Dense, result_types: list[TensorType]) -> np.ndarray:
        """The ndarray of a ``dense<...>`` literal, with the shape and dtype of the op's single result."""
        if len(result_types) != 1 or not result_types[0].is_static:
            declared = ", ".join(str(t) for t in result_types) or "no result"
            message = f"dense<...> takes its shape from the op's single static result type, but the op declares {declared}"
            raise self.error(dense.token, message)
        shape, dtype = tuple(int(dim) for dim in result_types[0].shape), result_types[0].dtype
        if isinstance(dense.elements, list) and not _matches_shape(dense.elements, shape):
            message = f"dense<...> does not match the result shape {list(shape)}; write one splat value or nested lists of that shape"
            raise self.error(dense.token, message)
        if not all(_fits_dtype(item, dtype) for item in _flatten(dense.elements)):
            raise self.error(dense.token, f"dense<...> elements must be {_element_kind(dtype)} for dtype {dtype.value}")
        try:
            return _build_array(dense.elements, shape, dtype)
        except (OverflowError, ShapeError) as error:
            raise self.error(dense.token, f"dense<...> does not fit {dtype.value}: {error}") from None


def _build_array(elements: Any, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
    """A splat fills ``shape``; nested lists (already checked against ``shape``) are reshaped, which keeps empty dims."""
    if not isinstance(elements, list):
        return np.full(shape, elements, dtype=dtype.numpy)
    return np.array(list(_flatten(elements)), dtype=dtype.numpy).reshape(shape)


def _matches_shape(elements: Any, shape: tuple[int, ...]) -> bool:
    """Whether nested lists ``elements`` have exactly ``shape``."""
    if not shape:
        return not isinstance(elements, list)
    if not isinstance(elements, list) or len(elements) != shape[0]:
        return False
    return all(_matches_shape(item, shape[1:]) for item in elements)


def _flatten(elements: Any) -> Iterator[bool | int | float]:
    if isinstance(elements, list):
        for item in elements:
            yield from _flatten(item)
    else:
        yield elements


def _fits_dtype(item: bool | int | float, dtype: DType) -> bool:
    """Floats take numbers, ints take integers, bools take ``true``/``false``."""
    if isinstance(item, bool):
        return dtype is DType.bool
    if isinstance(item, int):
        return dtype.is_int or dtype.is_float
    return dtype.is_float


def _element_kind(dtype: DType) -> str:
    return "numbers" if dtype.is_float else "integers" if dtype.is_int else "true or false"
