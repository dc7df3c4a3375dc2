"""The verifier: a Graph is well formed, or a VerificationError says why.

Checked: every op is registered; every operand is an output of a node of
the graph defined before its use (no dangling values, no cycles); inputs,
outputs and constants are consistent; every symbol is bound by an input;
each node's declared types agree with its op's type rule (``types=True``).
"""
from __future__ import annotations

import torch

from braze.ir.graph import Graph, Node, Value, iter_values
from braze.ir.infer import TypeInferenceError, check_types
from braze.ir.inplace_ops import written_operands
from braze.ir.registry import REGISTRY, get_op
from braze.ir.types import TensorType


class VerificationError(ValueError):
    pass


def _where(g: Graph, n: Node) -> str:
    return f"graph {g.name}: node {n.name or '?'} ({n.op})"


def verify(graph: Graph, types: bool = True) -> Graph:
    """Return ``graph`` unchanged if it is well formed; raise otherwise."""
    seen: set[Node] = set()
    members = set(graph.nodes)
    if len(members) != len(graph.nodes):
        raise VerificationError(f"graph {graph.name}: a node appears twice in the node list")
    bound = set(graph.sym_inputs) | {s for s, _ in graph.sym_bounds}
    for n in graph.inputs:
        if n not in members:
            raise VerificationError(f"graph {graph.name}: input {n.args[0]!r} is not among its nodes")
        if n.op != "input":
            raise VerificationError(f"{_where(graph, n)} is listed as an input but is not an input node")
        for d in n.type.shape:
            if not isinstance(d, int) and len(d.symbols) == 1 and d.expr in d.symbols:
                bound |= d.symbols
    input_set = set(graph.inputs)
    for n in graph.nodes:
        if n.op not in REGISTRY:
            raise VerificationError(f"{_where(graph, n)}: unknown op {n.op!r}")
        if not n.types or not all(isinstance(t, TensorType) for t in n.types):
            raise VerificationError(f"{_where(graph, n)}: outputs must have TensorTypes, got {n.types!r}")
        if n.op == "input" and n not in input_set:
            raise VerificationError(f"{_where(graph, n)}: input node {n.args[0]!r} is not in the input list")
        if n.op == "constant":
            _check_constant(graph, n)
        for v in n.inputs:
            _check_operand(graph, n, v, seen, members)
        for t in n.types:
            unbound = t.symbols - bound
            if unbound:
                raise VerificationError(f"{_where(graph, n)}: symbols {sorted(unbound)} are bound by no input")
        seen.add(n)
    for v in graph.outputs:
        if not isinstance(v, Value):
            raise VerificationError(f"graph {graph.name}: output {v!r} is not a Value")
        if v.node not in members:
            raise VerificationError(f"graph {graph.name}: output refers to a node outside the graph ({v.node.op})")
        if v.index >= len(v.node.types):
            raise VerificationError(f"graph {graph.name}: output refers to output {v.index} of {v.node.op}, "
                                    f"which has {len(v.node.types)} outputs")
    _check_writes(graph)
    # NOTE: no separate cycle search: every operand was checked to be defined
    # earlier in the node list (each node listed once), so every edge points
    # forward and the graph is acyclic. networkx's find_cycle cost ~1 s per
    # verify on a 16-layer model, the largest part of compiling it.
    if types:
        for n in graph.nodes:
            if n.op in ("input", "constant"):
                continue
            for k, sub in n.kwargs:
                if isinstance(sub, Graph):
                    verify(sub, types=types)
                    _check_subgraph_call(graph, n, sub)
            try:
                problem = check_types(n.op, n.args, n.kwargs, n.overload, n.types)
            except TypeInferenceError as e:
                raise VerificationError(f"{_where(graph, n)}: operands do not type-check: {e}") from None
            if problem:
                raise VerificationError(f"{_where(graph, n)}: {problem}")
    return graph


def _check_writes(g: Graph) -> None:
    for i, j in g.writes:
        if not (0 <= i < len(g.inputs) and 0 <= j < len(g.outputs)):
            raise VerificationError(f"graph {g.name}: write {i} <- {j} names no input or output")
        src, dst = g.outputs[j].type, g.inputs[i].type
        if (src.shape, src.dtype, src.device) != (dst.shape, dst.dtype, dst.device):
            raise VerificationError(f"graph {g.name}: input {i} ({dst}) cannot hold output {j} ({src})")
    order = {n: k for k, n in enumerate(g.nodes)}
    users = g.value_users()
    for n in g.nodes:
        for _, base in written_operands(n):
            late = [u for u in users.get(base, ()) if u is not n and order[u] > order[n]]
            if late:
                raise VerificationError(f"{_where(g, n)} writes {base.node.name or base.node.op} in place, but "
                                        f"{late[0].name or late[0].op} reads it afterwards")
            if base in g.outputs:
                raise VerificationError(f"{_where(g, n)} writes {base.node.name or base.node.op} in place, "
                                        "but the graph returns its value before the write")


def _check_operand(g: Graph, n: Node, v: Value, seen: set, members: set) -> None:
    if v.node not in members:
        raise VerificationError(f"{_where(g, n)}: operand is dangling: it refers to a {v.node.op} node "
                                "that is not in the graph")
    if v.index >= len(v.node.types):
        raise VerificationError(f"{_where(g, n)}: operand refers to output {v.index} of {v.node.op}, "
                                f"which has {len(v.node.types)} outputs")
    if v.node not in seen:
        raise VerificationError(f"{_where(g, n)}: operand {v.node.name or v.node.op} is used before it is "
                                "defined (the node list is not in topological order, or there is a cycle)")


def _check_constant(g: Graph, n: Node) -> None:
    key = n.args[0] if n.args else None
    if key not in g.constants:
        raise VerificationError(f"{_where(g, n)}: constant {key!r} has no tensor in graph.constants")
    t = g.constants[key]
    if not isinstance(t, torch.Tensor):
        raise VerificationError(f"{_where(g, n)}: constant {key!r} is a {type(t).__name__}, not a tensor")
    actual = TensorType.of(t)
    if actual.shape != n.type.shape or actual.dtype != n.type.dtype:
        raise VerificationError(f"{_where(g, n)}: constant {key!r} is {actual} but the node declares {n.type}")


def _check_subgraph_call(g: Graph, n: Node, sub: Graph) -> None:
    at = get_op(n.op).subgraph_operands
    ins = n.inputs if at is None else tuple(iter_values(n.args[at]))
    if len(ins) != len(sub.inputs):
        raise VerificationError(f"{_where(g, n)}: passes {len(ins)} operands to a subgraph of "
                                f"{len(sub.inputs)} inputs")
    for v, p in zip(ins, sub.inputs):
        if v.type.dtype != p.type.dtype or v.type.rank != p.type.rank:
            raise VerificationError(f"{_where(g, n)}: operand {v.type} does not match subgraph input {p.type}")
