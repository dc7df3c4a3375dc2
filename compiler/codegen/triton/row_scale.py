"""A GEMM's A operand scaled per row by a reduction over its own row: RMSNorm
as the prologue of the projection that reads it.

At decode a norm's output feeds one projection (after horizontal fusion: the
QKV, the gate/up and the LM head GEMMs), and the norm is a launch of its own
that writes the normalised row for the GEMM to read again. The fusion pass
puts such a norm in the GEMM's group (``passes/fuse.py``), and the template
computes the group as follows. With

    A = views(F * s),  s = f(reduce_k g(x))   (one factor per row: [..., 1])

the product is ``s[m] * sum_k F[m, k] * B[k, n]``: ``F`` (A with ``s`` set to
one: the norm's weight times ``x``) is computed on each A tile in the K loop,
the row reduction (RMSNorm's sum of squares) accumulates from the same loaded
``x`` tiles, and after the loop ``s`` scales the accumulators before the
epilogue. For RMSNorm::

    A = w * cast(x * rsqrt(mean(x * x) + eps))   ->   F = w * cast(x), s = rsqrt(mean(x * x) + eps)

Factoring ``s`` out of the sum is exact in real arithmetic; in floating point
``F`` is rounded to A's type without the factor (``cast(x)`` instead of
``cast(x * s)``), a difference of one rounding of A's type, which the
candidate check's tolerance for that type covers.

The form is checked here, not assumed: A depends on the reduction only
through one chain of ``mul`` (and float casts) whose other operands do not
depend on it, ending at a per-row factor; the reduction is a ``sum`` or
``mean`` over the last dim of a value shaped like A's rows; no prologue value
leaves the group. Anything else raises :class:`Unsupported` (the group is not
formed with its prologue, and the norm runs as its own kernel).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from braze.compiler.codegen.triton import exprs
from braze.compiler.codegen.triton.emit import IDENTITIES, LAYOUT, RESHAPES
from braze.compiler.codegen.triton.indexing import Unsupported, eq, prod, size
from braze.ir import Graph, Node, Value

REDUCTIONS = ("sum", "mean")
ORDER_KEEPING = RESHAPES | IDENTITIES   # views that keep each row's elements in place


@dataclass(frozen=True)
class RowScale:
    """The prologue of A: ``F * factor`` where ``factor`` is ``f(reduction)``."""

    factor: Node          # s: one value per row, [..., 1]
    reduction: Node       # the sum or mean over the last dim that s is computed from
    operand: Value        # what the reduction reduces: shaped like ``base``
    base: Value           # A before its order-keeping views: [..., K]
    views: tuple          # the view nodes from A down to ``base`` (A's first)
    nodes: frozenset      # every node computing A (views included)


def _ancestors(v: Value) -> list[Node]:
    """The compute nodes ``v`` depends on, ``v``'s own included (inputs excluded)."""
    seen: dict[Node, None] = {}
    stack = [v.node]
    while stack:
        n = stack.pop()
        if n in seen or n.op == "input":
            continue
        seen[n] = None
        stack.extend(x.node for x in n.inputs)
    return list(seen)


def _is_float_cast(n: Node) -> bool:
    return n.op == "_to_copy" and n.args[0].type.dtype.is_floating_point and n.type.dtype.is_floating_point


def row_scale(graph: Graph, gemm: Node, a: Value, k) -> Optional[RowScale]:
    """The row-scale prologue of the GEMM's A operand ``a`` (K columns), None when A
    is only views of inputs; raises Unsupported when A is computed some other way."""
    nodes = _ancestors(a)
    if all(n.op in LAYOUT for n in nodes):
        return None
    base, views = a, []
    while base.node.op in ORDER_KEEPING:
        views.append(base.node)
        base = base.node.args[0]
    if base.type.rank < 1 or not eq(size(base.type.shape[-1]), k):
        raise Unsupported(f"A is computed as {base.type}, not reshaped rows of K = {k} columns")
    reductions = [n for n in nodes if n.op in REDUCTIONS]
    others = [n.op for n in nodes if n.op not in REDUCTIONS and n.op not in exprs.TABLE and n.op not in LAYOUT]
    if others or len(reductions) != 1:
        ops = ", ".join(others or [n.op for n in nodes if n.op not in LAYOUT])
        raise Unsupported(f"GEMM operand computed by {ops}: a prologue is one sum or mean over the row, "
                          "then pointwise ops")
    red = reductions[0]
    operand = red.args[0]
    dims = red.args[1] if len(red.args) > 1 else red.attr("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    rank = operand.type.rank
    if len(dims) != 1 or dims[0] % rank != rank - 1 or red.attr("dtype") is not None:
        raise Unsupported(f"{red.op} over dims {dims}: a row-scale prologue reduces the last dim only")
    if tuple(map(str, operand.type.shape)) != tuple(map(str, base.type.shape)):
        raise Unsupported(f"the row reduction reads {operand.type}, not A's rows {base.type}")

    in_prologue = set(nodes)
    users = graph.users()
    if any(v.node in in_prologue for v in graph.outputs) or any(
            u not in in_prologue and u is not gemm for n in nodes for u in users[n]):
        raise Unsupported("a prologue value is read outside the GEMM's A operand")

    dependents = {red}
    for n in graph.compute_nodes:   # topological order
        if n in in_prologue and any(x.node in dependents for x in n.inputs):
            dependents.add(n)
    # from A's rows down the one chain of multiplications that carries the reduction
    chain, v, factor = set(views), base, None
    while factor is None:
        n = v.node
        if n.op == "input" or n not in dependents:
            raise Unsupported("A is computed without the row reduction")
        chain.add(n)
        if n.op in IDENTITIES or _is_float_cast(n):
            v = n.args[0]
            continue
        if n.op != "mul":
            raise Unsupported(f"A depends on the row reduction through {n.op} (only products and casts "
                              "factor out)")
        carried = [x for x in n.args if isinstance(x, Value) and x.node in dependents]
        if len(carried) != 1:
            raise Unsupported("a product with the row reduction in both of its operands")
        v = carried[0]
        shape = v.type.shape
        if len(shape) == rank and eq(size(shape[-1]), 1) and not eq(size(n.type.shape[-1]), 1):
            factor = v.node
            chain.discard(factor)
    if factor.op == "input" or factor not in dependents:
        raise Unsupported("the per-row factor does not come from the row reduction")
    if not all(eq(size(f), 1) or eq(size(f), size(b)) for f, b in zip(factor.type.shape[:-1], base.type.shape[:-1])):
        raise Unsupported(f"a factor of shape {factor.type} for rows {base.type}")
    computing_factor = set(_ancestors(factor.out())) & dependents
    stray = dependents - computing_factor - chain
    if stray:
        raise Unsupported(f"the row reduction reaches A other than as one factor (through {sorted(n.op for n in stray)})")
    if not eq(prod(base.type.shape[:-1]) * size(k), prod(a.type.shape)):
        raise Unsupported("A's views change its element count")
    return RowScale(factor, red, operand, base, tuple(views), frozenset(nodes))


__all__ = ["RowScale", "row_scale", "REDUCTIONS"]
