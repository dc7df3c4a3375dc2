"""A gather that only reshapes becomes ``reshape``.

Hugging Face's mask builders index the 2-D padding mask with constant aranges
(``mask[batch_arange, kv_arange]`` over broadcast shapes: ``index.Tensor`` with
folded ``arange`` constants), which names every element once and in order: the
result is the mask reshaped. As a gather it was a generic ATen index kernel of
its own in every decode step (5.5 us on an H100 for 256 booleans); as a view it
costs nothing and the pointwise group after it reads the mask directly.

The rule proves the equivalence at compile time on the constants themselves:
the index tensors (constants, or static views of constants) applied to the
element numbers ``arange(numel).reshape(shape)`` of the operand must give
``0, 1, ..., numel - 1`` in the result's shape. It runs after the attention and
padding passes, whose mask analyses read the ``index`` form.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from braze.ir import Graph, Value, get_op, rewrite
from braze.ir.builder import Builder
from braze.ir.graph import has_syms
from braze.ir.interpreter import MAX_VIEW_CHAIN, is_strided_view

# Largest operand whose element numbers are built to check the rule (a mask of a few rows).
MAX_ELEMENTS = 1 << 22


def index_as_view(graph: Graph, ctx=None) -> Graph:
    def rule(n, b: Builder):
        if n.op != "index" or n.kwargs or len(n.args) != 2:
            return None
        x, idx = n.args
        if not isinstance(x, Value) or not isinstance(idx, (list, tuple)) or len(idx) != x.type.rank:
            return None
        if not (x.type.is_static and n.type.is_static):
            return None
        numel = math.prod(x.type.shape)
        if numel != math.prod(n.type.shape) or not 0 < numel <= MAX_ELEMENTS:
            return None
        values = [_constant(i, b) for i in idx]
        if any(v is None or v.dtype not in (torch.int64, torch.int32) for v in values):
            return None
        ids = torch.arange(numel).reshape(x.type.shape)
        try:
            got = ids[tuple(v.long() for v in values)]
        except (IndexError, RuntimeError):
            return None
        if tuple(got.shape) != tuple(n.type.shape) or not torch.equal(got.reshape(-1), torch.arange(numel)):
            return None
        return (b.call("reshape", x, tuple(n.type.shape)),)

    return rewrite(graph, rule)


def _constant(v, b: Builder, depth: int = 0) -> Optional[torch.Tensor]:
    """The value of ``v`` when it is a constant or a static view chain of one; else None."""
    if not isinstance(v, Value) or depth > MAX_VIEW_CHAIN:
        return None
    node = v.node
    if node.op == "constant":
        return b.constants.get(node.args[0])
    if not is_strided_view(node) or has_syms((node.args[1:], node.kwargs)):
        return None
    base = _constant(node.args[0], b, depth + 1)
    if base is None:
        return None
    try:
        return get_op(node.op).resolve(node.overload)(base, *node.args[1:], **dict(node.kwargs))
    except (RuntimeError, TypeError, ValueError):
        return None
