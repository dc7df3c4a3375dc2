"""braze's own ops: graph inputs and constants, and the fused group.

Passes add more of their own (attention, pack/unpack) in their modules under
``ir/``; each is registered here or there with its category, type rule and
torch reference.
"""
from __future__ import annotations

from braze.ir.registry import Category, OpDef, REGISTRY, register
from braze.ir.interpreter import interpret
from braze.ir.types import TensorType


def _io_ref(*args, **kwargs):
    raise RuntimeError("input and constant nodes are bound by the interpreter, not called")


def _io_infer(*args, **kwargs):
    raise TypeError("input and constant nodes carry their declared type")


register(OpDef("input", Category.IO, _io_ref, infer=_io_infer, doc="a graph input, args=(name,)"))
register(OpDef("constant", Category.IO, _io_ref, infer=_io_infer,
               doc="a parameter or buffer, args=(key in Graph.constants,)"))


def _fused_ref(*inputs, graph, kind="", **_):
    """Run the fused group's subgraph with the reference interpreter."""
    outs = interpret(graph, *inputs)
    return outs if len(outs) > 1 else outs[0]


def _fused_infer(*inputs, graph, **_):
    return tuple(v.type for v in graph.outputs)


def _fused_sample(node, env, generator) -> dict:
    """The invariants the group's own ops need of its operands (``OpDef.sample`` of each)."""
    sub = node.attr("graph")
    outer = dict(zip((n.out() for n in sub.inputs), node.inputs))
    out = {}
    for n in sub.compute_nodes:
        op = REGISTRY.get(n.op)
        if op is not None and op.sample is not None:
            out.update({outer[v]: x for v, x in op.sample(n, env, generator).items() if v in outer})
    return out


register(OpDef("fused", Category.FUSED, _fused_ref, infer=_fused_infer, sample=_fused_sample,
               doc="a fusion group: kwargs graph=<subgraph>, kind=<pointwise|reduction|gemm|...>"))


def _sdpa_ref(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """torch's scaled_dot_product_attention (eval: no dropout)."""
    import torch.nn.functional as F

    if enable_gqa:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                              enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)


def _sdpa_infer(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    return (TensorType(q.type.shape[:-1] + v.type.shape[-1:], q.type.dtype, q.type.device),)


register(OpDef("sdpa", Category.ATTENTION, _sdpa_ref, infer=_sdpa_infer,
               doc="scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa), no dropout"))
