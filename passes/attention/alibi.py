"""ALiBi: an additive term that is provably ``slope[h] * j`` plus a row constant.

BLOOM adds ``slopes[h] * position[j]`` through ``baddbmm`` in the merged
``[B*H, Sq, Sk]`` frame. When the positions are an ``arange`` (affine in j
with coefficient 1, ``masks.Affine``) the term equals the
``attention`` op's ``slopes`` semantics up to a per-row constant, which
softmax ignores. Positions computed from ``attention_mask`` (``cumsum`` of
the padding mask, as BLOOM does with a mask) are not ``j`` for every mask
(a mask with holes shifts them), so such a term stays an additive mask.
"""
from __future__ import annotations

from typing import Optional

import torch

from braze.ir.types import dims_equal
from braze.passes.attention.layout import Operand, mk, producer, reshape, shape_of, strip
from braze.passes.attention.scores import Term


def alibi_slopes(t: Term, heads, ctx) -> Optional[Operand]:
    """The ``[H]`` float32 slopes of ``t`` when it is ALiBi, else None."""
    B, H = heads
    x = strip(t.value)
    xs = shape_of(x)
    if t.frame.merged and len(xs) == 3:
        op, args, _ = producer(x)
        if op == "repeat" and len(args[1]) == 3 and dims_equal(args[1][0], B) and list(args[1][1:]) == [1, 1]:
            x = strip(args[0])
            xs = shape_of(x)
        elif not (B == 1 and dims_equal(xs[0], H)):
            return None
    if len(xs) < 3 or not dims_equal(xs[-3], H) or not x.type.dtype.is_floating_point:
        return None
    op, args, _ = producer(x)
    if op != "mul" or len(args) != 2:
        return None
    for a, p in ((args[0], args[1]), (args[1], args[0])):
        s = _head_constant(a, H, ctx)
        if s is None:
            continue
        pos = ctx.masks.affine(p)
        if pos is None or pos.c.get(-1) != 1 or shape_of(p)[-1] == 1:
            continue
        slopes = reshape(s, (H,))
        if slopes.type.dtype != torch.float32:
            slopes = mk("_to_copy", slopes, dtype=torch.float32)
        if t.coef != 1.0:
            slopes = mk("mul", slopes, t.coef, overload="Tensor")
        return slopes
    return None


def _head_constant(a, H, ctx) -> Optional[Operand]:
    """``a`` when it is a float constant (or a reshape of one) varying along axis -3 only, of size H."""
    if not hasattr(a, "type") or not a.type.dtype.is_floating_point:
        return None
    base = strip(a)
    op, args, _ = producer(base)
    if op == "reshape":
        base = strip(args[0])
    if ctx.masks.constant(base) is None:
        return None
    sh = shape_of(a)
    if len(sh) < 3 or not dims_equal(sh[-3], H) or any(d != 1 for i, d in enumerate(sh) if i != len(sh) - 3):
        return None
    return a
