"""The scores of attention, read as a sum.

Whatever feeds the softmax is interpreted as

    alpha * (q @ k^T) + sum(coef * term) ,  with keys hidden where a predicate fails

(:class:`Sum`): scalar multiplies and divides scale everything, ``add`` and
``sub`` collect additive terms (ALiBi, float masks), ``where(c, x, -inf)``,
``masked_fill(x, ~c, -inf)`` and additive 0/-inf masks contribute
predicates (``masks.Pred``). A scalar added to every score is
dropped: softmax is invariant under a shift of its row.

Terms live in a :class:`Frame`, the shape they broadcast into: the scores
move between ``[B*H, Sq, Sk]`` (bmm) and ``[B, H, Sq, Sk]`` through
reshapes, and a term added in the merged frame must be split back when the
pass emits the 4-D ``attention`` op.

NOTE: a fill value at or below ``NEG_INF`` (``finfo(float16).min``) is
treated as -inf: ``exp(fill + s - max) == 0`` in float32 for any finite
score within ~65000 of the row max. Rows where every key is hidden differ
(the ``attention`` op defines them as zeros, see ``ir/attention.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from braze.ir import Value
from braze.ir.types import Dim, dims_equal
from braze.passes.attention.layout import Expr, Operand, is_noop_slice, mk, producer, scalar_value, shape_of
from braze.passes.attention.masks import FALSE, MaskAnalysis, Pred, TRUE, _tri_atom, fit_band, negate

NEG_INF = -65504.0


def _fill_value(x, constants) -> Optional[float]:
    """The single value of a scalar, a constant tensor, or a full(...) creation."""
    v = scalar_value(x, constants)
    if v is not None:
        return v
    if isinstance(x, Value) and x.node.op == "constant":
        t = constants[x.node.args[0]]
        if t.numel() and t.is_floating_point():
            lo, hi = float(t.min()), float(t.max())
            return lo if lo == hi or hi <= NEG_INF else None
        return None
    if isinstance(x, (Value, Expr)):
        op, args, _ = producer(x)
        if op in ("full", "full_like", "new_full", "scalar_tensor") and args:
            v = args[-1] if op != "scalar_tensor" else args[0]
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        if op in ("zeros", "zeros_like", "new_zeros"):
            return 0.0
    return None


def is_neg_inf(x, constants) -> bool:
    v = _fill_value(x, constants)
    return v is not None and v <= NEG_INF


def is_zero(x, constants) -> bool:
    return _fill_value(x, constants) == 0.0


@dataclass(frozen=True)
class Frame:
    """The shape a term broadcasts into; ``merged``: rank 3 whose leading dim is B*H."""

    shape: tuple[Dim, ...]
    merged: bool = False


@dataclass(frozen=True)
class Term:
    coef: float
    value: Operand
    frame: Frame


@dataclass(frozen=True)
class QK:
    """``a @ bt`` with ``a [*L, Sq, D]``, ``bt [*L, D, Sk]``."""

    a: Operand
    bt: Operand
    op: str


@dataclass(frozen=True)
class Sum:
    """``alpha * q@k^T + terms`` or, with ``tanh_scale`` (Gemma-2's logit soft-capping),
    ``alpha * tanh(tanh_scale * q@k^T) + terms``; keys hidden where ``preds`` fail."""

    frame: Frame
    qk: Optional[QK] = None
    alpha: float = 1.0
    terms: tuple[Term, ...] = ()
    preds: tuple[tuple[Pred, Frame], ...] = ()
    tanh_scale: Optional[float] = None

    def scaled(self, c: float) -> "Sum":
        return replace(self, alpha=self.alpha * c, terms=tuple(replace(t, coef=t.coef * c) for t in self.terms))

    def anchored(self, frame: Frame) -> "Sum":
        """A mask-only sum re-anchored in the frame it is broadcast into."""
        return Sum(frame, None, self.alpha, tuple(replace(t, frame=frame) for t in self.terms),
                   tuple((p, frame) for p, _ in self.preds))

    def masked(self, pred: Pred, frame: Frame) -> "Sum":
        return replace(self, frame=frame, preds=self.preds + ((pred, frame),))


def _empty(frame: Frame) -> Sum:
    return Sum(frame)


def plus(a: Sum, b: Sum, frame: Frame) -> Optional[Sum]:
    """``a + b`` in ``frame`` (the broadcast shape); at most one side holds q@k^T."""
    if a.qk is not None and b.qk is not None:
        return None
    if b.qk is not None:
        a, b = b, a
    if a.qk is not None:
        frame = Frame(frame.shape, a.frame.merged and len(frame.shape) == len(a.frame.shape))
    else:
        a = a.anchored(frame)
    b = b.anchored(frame)
    return Sum(frame, a.qk, a.alpha, a.terms + b.terms, a.preds + b.preds, a.tanh_scale)


class ScoreAnalysis:
    """Memoised reading of float values as :class:`Sum` s."""

    def __init__(self, masks: MaskAnalysis):
        self.masks = masks
        self.constants = masks.constants
        self._memo: dict = {}

    def sum(self, v) -> Optional[Sum]:
        """The Sum of ``v`` (a single tensor term where not understood); None
        where q@k^T meets an op that keeps it from being a sum."""
        if not isinstance(v, (Value, Expr)):
            return None
        if v in self._memo:
            return self._memo[v]
        out = self._sum(v)
        self._memo[v] = out
        return out

    def _sum(self, v: Operand) -> Optional[Sum]:
        frame = Frame(tuple(v.type.shape), False)
        c = self.masks.constant(v)
        if c is not None:
            return self._constant(v, c, frame)
        op, args, kw = producer(v)
        fn = SCORE_RULES.get(op)
        out = fn(self, args, kw, v, frame) if fn else None
        if out is not None:
            return out
        # NOTE: not understood: a tensor term. Scores wrapped in such an op
        # leave the top-level sum without q@k^T, and the pass declines.
        return Sum(frame, terms=(Term(1.0, v, frame),))

    def _constant(self, v, t: torch.Tensor, frame: Frame) -> Sum:
        if t.is_floating_point() and t.numel() <= (1 << 24):
            zero, hidden = t == 0, t <= NEG_INF
            if bool(zero.all()):
                return _empty(frame)
            if bool((zero | hidden).all()):
                p = fit_band(zero)
                if p is not None:
                    return _empty(frame).masked(p.with_source(mk("eq", v, 0.0, overload="Scalar")), frame)
        return Sum(frame, terms=(Term(1.0, v, frame),))

    def operand(self, x, frame: Frame) -> Optional[Sum]:
        """A Sum for an operand that may be a Python scalar (a shift: dropped)."""
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return _empty(frame)
        return self.sum(x)


# ---- rules: op -> (analysis, args, kwargs, value, frame) -> Sum | None

def _qk(an, args, kw, v, frame):
    a, bt = args[0], args[1]
    if not (a.type.dtype.is_floating_point and bt.type.dtype.is_floating_point):
        return None
    if len(shape_of(a)) != len(shape_of(bt)) or len(shape_of(a)) not in (2, 3, 4):
        return None
    op = v.node.op if isinstance(v, Value) else v.op
    return Sum(Frame(frame.shape, len(frame.shape) == 3), QK(a, bt, op))


def _baddbmm(an, args, kw, v, frame):
    beta, alpha = kw.get("beta", 1), kw.get("alpha", 1)
    if not isinstance(beta, (int, float)) or not isinstance(alpha, (int, float)) or alpha <= 0 or beta < 0:
        return None
    s = Sum(Frame(frame.shape, True), QK(args[1], args[2], "baddbmm"), float(alpha))
    if beta == 0:
        return s
    bias = an.operand(args[0], s.frame)
    if bias is None or bias.qk is not None or (bias.preds and beta == 0):
        return None
    return plus(s, bias.scaled(float(beta)), s.frame)


def _add(sign):
    def rule(an, args, kw, v, frame):
        alpha = kw.get("alpha", 1)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
            return None
        a, b = an.operand(args[0], frame), an.operand(args[1], frame)
        if a is None or b is None:
            return None
        k = sign * float(alpha)
        if k < 0 and (b.preds or b.qk is not None):
            return None  # -(-inf) is +inf: not a mask any more
        if k == 0:
            return a
        return plus(a, b.scaled(k) if k != 1 else b, frame)
    return rule


def _mul(an, args, kw, v, frame):
    for x, c in ((args[0], args[1]), (args[1], args[0])):
        k = scalar_value(c, an.constants)
        if k is not None and isinstance(x, (Value, Expr)):
            s = an.sum(x)
            if s is None or k <= 0:
                return None
            return replace(s.scaled(k), frame=replace(s.frame, shape=frame.shape))
    return None


def _div(an, args, kw, v, frame):
    k = scalar_value(args[1], an.constants)
    if k is None or k <= 0 or kw.get("rounding_mode") is not None:
        return None
    s = an.sum(args[0])
    return None if s is None else replace(s.scaled(1.0 / k), frame=replace(s.frame, shape=frame.shape))


def _tanh(an, args, kw, v, frame):
    """``tanh(c * q@k^T)``: the inside of a soft cap (nothing else may be inside)."""
    s = an.sum(args[0])
    if s is None or s.qk is None or s.terms or s.preds or s.tanh_scale is not None or s.alpha <= 0:
        return None
    return Sum(replace(s.frame, shape=frame.shape), s.qk, 1.0, tanh_scale=s.alpha)


def _where(an, args, kw, v, frame):
    cond, x, y = args[0], args[1], args[2]
    if is_neg_inf(y, an.constants):
        keep, p = x, an.masks.pred(cond)
    elif is_neg_inf(x, an.constants):
        keep, p = y, an.masks.pred_not(cond)
    else:
        return None
    s = an.operand(keep, frame)
    if s is None or p is None:
        return None
    return _join_mask(s, p, frame)


def _masked_fill(an, args, kw, v, frame):
    if not is_neg_inf(args[2], an.constants):
        return None
    s, p = an.sum(args[0]), an.masks.pred_not(args[1])
    if s is None or p is None:
        return None
    return _join_mask(s, p, frame)


def _join_mask(s: Sum, p: Pred, frame: Frame) -> Sum:
    if s.qk is None:
        return s.anchored(frame).masked(p, frame)
    return s.masked(p, Frame(frame.shape, s.frame.merged and len(frame.shape) == len(s.frame.shape)))


def _cast(an, args, kw, v, frame):
    src = args[0]
    if not (isinstance(src, (Value, Expr)) and src.type.dtype.is_floating_point and v.type.dtype.is_floating_point):
        return None
    return an.sum(src)


def _reshape(an, args, kw, v, frame):
    s = an.sum(args[0])
    if s is not None and s.qk is None and _unit_lead_only(shape_of(args[0]), frame.shape):
        # a mask given leading unit dims (``mask[None, None]``) or losing them: its
        # terms broadcast into either shape alike, its predicates are over (i, j)
        return s.anchored(frame)
    if s is None or s.qk is None:
        return None  # any other reshape of a mask keeps it a tensor term
    old, new = shape_of(args[0]), frame.shape
    if len(new) < 2 or not all(dims_equal(a, b) for a, b in zip(old[-2:], new[-2:])):
        return None
    return replace(s, frame=Frame(new, len(new) == 3))


def _unit_lead_only(old, new) -> bool:
    """``old`` and ``new`` differ only in leading dims of size 1."""
    def core(shape):
        shape = list(shape)
        while shape and shape[0] == 1:
            shape.pop(0)
        return shape
    a, b = core(old), core(new)
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b))


def _expand(an, args, kw, v, frame):
    s = an.sum(args[0])
    if s is None or s.qk is not None:
        return None
    return replace(s, frame=frame)


def _slice(an, args, kw, v, frame):
    return an.sum(args[0]) if is_noop_slice("slice", args, v) else None


def _tri(an, args, kw, v, frame):
    """triu(full(-inf), d) / tril(full(-inf), d): an additive band mask."""
    if not is_neg_inf(args[0], an.constants):
        return None
    op = v.node.op if isinstance(v, Value) else v.op
    kept = _tri_atom(op, args, frame.shape)  # where the -inf stays
    p = negate(kept)
    if p is None:
        return None
    # the tensor to keep if the band is no causal/window rule: visible where v == 0
    return _empty(frame).masked(p.with_source(mk("eq", v, 0.0, overload="Scalar")), frame)


def _full(an, args, kw, v, frame):
    val = _fill_value(v, an.constants)
    if val == 0.0:
        return _empty(frame)
    if val is not None and val <= NEG_INF:
        return _empty(frame).masked(FALSE, frame)
    return None


SCORE_RULES: dict[str, Callable] = {
    "bmm": _qk, "matmul": _qk, "mm": _qk, "baddbmm": _baddbmm,
    "add": _add(1), "sub": _add(-1), "mul": _mul, "div": _div,
    "tanh": _tanh, "where": _where, "masked_fill": _masked_fill, "_to_copy": _cast,
    "reshape": _reshape, "expand": _expand, "slice": _slice, "triu": _tri, "tril": _tri,
    "full": _full, "full_like": _full, "new_full": _full, "scalar_tensor": _full,
    "zeros": _full, "zeros_like": _full, "new_zeros": _full,
}

__all__ = ["Sum", "Term", "Frame", "QK", "ScoreAnalysis", "scalar_value", "is_neg_inf", "is_zero", "TRUE", "NEG_INF"]
