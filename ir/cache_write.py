"""``cache_write_heads_``: a pointwise value over query and key heads, split into the
query heads and the new rows of a layer's KV cache, in one node.

At decode a Llama-style layer applies the rotary embedding to its query and key
heads in one pointwise group (``passes/merge_parallel_groups.py``) and then
writes the key heads and the value heads into the caches
(``index_copy_many_``): two launches, and the rotated keys go through memory
once more than they need to. ``passes/fuse_cache_write.py`` makes them one
node::

    kc', vc', q = cache_write_heads_((kc, vc), dim, index, v, (x0, x1, ...), heads=<graph>)

where ``heads`` maps ``(x0, x1, ...)`` to ``(q, k)``: the query heads and the new
key rows (the group's value split along dim 1). The node writes ``k`` and ``v``
into ``kc`` and ``vc`` at rows ``index`` of ``dim`` (in place, like
``index_copy_many_``: outputs 0 and 1 are the two caches) and returns ``q``.
A code generator runs it as one kernel (``compiler/codegen/triton_cache``); the
torch reference below runs the subgraph and the two copies.
"""
from __future__ import annotations

from braze.ir.inplace_ops import EACH, _distinct_rows_sample
from braze.ir.interpreter import interpret
from braze.ir.registry import Category, OpDef, register


def _cache_write_heads_(bases, dim, index, v, operands, *, heads):
    q, k = interpret(heads, *operands)
    bases[0].index_copy_(dim, index, k)
    bases[1].index_copy_(dim, index, v)
    return bases[0], bases[1], q


def _infer(bases, dim, index, v, operands, *, heads):
    return bases[0].type, bases[1].type, heads.outputs[0].type


register(OpDef("cache_write_heads_", Category.OPAQUE, _cache_write_heads_, infer=_infer, writes=EACH,
               sample=_distinct_rows_sample, subgraph_operands=4,
               doc="a pointwise value split by heads: query heads returned, key rows (and v) written into the "
                   "two caches at index, in place"))
