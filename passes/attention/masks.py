"""Structural proofs about attention masks.

Masks are built from index arithmetic: ``arange`` positions, their views
and offsets, comparisons between them, ``&`` of several conditions, and
lookups into ``attention_mask``. This module interprets that subgraph
abstractly and exactly (no sampling): integer tensors are affine functions
of their coordinates (``affine``), and a boolean tensor is a
:class:`Pred`, a conjunction of linear :class:`Atom` s over the last two
coordinates (query i = axis -2, key j = axis -1) and of opaque boolean
tensors (padding masks, anything not understood), kept as operands.

``j - i <= 0`` is causal, ``i - j < w`` a sliding window; the attention
pass turns such atoms into attributes and keeps the opaque terms as a mask.
Constants (folded aranges, folded ``tril`` masks) are read in full and
fitted exactly. Anything else becomes an opaque term, which is always
correct: the pass then keeps that tensor as the mask operand.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

import sympy
import torch

from braze.ir import Value
from braze.ir.types import Sym
from braze.passes.attention.affine import (AFFINE_RULES, Affine, _drop_unit, _norm, _slice_args, const, fit_affine,
                                           map_coeffs, to_sympy, unit_map)
from braze.passes.attention.layout import Expr, Operand, is_noop_slice, mk, producer, same_dims, shape_of

S = sympy.Integer

@dataclass(frozen=True)
class Atom:
    """``sum(coeff * x[axis]) + const <= 0``."""

    coeffs: tuple[tuple[int, int], ...]
    const: sympy.Expr

    def negate(self) -> "Atom":  # not (e <= 0)  <=>  -e + 1 <= 0 over integers
        return Atom(_norm({a: -c for a, c in self.coeffs}), -self.const + 1)


@dataclass(frozen=True)
class Pred:
    """Conjunction of atoms and opaque bool tensors; ``false``: nothing visible.

    ``source`` is a bool tensor equal to the whole predicate (used to fall
    back to an opaque term); ``None`` only for the constants TRUE/FALSE.
    """

    atoms: tuple[Atom, ...] = ()
    terms: tuple[Operand, ...] = ()
    false: bool = False
    source: Optional[Operand] = None

    @property
    def is_true(self) -> bool:
        return not self.atoms and not self.terms and not self.false

    def __and__(self, other: "Pred") -> "Pred":
        if self.false or other.false:
            return FALSE
        return Pred(_dedup(self.atoms + other.atoms), _dedup(self.terms + other.terms))

    def with_source(self, v: Operand) -> "Pred":
        return replace(self, source=v) if not (self.is_true or self.false) else self


TRUE = Pred()
FALSE = Pred(false=True)


def _dedup(xs):
    return tuple(dict.fromkeys(xs))


def opaque(v: Operand) -> Pred:
    return Pred(terms=(v,), source=v)


def negate(p: Pred) -> Optional[Pred]:
    """``not p``: exact for TRUE, FALSE and one atom; otherwise an opaque
    ``~source`` (None when ``p`` has no source tensor)."""
    if p.false:
        return TRUE
    if p.is_true:
        return FALSE
    src = mk("bitwise_not", p.source) if p.source is not None else None
    if len(p.atoms) == 1 and not p.terms:
        return Pred((p.atoms[0].negate(),), source=src)
    return opaque(src) if src is not None else None


def atom(coeffs, c, shape) -> Pred:
    """``coeffs . x + c <= 0`` on a tensor of ``shape``, decided where the ranges decide it."""
    coeffs = _drop_unit(tuple(dict(coeffs).items()), shape)
    c = to_sympy(c)
    r = len(shape)
    hi, lo = c, c
    for a, k in coeffs:
        n1 = to_sympy(shape[r + a]) - 1
        hi, lo = (hi + k * n1, lo) if k > 0 else (hi, lo + k * n1)
    if sympy.simplify(hi).is_nonpositive:
        return TRUE
    if sympy.simplify(lo).is_positive:
        return FALSE
    return Pred((Atom(coeffs, c),))


# --- constants -------------------------------------------------------------

def fit_band(vis: torch.Tensor) -> Optional[Pred]:
    """``vis [..., n, m]`` (leading dims 1) as ``lo <= j - i <= hi`` atoms, exactly, or None."""
    if vis.dim() < 2 or any(s != 1 for s in vis.shape[:-2]) or vis.numel() > (1 << 24):
        return None
    m2 = vis.reshape(vis.shape[-2:]).cpu()
    if bool(m2.all()):
        return TRUE
    if not bool(m2.any()):
        return FALSE
    n, m = m2.shape
    d = torch.arange(m)[None, :] - torch.arange(n)[:, None]
    hi, lo = int(d[m2].max()), int(d[m2].min())
    if not torch.equal((d <= hi) & (d >= lo), m2):
        return None
    atoms = []
    if bool(((d > hi) & ~m2).any()):
        atoms.append(Atom(_drop_unit(((-2, -1), (-1, 1)), vis.shape), S(-hi)))   # j - i - hi <= 0
    if bool(((d < lo) & ~m2).any()):
        atoms.append(Atom(_drop_unit(((-2, 1), (-1, -1)), vis.shape), S(lo)))    # i - j + lo <= 0
    return Pred(tuple(atoms))


# --- the analysis ------------------------------------------------------------

class MaskAnalysis:
    """Memoised abstract interpretation of the int and bool values of one graph."""

    def __init__(self, constants: Mapping[str, torch.Tensor]):
        self.constants = constants
        self._aff: dict = {}
        self._pred: dict = {}

    def constant(self, v: Operand) -> Optional[torch.Tensor]:
        if isinstance(v, Value) and v.node.op == "constant":
            t = self.constants[v.node.args[0]]
            # NOTE: constants may live on the GPU; the analysis runs on the CPU.
            return t.cpu() if t.numel() <= (1 << 24) else t
        return None

    # ---- integers ----
    def affine(self, v) -> Optional[Affine]:
        if isinstance(v, (int, Sym)) and not isinstance(v, bool):
            return const(v)
        if not isinstance(v, (Value, Expr)):
            return None
        if v in self._aff:
            return self._aff[v]
        self._aff[v] = None  # cycles are impossible, but be safe
        out = self._affine(v)
        self._aff[v] = out
        return out

    def _affine(self, v: Operand) -> Optional[Affine]:
        t = v.type
        if t.dtype == torch.bool or t.dtype.is_complex:
            return None
        c = self.constant(v)
        if c is not None:
            return fit_affine(c)
        op, args, kw = producer(v)
        shape = t.shape
        fn = AFFINE_RULES.get(op)
        out = fn(self, args, kw, shape) if fn else None
        if out is None:
            return None
        return Affine(_drop_unit(out.coeffs, shape), sympy.expand(out.const))

    # ---- booleans ----
    def pred(self, v: Operand) -> Pred:
        """The predicate of bool tensor ``v`` (an opaque term where not understood)."""
        if v in self._pred:
            return self._pred[v]
        out = None
        c = self.constant(v)
        if c is not None:
            out = fit_band(c.bool()) if c.dtype == torch.bool else None
        else:
            op, args, kw = producer(v)
            fn = PRED_RULES.get(op)
            out = fn(self, args, kw, v) if fn else None
        if out is None:
            out = opaque(simplify_index(v, self))
        elif any(a not in (-1, -2) for at in out.atoms for a, _ in at.coeffs):
            out = opaque(v)  # NOTE: atoms speak only of (i, j); others are kept as tensors
        out = out.with_source(v)
        self._pred[v] = out
        return out

    def pred_not(self, v: Operand) -> Optional[Pred]:
        """``not pred(v)``; a constant is complemented and fitted in full."""
        c = self.constant(v)
        if c is not None and c.dtype == torch.bool:
            p = fit_band(~c)
            if p is not None:
                return p.with_source(mk("bitwise_not", v))
        op, args, _ = producer(v)
        if op in ("bitwise_not", "logical_not"):
            return self.pred(args[0])  # not not x = x
        return negate(self.pred(v))

    def indicator(self, v) -> Optional[Pred]:
        """``P`` when the numeric tensor ``v`` is 1 where P holds and 0 elsewhere."""
        if not isinstance(v, (Value, Expr)):
            return None
        c = self.constant(v)
        if c is not None:
            if c.dtype == torch.bool:
                return fit_band(c)
            if not bool(((c == 0) | (c == 1)).all()):
                return None
            return fit_band(c != 0)
        op, args, kw = producer(v)
        if op == "_to_copy" and args[0].type.dtype == torch.bool:
            return self.pred(args[0])
        if op in ("ones", "new_ones", "ones_like"):
            return TRUE
        if op in ("full", "new_full") and _num(args[-1]) == 1:
            return TRUE
        if op in ("tril", "triu"):
            inner = self.indicator(args[0])
            if inner is None or inner.terms:
                return None
            return inner & _tri_atom(op, args, v.type.shape)
        if op in VIEW_RULES:
            inner = self.indicator(args[0])
            if inner is None or inner.terms:
                return None
            return VIEW_RULES[op](inner, args, v)
        return None


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _tri_atom(op, args, shape) -> Pred:
    """tril keeps j - i <= d; triu keeps j - i >= d."""
    d = args[1] if len(args) > 1 else 0
    if op == "tril":
        return atom({-1: 1, -2: -1}, -to_sympy(d), shape)
    return atom({-1: -1, -2: 1}, to_sympy(d), shape)


# ---- bool rules: op -> (analysis, args, kwargs, value) -> Pred | None

def _compare(kind):
    def rule(an, args, kw, v):
        shape = v.type.shape
        lhs, rhs = args[0], args[1]
        a, b = an.affine(lhs), an.affine(rhs)
        if a is None or b is None:
            return _compare_indicator(an, kind, lhs, rhs)
        d = a + b.scale(-1)       # lhs - rhs
        coeffs, c = d.coeffs, d.const
        neg = tuple((ax, -k) for ax, k in coeffs)
        if kind == "le":
            return atom(coeffs, c, shape)
        if kind == "lt":
            return atom(coeffs, c + 1, shape)
        if kind == "ge":
            return atom(neg, -c, shape)
        if kind == "gt":
            return atom(neg, -c + 1, shape)
        if kind == "eq":
            return atom(coeffs, c, shape) & atom(neg, -c, shape)
        if kind == "ne" and not coeffs:
            z = sympy.simplify(c)
            return (FALSE if z == 0 else TRUE) if z.is_number else None
        return None
    return rule


def _compare_indicator(an, kind, lhs, rhs):
    """``ind == 0`` / ``ind != 0`` / ``ind == 1`` ... of a 0/1 indicator."""
    k = _num(rhs)
    p = an.indicator(lhs)
    if p is None or k is None:
        return None
    holds = {("eq", 1), ("ne", 0), ("gt", 0), ("ge", 1)}
    fails = {("eq", 0), ("ne", 1), ("lt", 1), ("le", 0)}
    if (kind, k) in holds:
        return p
    if (kind, k) in fails:
        return negate(p)
    return None


def _and(an, args, kw, v):
    if any(not isinstance(x, (Value, Expr)) or x.type.dtype != torch.bool for x in args[:2]):
        return None
    return an.pred(args[0]) & an.pred(args[1])


def _or(an, args, kw, v):
    a, b = an.pred(args[0]), an.pred(args[1])
    if a.is_true or b.is_true:
        return TRUE
    if a.false:
        return b
    if b.false:
        return a
    return None


def _not(an, args, kw, v):
    return an.pred_not(args[0])  # None (opaque) only without a source, which pred() never gives


def _bool_cast(an, args, kw, v):
    src = args[0]
    if src.type.dtype == torch.bool:
        return an.pred(src)
    p = an.indicator(src)
    if p is not None:
        return p
    a = an.affine(src)
    if a is not None and a.is_const and a.const.is_number:
        return FALSE if a.const == 0 else TRUE
    return None


def _view_reshape(p: Pred, args, v) -> Optional[Pred]:
    amap = unit_map(shape_of(args[0]), v.type.shape)
    if amap is None:
        return None
    if p.terms and any(k != x for k, x in amap.items()):
        return None  # opaque tensors would no longer line up
    return Pred(tuple(Atom(map_coeffs(a.coeffs, amap), a.const) for a in p.atoms), p.terms, p.false)


def _view_expand(p: Pred, args, v) -> Optional[Pred]:
    return p


def _view_slice(p: Pred, args, v) -> Optional[Pred]:
    if is_noop_slice("slice", args, v):
        return p
    if p.terms:
        return None
    ishape = shape_of(args[0])
    dim, start, step = _slice_args(args, len(ishape))
    if not isinstance(start, (int, Sym)) or (isinstance(start, int) and start < 0):
        return None
    atoms = []
    for a in p.atoms:
        c = dict(a.coeffs)
        k = c.get(dim, 0)
        c[dim] = k * step
        atoms.append(Atom(_drop_unit(_norm(c), v.type.shape), a.const + k * to_sympy(start)))
    return Pred(tuple(atoms), (), p.false)


VIEW_RULES: dict[str, Callable] = {"reshape": _view_reshape, "expand": _view_expand, "slice": _view_slice}


def _bool_view(an, args, kw, v):
    op = v.node.op if isinstance(v, Value) else v.op
    return VIEW_RULES[op](an.pred(args[0]), args, v)


def _bool_tri(an, args, kw, v):
    return an.pred(args[0]) & _tri_atom(v.node.op if isinstance(v, Value) else v.op, args, v.type.shape)


def _bool_full(an, args, kw, v):
    x = args[-1] if args else None
    if isinstance(x, bool) or x in (0, 1):
        return TRUE if x else FALSE
    return None


def _bool_ones(an, args, kw, v):
    return TRUE


def _bool_zeros(an, args, kw, v):
    return FALSE


PRED_RULES: dict[str, Callable] = {
    "le": _compare("le"), "lt": _compare("lt"), "ge": _compare("ge"), "gt": _compare("gt"),
    "eq": _compare("eq"), "ne": _compare("ne"),
    "bitwise_and": _and, "logical_and": _and, "mul": _and,
    "bitwise_or": _or, "logical_or": _or, "bitwise_not": _not, "logical_not": _not,
    "_to_copy": _bool_cast, "reshape": _bool_view, "expand": _bool_view, "slice": _bool_view,
    "tril": _bool_tri, "triu": _bool_tri,
    "full": _bool_full, "scalar_tensor": lambda an, a, k, v: _bool_full(an, a[:1], k, v),
    "new_full": lambda an, a, k, v: _bool_full(an, a[1:], k, v), "full_like": lambda an, a, k, v: _bool_full(an, a[1:], k, v),
    "ones": _bool_ones, "new_ones": _bool_ones, "ones_like": _bool_ones,
    "zeros": _bool_zeros, "new_zeros": _bool_zeros, "zeros_like": _bool_zeros,
}


def simplify_index(v: Operand, an: MaskAnalysis) -> Operand:
    """``x[arange(B)[:, None, None, None], arange(Sk)[None, None, None, :]]`` -> ``reshape(x, [B, 1, 1, Sk])``.

    Hugging Face looks the padding mask up this way; as a reshape the
    padding pass sees ``attention_mask`` itself.
    """
    if not isinstance(v, Value) or v.node.op != "index":
        return v
    x, idx = v.node.args[0], v.node.args[1]
    shape, xs = v.type.shape, shape_of(x)
    if len(idx) != len(xs) or any(i is None for i in idx):
        return v
    axes = []
    for k, i in enumerate(idx):
        a = an.affine(i)
        if a is None or len(a.coeffs) != 1 or a.coeffs[0][1] != 1 or a.const != 0:
            return v
        ax = a.coeffs[0][0] + len(shape)
        if not same_dims([shape[ax]], [xs[k]]):
            return v
        axes.append(ax)
    if axes != sorted(set(axes)) or any(shape[d] != 1 for d in range(len(shape)) if d not in axes):
        return v
    return mk("reshape", x, tuple(shape))
