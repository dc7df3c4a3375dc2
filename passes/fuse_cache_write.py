"""The rotary group and the KV-cache write of a layer as one node.

After ``merge_parallel_groups`` and ``merge_cache_writes`` a decoder layer runs

    y = fused(...)                                    # rotary over Hq + Hk heads: [B, Hq + Hk, S, D]
    q, k = slice(y, 1, 0, Hq), slice(y, 1, Hq, Hq + Hk)
    kc', vc' = index_copy_many_((kc, vc), 2, index, (k, v))

two launches, the second reading back the rotated keys the first wrote. They
become one ``cache_write_heads_`` node (``ir/cache_write.py``) whose kernel
stores the query heads and writes the key and value rows straight into the
caches. Taken only where ``y`` is read by those two slices alone, ``k`` by the
write alone, the caches and ``y`` have one dtype, the write is along dim 2 of
``[B, H, S, D]`` caches with ``v`` shaped like ``k``, every reader of ``q``
comes after the write (the node sits where the write was), and a code
generator accepts the node's subgraph as kind ``cache_write`` (on the CPU
without Triton none does: the two launches stay).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from braze.ir import Graph, Node, Value
from braze.ir.graph import map_values
from braze.ir.types import dims_equal
from braze.passes.context import PassContext

BIG = 1 << 62   # a slice end at or past the dim's size means "to the end"


def _head_slice(n: Node, y: Value) -> Optional[tuple]:
    """(start, end) of ``slice(y, 1, start, end)`` (end clipped to the dim), else None."""
    if n.op != "slice" or len(n.args) < 4 or n.args[0] != y or n.kwargs:
        return None
    dim, start, end = n.args[1], n.args[2], n.args[3]
    step = n.args[4] if len(n.args) > 4 else 1
    if y.type.rank != 4 or dim % 4 != 1 or step != 1 or not isinstance(start, int):
        return None
    h = y.type.shape[1]
    if isinstance(end, int) and end >= BIG:
        end = h
    return start, end


def _match(w: Node, users, order) -> Optional[tuple]:
    bases, dim, index, srcs = w.args
    if len(bases) != 2 or len(srcs) != 2 or not isinstance(dim, int) or dim % 4 != 2:
        return None
    (kc, vc), (ks, vs) = bases, srcs
    kn = ks.node
    if kn.op != "slice" or users[kn] != [w]:
        return None
    y = kn.args[0]
    r = y.node
    if r.op != "fused" or r.attr("kind") != "pointwise" or len(r.types) != 1:
        return None
    span = _head_slice(kn, y)
    h = y.type.shape[1]
    if span is None or not isinstance(h, int) or span[1] != h or not 0 < span[0] < h:
        return None
    split = span[0]
    others = [u for u in users[r] if u is not kn]
    if len(others) != 1 or _head_slice(others[0], y) != (0, split):
        return None
    qn = others[0]
    if any(order[u] < order[w] for u in users[qn]):
        return None
    if kc.type.rank != 4 or kc.type.dtype != y.type.dtype or vc.type.dtype != vs.type.dtype:
        return None
    if not all(dims_equal(a, b) for a, b in zip(vs.type.shape, ks.type.shape)):
        return None
    return r, qn, kn


def _heads_graph(r: Node, qn: Node, kn: Node) -> Graph:
    """The rotary group's subgraph with the two head slices of its output as outputs."""
    sub: Graph = r.attr("graph")
    (y,) = sub.outputs
    q = Node("slice", (y,) + tuple(qn.args[1:]), qn.kwargs, qn.types, overload=qn.overload, name="q_heads")
    k = Node("slice", (y,) + tuple(kn.args[1:]), kn.kwargs, kn.types, overload=kn.overload, name="k_rows")
    return replace(sub, nodes=sub.nodes + (q, k), outputs=(q.out(), k.out()), name=f"heads_{sub.name}")


def fuse_cache_write(graph: Graph, ctx=None) -> Graph:
    ctx = PassContext.of(ctx)
    if ctx.option("backend", "auto") == "torch":
        return graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    users = graph.users()
    plans: dict[Node, tuple] = {}
    for w in graph.compute_nodes:
        if w.op != "index_copy_many_":
            continue
        m = _match(w, users, order)
        if m is None:
            continue
        heads = _heads_graph(*m)
        if not ctx.supports("cache_write", heads):
            ctx.decline("fuse_cache_write", "rotary group + KV cache write -> cache_write_heads_",
                        "no code generator takes the group here", graph)
            continue
        plans[w] = (*m, heads)
    if not plans:
        return graph
    dropped = {x for r, qn, kn, _ in plans.values() for x in (r, qn, kn)}
    env: dict[Value, Value] = {}

    def remap(obj):
        return map_values(obj, lambda v: env.get(v, v))

    nodes = []
    for n in graph.nodes:
        if n in dropped:
            continue
        plan = plans.get(n)
        if plan is None:
            node = n.with_args(remap(n.args), remap(n.kwargs))
            if node is not n:
                for i in range(len(n.types)):
                    env[Value(n, i)] = Value(node, i)
            nodes.append(node)
            continue
        r, qn, kn, heads = plan
        bases, dim, index, (_, v) = remap(n.args)
        node = Node("cache_write_heads_", (bases, dim, index, v, remap(r.args)), (("heads", heads),),
                    n.types + qn.types, name=f"rope_{n.name or 'kv'}")
        env[n.out(0)], env[n.out(1)], env[qn.out()] = node.out(0), node.out(1), node.out(2)
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes), outputs=tuple(env.get(v, v) for v in graph.outputs))


__all__ = ["fuse_cache_write"]
