"""Common-subexpression elimination: one node per (op, operands, attributes).

Ops with side effects or randomness (the opaque category) are never merged.
"""
from __future__ import annotations

from braze.ir import Category, Graph, get_op, rewrite


def cse(graph: Graph, ctx=None) -> Graph:
    seen: dict = {}

    def rule(n, b):
        if get_op(n.op).category in (Category.OPAQUE, Category.IO):
            return None
        try:
            key = (n.op, n.overload, n.args, n.kwargs)
            hash(key)
        except TypeError:
            return None
        prev = seen.get(key)
        if prev is None:
            seen[key] = n
            return None
        return prev.outputs

    return rewrite(graph, rule)
