"""Horizontal fusion of lone pointwise ops that read only graph inputs and constants.

After ``fuse``, a pointwise op that joined no group runs as a library call:
one launch for one small result. A decoder with Hugging Face's static cache
has one per layer, each reading only that layer's own inputs:

    cache_position_i = arange(n) + cumulative_length_i        (i = 0 .. 15)

Such ops depend on nothing computed in the graph, so any set of them with
one output shape is convex and can run as one pointwise kernel with one
output each (the group sits before its first reader). Ops whose result the
graph returns are left alone: an input written back (the ``+= n`` of the
same counters) becomes an in-place update in ``reinplace``, where a group
output would be a copy. A merged group is formed only where a backend takes
it (``ctx.supports``).
"""
from __future__ import annotations

from collections import defaultdict

from braze.ir import Graph, Node
from braze.ir.fused import fuse_groups, subgraph_of
from braze.passes.context import PassContext
from braze.passes.fuse import is_pointwise

LEAF_OPS = ("input", "constant")


def _leaf_pointwise(n: Node, outputs: set) -> bool:
    return (is_pointwise(n) and len(n.types) == 1 and n.out() not in outputs
            and all(v.node.op in LEAF_OPS for v in n.inputs))


def merge_leaf_pointwise(graph: Graph, ctx=None) -> Graph:
    ctx = PassContext.of(ctx)
    if not ctx.option("fuse", True) or ctx.option("backend", "auto") == "torch":
        return graph
    outputs = set(graph.outputs)
    by_shape: dict[tuple, list[Node]] = defaultdict(list)
    for n in graph.compute_nodes:
        if _leaf_pointwise(n, outputs):
            t = n.types[0]
            by_shape[(tuple(str(d) for d in t.shape), str(t.device))].append(n)
    groups = []
    for nodes in by_shape.values():
        if len(nodes) < 2:
            continue
        _, sub, _ = subgraph_of(graph, nodes, "pointwise")
        if ctx.supports("pointwise", sub):
            groups.append((nodes, "pointwise"))
        else:
            ctx.decline("merge_leaf_pointwise", "merge lone pointwise ops of one shape",
                        f"no backend takes the {len(nodes)} ops {sorted({n.op for n in nodes})} as one kernel", graph)
    return fuse_groups(graph, groups, at_first=True) if groups else graph


__all__ = ["merge_leaf_pointwise"]
