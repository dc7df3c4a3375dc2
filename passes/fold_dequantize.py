"""Fold weight dequantization into the GEMM that consumes it.

    mm(x, permute(dequantize(q, s, z), [1, 0]))           -> quant_linear(x, q, s, z)
    addmm(b, x, permute(dequantize(q, s, z), [1, 0]))     -> quant_linear(x, q, s, z, b)
    bmm(x3, expand(permute(dequantize(q, s, z), [1, 0]), [B, K, N]))
        -> reshape(quant_linear(reshape(x3, [B * M, K]), q, s, z), [B, M, N])

(the last: ``F.linear`` of a 3-D activation that ATen's ``matmul`` does not fold into
one ``mm``, as a decode step's o_proj does; unfolded, every step wrote the whole
dequantized weight and read it again).

``quant_linear`` (``ir/quant.py``) dequantizes inside the GEMM's operand
load, so no dequantized weight is written to memory. Then, as
``fuse_horizontal`` does for float weights, parallel projections that read
the same activation with constant quantized weights of one format (Q/K/V,
gate/up) become one ``quant_linear`` on weights, scales and zero points
concatenated once at compile time, followed by ``slice`` views.

A ``dequantize`` whose result is used otherwise stays as it is (it runs
through its torch reference).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from braze.ir import Graph, Node, Value, rewrite
from braze.ir.builder import Builder, eliminate_dead
from braze.ir.types import TensorType
from braze.passes.shared_constants import concat_once

DEQUANT = "braze::dequantize"


def _dequantized_weight(b: Value) -> Optional[Node]:
    """The dequantize node D of a GEMM operand ``permute(D, [1, 0])``."""
    n = b.node
    if n.op == "permute" and tuple(n.args[1]) == (1, 0) and n.args[0].node.op == DEQUANT:
        return n.args[0].node
    return None


def _fold_batched(n: Node, b: Builder):
    """bmm of a 3-D activation with a dequantized weight broadcast over the batch."""
    x3, w3 = n.args
    e = w3.node
    if (e.op != "expand" or e.args[0].type.rank != 2 or x3.type.rank != 3 or n.kwargs
            or tuple(e.args[0].type.shape) != tuple(w3.type.shape[1:])):
        return None     # NOTE: only a broadcast over the batch, never a widened size-1 dim
    dq = _dequantized_weight(e.args[0])
    if dq is None or dq.args[5] != x3.type.dtype or n.type.dtype != x3.type.dtype:
        return None
    q, s, z, bits, group, _ = dq.args
    x2 = b.call("reshape", x3, (-1, x3.type.shape[2]))
    rows = x2.type.shape[0]
    out_t = TensorType((rows, n.type.shape[2]), n.type.dtype, n.type.device)
    y = b.append(Node("quant_linear", (x2, q, s, z, None), (("bits", bits), ("group_size", group)), (out_t,),
                      "", n.name or "quant_linear")).out()
    return (b.call("reshape", y, tuple(n.type.shape)),)


def _fold(n: Node, b: Builder):
    if n.op == "bmm":
        return _fold_batched(n, b)
    if n.op == "mm":
        x, dq, bias = n.args[0], _dequantized_weight(n.args[1]), None
    elif n.op == "addmm" and not n.kwargs and len(n.args) == 3:
        bias, x, dq = n.args[0], n.args[1], _dequantized_weight(n.args[2])
        if dq is not None and (bias.type.rank != 1 or bias.type.dtype != n.type.dtype):
            return None
    else:
        return None
    if dq is None or x.type.rank != 2:
        return None
    q, s, z, bits, group, dtype = dq.args
    if dtype != x.type.dtype or n.type.dtype != dtype:
        return None
    node = b.append(Node("quant_linear", (x, q, s, z, bias), (("bits", bits), ("group_size", group)), n.types,
                         "", n.name or "quant_linear"))
    return node.outputs


def fold_dequantize(graph: Graph, ctx=None) -> Graph:
    if not any(n.op == DEQUANT for n in graph.nodes):
        return graph
    return merge_parallel(eliminate_dead(rewrite(graph, _fold)))


def merge_parallel(graph: Graph) -> Graph:
    """quant_linears reading one activation with constant weights of one format -> one, sliced."""
    groups: dict[tuple, list[Node]] = defaultdict(list)
    for n in graph.compute_nodes:
        if n.op != "quant_linear":
            continue
        x, q, s, z, bias = n.args
        if any(v is not None and v.node.op != "constant" for v in (q, s, z, bias)):
            continue
        key = (x, n.attr("bits"), n.attr("group_size"), q.type.shape[1], s.type.dtype, z is None, bias is None)
        groups[key].append(n)
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

        def cat(i: int, what: str):
            parts = [graph.constant(m.args[i].node) for m in members]
            return b.constant(concat_once(parts), f"qfused.{members[0].name}.{what}")

        q, s = cat(1, "qweight"), cat(2, "scales")
        z = cat(3, "zeros") if n.args[3] is not None else None
        bias = cat(4, "bias") if n.args[4] is not None else None
        total = sum(m.type.shape[1] for m in members)
        out_t = TensorType((n.type.shape[0], total), n.type.dtype, n.type.device)
        y = b.append(Node("quant_linear", (n.args[0], q, s, z, bias), n.kwargs, (out_t,), "",
                          f"qfused_{n.name}"))
        off = 0
        for m in members:
            width = m.type.shape[1]
            sl = b.append(Node("slice", (y.out(), 1, off, off + width), (), (m.type,), "Tensor", m.name))
            done[m] = sl.out()
            off += width
        return (done[orig],)

    return rewrite(graph, rule)
