"""``kiln.einsum``: PyTorch's ``torch.einsum`` lowered at trace time to transposes, reshapes, matmuls and sums.

Operands contract left to right, two at a time. Before each pair, letters that only one operand has and nothing later
needs are summed out. Of the rest, letters both operands have are batch dims if a later operand or the output needs
them and are contracted otherwise; the contraction is one batched ``matmul`` over ``(batch, kept, contracted)``
layouts (a product with nothing to contract is a broadcast multiply). ``...`` stands for the same broadcast dims in
every operand, and without ``->`` the output is the ellipsis dims and then the letters that occur once, in order, as
in PyTorch. A letter repeated within one operand is that operand's diagonal first (``Tensor.diagonal``).

```
einsum("bhqd,bhkd->bhqk", q, k)   ->   "tensor.matmul"(q, "tensor.transpose"(k) {perm = [0, 1, 3, 2]})
```
"""

from __future__ import annotations

import string
from typing import Any, Sequence

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import Dim
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


def einsum(equation: Any, *operands: Any) -> Tensor:
    if not operands:
        raise ValueError("einsum(): must specify the equation string and at least one operand, or at least one "
                         "operand and its subscripts list")
    if not isinstance(equation, str):  # torch's sublist form: einsum(q, [0, 1], k, [1, 2], [0, 2])
        equation, operands = sublist_equation((equation, *operands))
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    terms, output = parse_equation(equation.replace(" ", ""), operands)
    items = [diagonals(operand, term) for operand, term in zip(operands, terms)]
    current, letters = items[0]
    for index, (operand, term) in enumerate(items[1:], start=1):
        later = set(output).union(*(t for _, t in items[index + 1:]))
        current, letters = contract(current, letters, operand, term, later)
    current, letters = sum_out(current, letters, set(output))
    return current.permute(*(letters.index(letter) for letter in output)) if letters != output else current


def sublist_equation(args: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """torch's sublist form (``operand, sublist, operand, sublist, ..., [output sublist]``) as an equation and its
    operands, as ``torch.einsum`` converts it: subscripts 0-25 are ``A``-``Z``, 26-51 ``a``-``z``, ``...`` an
    Ellipsis; an odd count of arguments ends with the output's sublist."""
    equation = ",".join("".join(map(_subscript, sublist)) for sublist in args[1::2])
    if len(args) % 2 == 1:
        return equation + "->" + "".join(map(_subscript, args[-1])), tuple(args[:-1:2])
    return equation, tuple(args[::2])


def _subscript(n: Any) -> str:
    """One sublist entry as an equation letter, with torch's words for one out of range."""
    if n is Ellipsis:
        return "..."
    if 0 <= n < 26:
        return chr(ord("A") + n)
    if 26 <= n < 52:
        return chr(ord("a") + n - 26)
    raise ValueError("einsum(): subscript in subscript list is not within the valid range [0, 52)")


def parse_equation(equation: str, operands: Sequence[Any]) -> tuple[list[str], str]:
    """The operands' letter strings (``...`` spelled out as spare letters) and the output's."""
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise located_error(f"einsum: {equation!r} names {len(terms)} operands, got {len(operands)}")
    spare = [c for c in string.ascii_letters if c not in equation]
    broadcast = max((operand.ndim - len(term.replace("...", "")) for operand, term in zip(operands, terms) if "..." in term), default=0)
    ellipsis = "".join(spare[:broadcast])
    spelled = [spell(term, operand, ellipsis) for term, operand in zip(terms, operands)]
    if not arrow:
        counts = "".join(spelled)
        output = ellipsis + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and c not in ellipsis))
    else:
        output = output.replace("...", ellipsis)
    check_output(equation, output, spelled)
    check_sizes(spelled, operands, ellipsis)
    return spelled, output


class EinsumSizeError(TraceError, RuntimeError):
    """A subscript whose sizes in two operands differ, neither 1 (torch's ``RuntimeError``)."""


def check_sizes(terms: list[str], operands: Sequence[Any], ellipsis: str) -> None:
    """Each explicit subscript has one size in every operand, or 1 there (broadcast), with torch's words."""
    seen: dict[str, int] = {}
    for index, (term, operand) in enumerate(zip(terms, operands)):
        check_diagonal_sizes(term, operand, index)
        for letter, size in zip(term, operand.shape):
            if letter in ellipsis or not isinstance(size, int):
                continue
            if seen.get(letter, 1) not in (1, size) and size != 1:
                raise located(EinsumSizeError, f"einsum(): subscript {letter} has size {size} for operand {index} which "
                                               f"does not broadcast with previously seen size {seen[letter]}")
            seen[letter] = max(seen.get(letter, 1), size)


def check_diagonal_sizes(term: str, operand: Any, index: int) -> None:
    """A letter repeated within one operand (a diagonal) names dims of one size, with torch's words."""
    first_size: dict[str, Any] = {}
    for letter, size in zip(term, operand.shape):
        if first_size.setdefault(letter, size) != size:
            raise located(EinsumDiagonalError, f"einsum(): subscript {letter} is repeated for operand {index} but the "
                                               f"sizes don't match, {size} != {first_size[letter]}")


