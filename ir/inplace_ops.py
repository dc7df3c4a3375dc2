"""Ops that write one of their operands in place.

The IR is functional up to the last pass: capture functionalises every
in-place op (``compiler/capture.py``) and records, in ``Graph.writes``, which
graph inputs hold which output afterwards. ``passes/reinplace.py`` then turns
a scatter whose base is such an input (a KV cache) or a fresh buffer into one
of the ops below, so that only the written rows are touched. Each declares
``OpDef.writes = 0``: it writes operand 0 and returns it.

NOTE: an in-place node must be the last reader of the value it writes; the
verifier checks that every other user of that value comes before it.
"""
from __future__ import annotations

import torch

from braze.ir.registry import REGISTRY, Category, OpDef, register

aten = torch.ops.aten
EACH = "each"   # OpDef.writes of a list op: output j is element j of operand 0, written in place


def written_operands(node) -> list:
    """(output index, the operand Value that output aliases) for each operand ``node`` writes."""
    w = REGISTRY[node.op].writes if node.op in REGISTRY else None
    if w is None:
        return []
    if w == EACH:
        return list(enumerate(node.args[0]))
    return [(0, node.args[w])]


def written_base(v):
    """The operand Value that output ``v`` of an in-place node aliases (None if it aliases none)."""
    for j, base in written_operands(v.node):
        if j == v.index:
            return base
    return None


def _same_as_base(base, *args, **kwargs):
    return (base.type,)


def _slice_scatter_(base: torch.Tensor, src: torch.Tensor, dim: int = 0, start=None, end=None, step: int = 1):
    """``base[dim: start:end:step] = src`` in place; returns ``base``."""
    aten.slice.Tensor(base, dim, start, end, step).copy_(src)
    return base


def _select_scatter_(base: torch.Tensor, src: torch.Tensor, dim: int, index: int):
    """``base.select(dim, index) = src`` in place; returns ``base``."""
    base.select(dim, index).copy_(src)
    return base


# The functional scatter each in-place op replaces (passes/reinplace.py).
INPLACE_OF = {"index_copy": "index_copy_", "index_put": "index_put_", "slice_scatter": "slice_scatter_",
              "select_scatter": "select_scatter_"}
# Pointwise ops written in place when their result replaces operand 0 (a step counter).
POINTWISE_INPLACE_OF = {"add": "add_", "sub": "sub_", "mul": "mul_", "div": "div_"}

def _distinct_rows_sample(node, env, generator) -> dict:
    """Random rows for ``index_copy_``'s index that keep its contract: no row named twice
    (a repeated row is written in any order on a GPU: no two runs need agree)."""
    base, dim, index = node.args[0], node.args[1], node.args[2]
    base = base[0] if isinstance(base, (list, tuple)) else base
    rows = base.type.concrete_shape(env)[dim]
    n = index.type.concrete_shape(env)
    n = n[0] if n else 1
    if n > rows:
        return {}
    pick = torch.randperm(rows, generator=generator)[:n]
    return {index: pick.reshape(index.type.concrete_shape(env)).to(index.type.dtype)}


register(OpDef("index_copy_", Category.OPAQUE, aten.index_copy_, packet=aten.index_copy_, writes=0,
               sample=_distinct_rows_sample, doc="base.index_copy_(dim, index, src): writes the rows named by index"))
register(OpDef("index_put_", Category.OPAQUE, aten.index_put_, packet=aten.index_put_, writes=0,
               doc="base.index_put_(indices, values, accumulate): writes the elements indexed"))
register(OpDef("slice_scatter_", Category.OPAQUE, _slice_scatter_, infer=_same_as_base, writes=0,
               doc="slice_scatter written in place: base[start:end:step] along dim = src"))
register(OpDef("select_scatter_", Category.OPAQUE, _select_scatter_, infer=_same_as_base, writes=0,
               doc="select_scatter written in place: base.select(dim, index) = src"))
for _name in POINTWISE_INPLACE_OF.values():
    _packet = getattr(aten, _name)
    register(OpDef(_name, Category.OPAQUE, _packet, packet=_packet, writes=0,
                   doc=f"{_name[:-1]} written into operand 0"))


def _foreach_add_(bases, other):
    """``b += other`` for every tensor of ``bases`` in one launch (``torch._foreach_add_``)."""
    torch._foreach_add_(list(bases), other)
    return tuple(bases)


def _foreach_infer(bases, other):
    return tuple(b.type for b in bases)


register(OpDef("foreach_add_", Category.OPAQUE, _foreach_add_, infer=_foreach_infer, writes=EACH,
               doc="every tensor of operand 0 plus a number, in place, in one launch (step counters)"))


def _index_copy_many_(bases, dim, index, srcs):
    """``base.index_copy_(dim, index, src)`` for each pair (the K and V cache writes of a
    layer, one node: a kernel may write both in one launch)."""
    for b, src in zip(bases, srcs):
        b.index_copy_(dim, index, src)
    return tuple(bases)


register(OpDef("index_copy_many_", Category.OPAQUE, _index_copy_many_,
               infer=lambda bases, dim, index, srcs: tuple(b.type for b in bases), writes=EACH,
               sample=_distinct_rows_sample,
               doc="index_copy_ of several buffers at the same rows (a layer's K and V cache writes)"))
