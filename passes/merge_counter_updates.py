"""Step counters advanced in one launch.

Hugging Face's static cache keeps one step counter per layer and advances
each with ``cumulative_length += n``; after ``reinplace`` those are in-place
``add_`` nodes on graph inputs, one small launch each (16 a decode step of a
16-layer model). Every such update that only writes back to the caller (its
result has no reader in the graph) and adds the same number on the same
device joins one ``foreach_add_`` (``torch._foreach_add_``: one kernel for the
list), placed where the last of them was: each was already after every
reader of its counter, so the merged update is too.
"""
from __future__ import annotations

from dataclasses import replace

from braze.ir import Graph, Node, Value
from braze.passes.context import PassContext


def _counter_update(n: Node, inputs: set, returned: set, users: dict):
    """The merge key of an in-place ``add_`` of a number to a graph input that is only returned."""
    if n.op != "add_" or len(n.args) != 2 or n.kwargs:
        return None
    base, other = n.args
    if isinstance(other, bool) or not isinstance(other, (int, float)):
        return None
    if base not in inputs or n.out() not in returned or users.get(n.out()):
        return None
    return (repr(other), str(base.type.device))


def merge_counter_updates(graph: Graph, ctx=None) -> Graph:
    ctx = PassContext.of(ctx)
    if ctx.option("backend", "auto") == "torch":
        return graph
    inputs = {n.out() for n in graph.inputs}
    returned = {graph.outputs[j] for _, j in graph.writes}
    users = graph.value_users()
    groups: dict = {}
    for n in graph.compute_nodes:
        key = _counter_update(n, inputs, returned, users)
        if key is not None:
            groups.setdefault(key, []).append(n)
    groups = {k: ns for k, ns in groups.items() if len(ns) > 1}
    if not groups:
        return graph
    merged: dict[Node, Node] = {}      # last member -> the foreach node
    out_of: dict[Value, Value] = {}    # a member's output -> the foreach output
    for ns in groups.values():
        bases = tuple(n.args[0] for n in ns)
        node = Node("foreach_add_", (bases, ns[0].args[1]), (), tuple(b.type for b in bases),
                    name=f"counters_{ns[0].name or 'add_'}")
        merged[ns[-1]] = node
        for j, n in enumerate(ns):
            out_of[n.out()] = node.out(j)
    members = {v.node for v in out_of}
    nodes = []
    for n in graph.nodes:
        if n in merged:
            nodes.append(merged[n])
        elif n not in members:
            nodes.append(n)
    return replace(graph, nodes=tuple(nodes), outputs=tuple(out_of.get(v, v) for v in graph.outputs))


__all__ = ["merge_counter_updates"]
