"""A greedy grouping of a graph into fused groups the TVM backend accepts.

NOT part of braze's pipeline (fusion is ``passes/fuse.py``'s job): a
stand-in that lets tests and benchmarks run TVM kernels inside real models
before, or independently of, the fusion pass. Each group grows forward from
a node while the TVM checker accepts it; it stays convex because a node
joins only if every operand it reads from outside the group was produced
before the group's first node.
"""
from __future__ import annotations

from braze.compiler.codegen.tvm.ops import GEMM, LAYOUT, POINTWISE, REDUCTION
from braze.compiler.codegen.tvm.support import supports
from braze.ir import Graph, Node
from braze.ir.fused import fuse_groups, subgraph_of


def _kind(members: list[Node]):
    gemms = [n for n in members if n.op in GEMM]
    if gemms:
        return "gemm" if len(gemms) == 1 and members[0] is gemms[0] else None
    return "reduction" if any(n.op in REDUCTION for n in members) else "pointwise"


def _candidate(n: Node) -> bool:
    return n.op in POINTWISE or n.op in REDUCTION or n.op in GEMM or n.op in ("reshape", "permute", "expand",
                                                                               "slice", "select", "cat")


def greedy_fuse(graph: Graph, options=None, device: str = "cpu") -> Graph:
    """Grow groups forward from each candidate node while the TVM checker
    accepts them. Convex by construction: a node joins only if every operand
    it reads from outside the group was produced before the group started."""
    pos = {n: i for i, n in enumerate(graph.nodes)}
    users = graph.users()
    taken: set = set()
    groups = []
    for n in graph.nodes:
        if n in taken or not _candidate(n) or n.op in LAYOUT:
            continue
        members, start = [n], pos[n]
        grown = True
        while grown:
            grown = False
            for m in list(members):
                for u in users.get(m, []):
                    if u in taken or u in members or not _candidate(u):
                        continue
                    if any(v.node not in members and pos[v.node] > start for v in u.inputs):
                        continue
                    trial = sorted(members + [u], key=pos.get)
                    kind = _kind(trial)
                    if kind is None:
                        continue
                    _, sub, _ = subgraph_of(graph, trial)
                    if supports(kind, sub, device):
                        members, grown = trial, True
                        break
                if grown:
                    break
        kind = _kind(members)
        if kind and (len(members) > 1 or members[0].op in REDUCTION | GEMM):
            _, sub, _ = subgraph_of(graph, members)
            if supports(kind, sub, device):
                groups.append((members, kind))
                taken |= set(members)
    return fuse_groups(graph, groups) if groups else graph
