"""Constant folding of weight-only subgraphs.

A node whose operands are all constants (parameters, buffers, earlier folds)
and whose arguments are static is evaluated once at compile time and
becomes a constant, e.g. ``cat([wq, wk, wv])`` or ``weight.to(float32)``.
Views of constants are not folded (see PURE_VIEWS). A fold that
would store much more than it reads (``expand`` of a weight to a large
shape, a large ``full`` mask) is declined: it would trade a cheap op for
memory traffic on every call.
"""
from __future__ import annotations

import torch

from braze.ir import Category, Graph, get_op, rewrite
from braze.ir.graph import has_syms, map_values
from braze.ir.builder import Builder
from braze.ir.types import TensorType

# Largest folded result that reads no constant at all (creation ops).
MAX_CREATED = 1 << 16
FOLDABLE = (Category.POINTWISE, Category.VIEW, Category.REDUCTION, Category.GATHER, Category.CREATION)
# NOTE: views of constants stay views: folding t(weight) would keep a second,
# transposed copy of every weight alive for nothing (GEMMs take strides).
PURE_VIEWS = {"reshape", "view", "_unsafe_view", "permute", "t", "transpose", "expand", "slice", "select", "alias",
              "unsqueeze", "squeeze", "detach", "lift_fresh_copy", "clone", "contiguous", "flatten", "unflatten",
              "diagonal", "as_strided", "narrow", "unbind", "split", "split_with_sizes", "chunk", "movedim"}


def fold_constants(graph: Graph, ctx=None) -> Graph:
    def rule(n, b: Builder):
        if get_op(n.op).category not in FOLDABLE or n.op in PURE_VIEWS:
            return None
        ins = n.inputs
        if not all(v.node.op == "constant" for v in ins):
            return None
        if has_syms(n.args) or has_syms(tuple(v for _, v in n.kwargs)) or not all(t.is_static for t in n.types):
            return None
        read = sum(_numel(v.type) for v in ins)
        written = sum(_numel(t) for t in n.types)
        if written > max(read, MAX_CREATED if not ins else 0):
            return None
        def value(v):
            return b.constants[v.node.args[0]]

        with torch.no_grad():
            out = get_op(n.op).resolve(n.overload)(*map_values(n.args, value),
                                                   **{k: map_values(x, value) for k, x in n.kwargs})
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(b.constant(o.contiguous(), f"folded.{n.name or n.op}") for o in outs)

    return rewrite(graph, rule)


def _numel(t: TensorType) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n