def spell(term: str, operand: Tensor, ellipsis: str) -> str:
    explicit = len(term.replace("...", ""))
    if "..." in term:
        term = term.replace("...", ellipsis[len(ellipsis) - (operand.ndim - explicit):])
    if len(term) != operand.ndim:
        raise located_error(f"einsum: the subscripts {term!r} name {len(term)} dims of the operand {operand.type}")
    return term


class EinsumDiagonalError(TraceError, RuntimeError):
    """A letter repeated within one operand over dims of different sizes (torch's ``RuntimeError``)."""


def diagonals(operand: Tensor, term: str) -> tuple[Tensor, str]:
    """``operand`` taken along the diagonal of each letter ``term`` repeats (``einsum("ii->i", A)``, a Hessian's
    ``"iaia->ia"``) and its letters: ``Tensor.diagonal`` of the first two dims with that letter, the diagonal last, as
    ``torch.diagonal`` puts it."""
    while len(set(term)) != len(term):
        letter = next(c for c in term if term.count(c) > 1)
        first = term.index(letter)
        second = term.index(letter, first + 1)
        operand = operand.diagonal(0, first, second)
        term = term[:first] + term[first + 1:second] + term[second + 1:] + letter
    return operand, term


def check_output(equation: str, output: str, terms: list[str]) -> None:
    unknown = set(output) - set("".join(terms))
    if unknown or len(set(output)) != len(output):
        raise located_error(f"einsum: the output of {equation!r} must name distinct letters of the operands")


def sum_out(x: Tensor, letters: str, needed: set[str]) -> tuple[Tensor, str]:
    """``x`` summed over the letters nothing later needs."""
    drop = tuple(i for i, letter in enumerate(letters) if letter not in needed)
    if not drop:
        return x, letters
    return x.sum(drop), "".join(letter for letter in letters if letter in needed)


def contract(a: Tensor, a_letters: str, b: Tensor, b_letters: str, later: set[str]) -> tuple[Tensor, str]:
    """The product of two operands over their shared letters; the result keeps the letters in ``later``."""
    a, a_letters = sum_out(a, a_letters, later | set(b_letters))
    b, b_letters = sum_out(b, b_letters, later | set(a_letters))
    batch = [c for c in a_letters if c in b_letters and c in later]
    summed = [c for c in a_letters if c in b_letters and c not in later]
    left = [c for c in a_letters if c not in b_letters]
    right = [c for c in b_letters if c not in a_letters]
    if not summed:
        return broadcast_product(a, a_letters, b, b_letters, batch, left, right)
    a = a.permute(*(a_letters.index(c) for c in batch + left + summed))
    b = b.permute(*(b_letters.index(c) for c in batch + summed + right))
    a_sizes, b_sizes = dict(zip(batch + left + summed, a.shape)), dict(zip(batch + summed + right, b.shape))
    rows = merged(a, len(batch), [a_sizes[c] for c in left], [a_sizes[c] for c in summed])
    columns = merged(b, len(batch), [b_sizes[c] for c in summed], [b_sizes[c] for c in right])
    product = rows @ columns
    batch_shape = tuple(product.shape[: len(batch)])
    return product.reshape(batch_shape + tuple(a_sizes[c] for c in left) + tuple(b_sizes[c] for c in right)), "".join(batch + left + right)


def merged(x: Tensor, batch: int, first: list[Dim], second: list[Dim]) -> Tensor:
    """``x`` of dims ``(batch..., first..., second...)`` as ``(batch..., prod(first), prod(second))``; one product
    may be symbolic (it is then the reshape's -1)."""
    if not first:
        x = x.unsqueeze(batch)
    if not second:
        x = x.unsqueeze(-1)
    if len(first) <= 1 and len(second) <= 1:
        return x
    sizes = [product_of(first), product_of(second)]
    if sizes.count(None) > 1:
        raise located_error(f"einsum: grouping the symbolic dims {first + second} of {x.type} is not supported; keep "
                            "symbolic dims as batch letters (in the output and both operands)")
    return x.reshape(tuple(x.shape[:batch]) + tuple(-1 if size is None else size for size in sizes))


def product_of(dims: list[Dim]) -> int | None:
    """The product of static dims; None if one is symbolic."""
    total = 1
    for dim in dims:
        if not isinstance(dim, int):
            return None
        total *= dim
    return total


def broadcast_product(a: Tensor, a_letters: str, b: Tensor, b_letters: str, batch: list[str], left: list[str],
                      right: list[str]) -> tuple[Tensor, str]:
    """The elementwise product of the operands laid out as ``(batch, left, right)`` with size-1 dims where absent."""
    order = batch + left + right
    return aligned(a, a_letters, order) * aligned(b, b_letters, order), "".join(order)


def aligned(x: Tensor, letters: str, order: list[str]) -> Tensor:
    present = [c for c in order if c in letters]
    x = x.permute(*(letters.index(c) for c in present)) if present != list(letters) else x
    missing = tuple(i for i, c in enumerate(order) if c not in letters)
    for axis in missing:
        x = x.unsqueeze(axis)
    return x
