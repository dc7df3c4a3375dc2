"""A layer's K and V cache writes as one node.

After ``reinplace`` a decoder layer writes its new keys and values with two
in-place ``index_copy_`` nodes at the same rows (the step's cache positions)
of two buffers of one shape. They become one ``index_copy_many_`` node, which
a code generator may run as one kernel (``compiler/codegen/triton_cache``;
the library call runs the two copies). The merged node sits where the later
write was: nothing reads the earlier write's result before that point (the
rule checks), and nothing reads the earlier buffer after its write (the
in-place rule ``reinplace`` kept).
"""
from __future__ import annotations

from dataclasses import replace

from braze.ir import Graph, Node, Value
from braze.ir.graph import map_values
from braze.passes.context import PassContext


def merge_cache_writes(graph: Graph, ctx=None) -> Graph:
    ctx = PassContext.of(ctx)
    if ctx.option("backend", "auto") == "torch":
        return graph
    order = {n: k for k, n in enumerate(graph.nodes)}
    users = graph.value_users()
    pending: dict = {}          # (index value, dim, base type) -> the earlier write waiting for its pair
    pair_of: dict[Node, Node] = {}   # the later write -> the earlier one
    for n in graph.compute_nodes:
        if n.op != "index_copy_" or n.kwargs or len(n.args) != 4 or not isinstance(n.args[1], int):
            continue
        base, dim, index, _ = n.args
        key = (index, dim % base.type.rank, base.type)
        first = pending.pop(key, None)
        if first is None or any(order[u] <= order[n] for u in users.get(first.out(), ())):
            pending[key] = n    # no partner yet, or the earlier write is read before (or by) this one
            continue
        pair_of[n] = first
    if not pair_of:
        return graph
    firsts = set(pair_of.values())
    env: dict[Value, Value] = {}

    def remap(obj):
        return map_values(obj, lambda v: env.get(v, v))

    nodes = []
    for n in graph.nodes:
        if n in firsts:
            continue
        first = pair_of.get(n)
        if first is not None:
            a, b = remap(first.args), remap(n.args)
            node = Node("index_copy_many_", ((a[0], b[0]), a[1], a[2], (a[3], b[3])), (),
                        (first.types[0], n.types[0]), name=f"kv_{first.name or 'index_copy'}")
            env[first.out()], env[n.out()] = node.out(0), node.out(1)
        else:
            node = n.with_args(remap(n.args), remap(n.kwargs))
            if node is not n:
                for i in range(len(n.types)):
                    env[Value(n, i)] = Value(node, i)
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes), outputs=tuple(env.get(v, v) for v in graph.outputs))


__all__ = ["merge_cache_writes"]
