"""Fused groups: the contract between the fusion passes and code generators.

A fused group is one node ``fused(*operands, graph=<subgraph>, kind=<kind>,
name=<readable name>)``. The subgraph's inputs are bound to the operands in
order; its outputs are the node's outputs. ``kind`` tells codegen which
template applies:

``pointwise``
    POINTWISE ops and layout ops (reshape, permute, expand, slice, select,
    cat) only; every output has the same shape, the iteration domain.
    Operands may have any shape: codegen folds the layout ops into index
    arithmetic (a broadcast operand is read with stride 0, a ``cat`` is a
    select between two loads).
``reduction``
    As pointwise, plus REDUCTION ops (sum, mean, amax, amin, var, var_mean,
    _softmax, _log_softmax) that all reduce the last dimension of one row
    domain ``[rows..., N]``. Outputs are row-shaped (``[rows..., N]``) or
    reduced (``[rows..., 1]`` with keepdim, ``[rows...]`` without). Softmax,
    LayerNorm, RMSNorm and add + RMSNorm (two outputs: the sum and the
    normalised value) are each one such group.
``gemm``
    Exactly one GEMM (mm, addmm, bmm) whose A and B are subgraph inputs
    (possibly through permute/reshape/expand), followed by a pointwise
    epilogue on its output (bias, activation, scaling, residual add, cast,
    reshape); outputs are the GEMM output's shape or views of it. Several
    outputs are allowed (e.g. the pre- and post-activation value).

A ``reduction`` or ``gemm`` group may end an output in ``unpack`` (padding
elimination, ``ir/padding.py``) of one of its row-shaped values, one packed
token per row: the kernel stores each row at its padded position (a scatter
store, ``compiler/codegen/triton/scatter.py``).

``fuse_groups`` performs the surgery for a list of node groups; which
groups to form is the fusion pass's decision (``passes/fuse.py``).
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

from braze.ir.builder import eliminate_dead
from braze.ir.graph import Graph, Node, Value, map_values
from braze.ir.types import Sym

KINDS = ("pointwise", "reduction", "gemm")


def subgraph_of(graph: Graph, nodes: Sequence[Node], name: str = "fused") -> tuple[list[Value], Graph, list[Value]]:
    """Cut ``nodes`` out of ``graph`` as a subgraph.

    Returns (operands, subgraph, outer outputs): the values the group reads
    from outside (in first-use order; constants are operands too), the
    subgraph, and the group's values used outside the group or returned by
    the graph (the fused node's outputs, in that order).
    """
    members = set(nodes)
    order = [n for n in graph.nodes if n in members]
    operands: list[Value] = []
    for n in order:
        for v in n.inputs:
            if v.node not in members and v not in operands:
                operands.append(v)
    outs: list[Value] = []
    graph_outs = set(graph.outputs)
    for n in graph.nodes:
        if n in members:
            continue
        for v in n.inputs:
            if v.node in members and v not in outs:
                outs.append(v)
    for v in graph.outputs:
        if v.node in members and v not in outs:
            outs.append(v)
    del graph_outs
    # Build the subgraph: operands become input nodes.
    env: dict[Value, Value] = {}
    sub_inputs: list[Node] = []
    for i, v in enumerate(operands):
        inp = Node("input", (f"in{i}",), types=(v.type,), name=f"in{i}")
        sub_inputs.append(inp)
        env[v] = inp.out()
    sub_nodes: list[Node] = list(sub_inputs)
    for n in order:
        m = Node(n.op, map_values(n.args, lambda v: env.get(v, v)), map_values(n.kwargs, lambda v: env.get(v, v)),
                 n.types, n.overload, n.name)
        sub_nodes.append(m)
        for i in range(len(n.types)):
            env[Value(n, i)] = Value(m, i)
    sub = Graph(tuple(sub_nodes), tuple(sub_inputs), tuple(env[v] for v in outs), {}, (), name)
    return operands, sub, outs


def unbound_symbols(sub: Graph) -> set:
    """Symbols the subgraph uses (in its types or as scalar arguments, e.g. a
    SymInt argument of the model) that no input's dimension carries alone: a
    kernel of the group could not learn their values from its operands."""
    used: set = set()
    stack: list = []
    for n in sub.nodes:
        for t in n.types:
            used |= t.symbols
        stack.extend((*n.args, *(v for _, v in n.kwargs)))
    while stack:
        a = stack.pop()
        if isinstance(a, Sym):
            used |= a.symbols
        elif isinstance(a, (list, tuple)):
            stack.extend(a)
    bound = {d.expr for n in sub.inputs for d in n.type.shape if isinstance(d, Sym) and d.expr in d.symbols}
    return used - bound


def group_name(nodes: Sequence[Node], kind: str) -> str:
    """A readable name from the ops a group fuses, e.g. ``fused_add_rmsnorm``."""
    ops = [n.op.lstrip("_").split("::")[-1] for n in nodes
           if n.op not in ("reshape", "permute", "expand", "slice", "select", "input", "constant")]
    seen: list[str] = []
    for o in ops:
        o = {"to_copy": "cast", "mm": "gemm", "addmm": "gemm", "bmm": "gemm"}.get(o, o)
        if o not in seen:
            seen.append(o)
    body = "_".join(seen[:5]) + ("_etc" if len(seen) > 5 else "")
    return re.sub(r"\W+", "_", f"{kind}_{body}" if body else kind)


def fuse_groups(graph: Graph, groups: Sequence[tuple[Sequence[Node], str]], at_first: bool = False) -> Graph:
    """Replace each group of nodes by one ``fused`` node of the given kind, placed
    where its last member was (``at_first``: its first, for groups whose members
    read only inputs, so that nothing waits for the group longer than for a member).

    Groups must be disjoint and convex (no path leaves a group and comes
    back; the fusion pass checks that with networkx reachability): the graph
    with each group contracted to one node must stay acyclic, else a
    ValueError names the groups on the cycle.
    """
    import networkx as nx

    member_of: dict[Node, int] = {}
    for gi, (nodes, kind) in enumerate(groups):
        if kind not in KINDS:
            raise ValueError(f"unknown fused kind {kind!r}; expected one of {KINDS}")
        for n in nodes:
            if n in member_of:
                raise ValueError(f"node {n.name or n.op} is in two fusion groups")
            member_of[n] = gi
    cuts = [subgraph_of(graph, nodes, group_name(nodes, kind)) for nodes, kind in groups]

    def unit(n: Node):
        gi = member_of.get(n)
        return n if gi is None else ("group", gi)

    quotient = nx.DiGraph()
    pos: dict = {}
    for i, n in enumerate(graph.nodes):
        u = unit(n)
        quotient.add_node(u)
        if not (at_first and u in pos):
            pos[u] = i  # a group sits where its last member was (its first with at_first)
    for n in graph.nodes:
        for v in n.inputs:
            a, b = unit(v.node), unit(n)
            if a != b:
                quotient.add_edge(a, b)
    try:
        order = list(nx.lexicographical_topological_sort(quotient, key=lambda u: pos[u]))
    except nx.NetworkXUnfeasible:
        cyc = nx.find_cycle(quotient)
        raise ValueError("fusion groups are not convex: contracting them makes a cycle through "
                         + " -> ".join(str(u[1]) if isinstance(u, tuple) else u.op for u, _ in cyc)) from None
    env: dict[Value, Value] = {}

    def remap(v: Value) -> Value:
        return env.get(v, v)

    new_nodes: list[Node] = []
    for u in order:
        if isinstance(u, tuple):
            gi = u[1]
            operands, sub, outs = cuts[gi]
            node = Node("fused", tuple(remap(v) for v in operands),
                        (("graph", sub), ("kind", groups[gi][1]), ("name", sub.name)),
                        tuple(v.type for v in outs), name=sub.name)
            new_nodes.append(node)
            for i, v in enumerate(outs):
                env[v] = Value(node, i)
            continue
        n2 = u.with_args(map_values(u.args, remap), map_values(u.kwargs, remap))
        new_nodes.append(n2)
        if n2 is not u:
            for i in range(len(u.types)):
                env[Value(u, i)] = Value(n2, i)
    g = replace(graph, nodes=tuple(new_nodes), outputs=tuple(remap(v) for v in graph.outputs))
    return eliminate_dead(g)
