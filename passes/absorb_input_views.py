"""Layout ops feeding a pointwise or reduction group move inside it.

``fuse`` leaves the views at a group's boundary outside (``prune_boundary_views``):
they move no bytes, and the kernel reads its strided operands. They still cost
the plain call: each runs as an ATen op on the host every call (2-6 us each), and
each strided operand adds its strides to the kernel's arguments. Hugging Face's
rotary embedding is the worst case: per projection a ``view`` to heads, a
``transpose``, two ``slice`` halves and two ``unsqueeze`` of cos/sin, ten host ops
around two kernels, while the GPU work is ~60 us (issue 18: the plain call ran
0.163 ms against torch.compile's 0.065 on an H100 while the kernels alone took
0.059).

This pass rebuilds each such group with the view chains of its operands inside
its subgraph: the group reads the chains' bases (a graph input, another group's
output) and the template's index map does the reshape / permute / slice / expand
(views shared by several operands, e.g. a transpose both slices read, are built
once). A group is rewritten only where a code generator takes the new subgraph
(``ctx.supports``) and its symbols are still bound by its operands; not with
``backend="torch"``. Views left without a reader are removed. The TVM templates
take the views inside as the Triton ones do (2026-12-08: a bf16 Llama decode step
on the CPU ran half its host views and its rotary kernel 89 -> 57 us a layer).
"""
from __future__ import annotations

from dataclasses import replace

from braze.ir import Graph, Node, Value, eliminate_dead
from braze.ir.fused import unbound_symbols
from braze.ir.graph import map_values
from braze.passes.context import PassContext

VIEWS = frozenset({"reshape", "permute", "expand", "slice", "select"})
KINDS = ("pointwise", "reduction")


def _is_view(n: Node) -> bool:
    """A single-output layout op of one tensor (its other arguments sizes, dims, bounds)."""
    return (n.op in VIEWS and len(n.types) == 1 and bool(n.args) and isinstance(n.args[0], Value)
            and not any(isinstance(a, Value) for a in n.args[1:])
            and not any(isinstance(a, Value) for _, a in n.kwargs))


def _absorbed(f: Node) -> tuple[tuple, Graph] | None:
    """``(operands, subgraph)`` of ``f`` with its operands' view chains inside, or None."""
    sub: Graph = f.attr("graph")
    operands = list(f.args)
    if not all(isinstance(v, Value) for v in operands) or not any(_is_view(v.node) for v in operands):
        return None
    new_ops: list[Value] = []
    new_inputs: list[Node] = []
    inner: dict[Value, Value] = {}      # outer value -> its value inside the new subgraph
    body: list[Node] = []

    def base_input(v: Value) -> Value:
        if v not in inner:
            i = len(new_inputs)
            inp = Node("input", (f"in{i}",), types=(v.type,), name=f"in{i}")
            new_inputs.append(inp)
            new_ops.append(v)
            inner[v] = inp.out()
        return inner[v]

    def build(v: Value) -> Value:
        if v in inner:
            return inner[v]
        n = v.node
        if not _is_view(n):
            return base_input(v)
        src = build(n.args[0])
        m = Node(n.op, (src,) + tuple(n.args[1:]), n.kwargs, n.types, n.overload, n.name)
        body.append(m)
        inner[v] = m.out()
        return inner[v]

    env: dict[Value, Value] = {}
    for inp, v in zip(sub.inputs, operands):
        env[inp.out()] = build(v)
    for n in sub.nodes:
        if n.op == "input":
            continue
        m = n.with_args(map_values(n.args, lambda x: env.get(x, x)), map_values(n.kwargs, lambda x: env.get(x, x)))
        body.append(m)
        for i in range(len(n.types)):
            env[Value(n, i)] = Value(m, i)
    new_sub = Graph(tuple(new_inputs) + tuple(body), tuple(new_inputs), tuple(env[v] for v in sub.outputs),
                    dict(sub.constants), (), sub.name)
    if unbound_symbols(new_sub):
        return None
    return tuple(new_ops), new_sub


def absorb_input_views(graph: Graph, ctx=None) -> Graph:
    ctx = PassContext.of(ctx)
    if ctx.option("backend", "auto") == "torch":
        return graph
    env: dict[Value, Value] = {}
    nodes = []
    changed = False
    for old in graph.nodes:
        n = old.with_args(map_values(old.args, lambda v: env.get(v, v)),
                          map_values(old.kwargs, lambda v: env.get(v, v)))
        got = _absorbed(n) if n.op == "fused" and n.attr("kind") in KINDS else None
        if got is not None and ctx.supports(n.attr("kind"), got[1]):
            ops, sub = got
            kwargs = tuple((k, sub if k == "graph" else v) for k, v in n.kwargs)
            m = Node("fused", ops, kwargs, n.types, n.overload, n.name)
            n, changed = m, True
        if n is not old:
            for i in range(len(old.types)):
                env[Value(old, i)] = Value(n, i)
        nodes.append(n)
    if not changed:
        return graph
    return eliminate_dead(replace(graph, nodes=tuple(nodes), outputs=tuple(env.get(v, v) for v in graph.outputs)))


__all__ = ["absorb_input_views"]
