"""Horizontal fusion of parallel projections.

GEMMs that read the same activation with constant weights, e.g. the Q/K/V
projections or an MLP's gate and up projections,

    mm(x, permute(Wq)), mm(x, permute(Wk)), mm(x, permute(Wv))
      -> slices of mm(x, permute(cat([Wq, Wk, Wv])))

become one GEMM on weights concatenated once at compile time, followed by
``slice`` views of its output (``addmm`` with their biases concatenated
the same way). One wide GEMM keeps the tensor cores busier than three
narrow ones and reads ``x`` once.

NOTE: the concatenated weights are new constants, made once per set of
weights, not once per compiled graph (``concat_once``): the prefill and
decode graphs of a model, and each of its recompiles, share one copy (each
graph had its own: three copies of every Q/K/V and gate/up weight once a
model decoded), and the module's parameters are rebound onto their rows of
it, so the weights are held once.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from braze.ir import Graph, Node, Value, rewrite
from braze.ir.builder import Builder
from braze.ir.types import TensorType
from braze.passes.shared_constants import concat_once


def _weight_of(mat: Value) -> Optional[Node]:
    """The constant [N, K] weight W of a GEMM operand ``permute(W, [1, 0])``."""
    n = mat.node
    if n.op == "permute" and tuple(n.args[1]) == (1, 0) and n.args[0].node.op == "constant":
        return n.args[0].node
    return None


def _projection(n: Node) -> Optional[tuple]:
    """(kind, x, weight node, bias node or None) of ``mm``/``addmm`` projections."""
    if n.op == "mm":
        x, w = n.args[0], _weight_of(n.args[1])
        return ("mm", x, w, None) if w is not None else None
    if n.op == "addmm" and not n.kwargs:
        bias, x, w = n.args[0], n.args[1], _weight_of(n.args[2])
        if w is None or bias.node.op != "constant" or bias.type.rank != 1:
            return None
        return ("addmm", x, w, bias.node)
    return None


def fuse_horizontal(graph: Graph, ctx=None) -> Graph:
    groups: dict[tuple, list[Node]] = defaultdict(list)
    info: dict[Node, tuple] = {}
    for n in graph.compute_nodes:
        p = _projection(n)
        if p is None:
            continue
        kind, x, w, bias = p
        wt = w.type
        key = (kind, x, wt.shape[1], wt.dtype, wt.device, n.type.dtype)
        groups[key].append(n)
        info[n] = p
    plans = {ns[0]: ns for ns in groups.values() if len(ns) > 1}
    if not plans:
        return graph
    done: dict[Node, Value] = {}

    def rule(n: Node, b: Builder):
        orig = b.current
        if orig in done:
            return (done[orig],)
        members = plans.get(orig)
        if members is None:
            return None
        kind = info[members[0]][0]
        x = n.args[0] if kind == "mm" else n.args[1]  # remapped activation
        weights = [graph.constant(info[m][2]) for m in members]
        names = "+".join(info[m][2].args[0].rsplit(".", 2)[-2] if "." in info[m][2].args[0] else info[m][2].args[0]
                         for m in members)
        wcat = b.constant(concat_once(weights), f"hfused.{names}")
        wt = b.append(Node("permute", (wcat, (1, 0)), (), (TensorType(tuple(reversed(wcat.type.shape)),
                                                                        wcat.type.dtype, wcat.type.device),),
                           "default", "hfused_t"))
        rows = n.type.shape[0]
        total = sum(w.shape[0] for w in weights)
        out_t = TensorType((rows, total), n.type.dtype, n.type.device)
        if kind == "mm":
            y = b.append(Node("mm", (x, wt.out()), (), (out_t,), "default", f"hfused_{n.name}"))
        else:
            bcat = b.constant(concat_once([graph.constant(info[m][3]) for m in members]), f"hfused.{names}.bias")
            y = b.append(Node("addmm", (bcat, x, wt.out()), (), (out_t,), "default", f"hfused_{n.name}"))
        off = 0
        for m, w in zip(members, weights):
            width = w.shape[0]
            sl = b.append(Node("slice", (y.out(), 1, off, off + width), (), (m.type,), "Tensor", m.name))
            done[m] = sl.out()
            off += width
        return (done[orig],)

    return rewrite(graph, rule)
