"""Integer tensors as affine functions of their coordinates.

The position arithmetic of mask building (``arange``, offsets, views,
``cat`` of shifted positions, ``cumsum`` of constants, lookups with
affine indices) is interpreted exactly: a tensor is :class:`Affine` when
every element equals ``const + sum(coeff[a] * x[a])``, axes keyed from the
right (-1 = last) so that broadcasting needs no bookkeeping. Constants are
read in full and fitted exactly. Used by ``masks``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import sympy
import torch

from braze.ir import Value
from braze.ir.types import Sym, sym
from braze.passes.attention.layout import Expr, same_dims, shape_of

S = sympy.Integer


def to_sympy(d) -> sympy.Expr:
    if isinstance(d, Sym):
        return d.sympy
    if isinstance(d, bool):
        return S(int(d))
    if isinstance(d, int):
        return S(d)
    if isinstance(d, sympy.Expr):
        return d
    raise TypeError(f"not an integer dimension: {d!r}")


def _norm(coeffs) -> tuple[tuple[int, int], ...]:
    return tuple(sorted((a, int(c)) for a, c in dict(coeffs).items() if c != 0))


def _drop_unit(coeffs, shape) -> tuple[tuple[int, int], ...]:
    """Coefficients on axes of size 1 (or absent) do not matter."""
    r = len(shape)
    return _norm({a: c for a, c in coeffs if -r <= a < 0 and shape[r + a] != 1})


@dataclass(frozen=True)
class Affine:
    """Integer tensor ``const + sum(coeff * x[axis])``."""

    coeffs: tuple[tuple[int, int], ...]
    const: sympy.Expr

    @property
    def c(self) -> dict[int, int]:
        return dict(self.coeffs)

    def __add__(self, other: "Affine") -> "Affine":
        c = self.c
        for a, k in other.coeffs:
            c[a] = c.get(a, 0) + k
        return Affine(_norm(c), self.const + other.const)

    def scale(self, k: int) -> "Affine":
        return Affine(_norm({a: c * k for a, c in self.coeffs}), self.const * k)

    @property
    def is_const(self) -> bool:
        return not self.coeffs


def const(v) -> Affine:
    return Affine((), to_sympy(v))


# --- constants -------------------------------------------------------------

def fit_affine(t: torch.Tensor) -> Optional[Affine]:
    """The exact affine form of an integer constant, or None."""
    if t.is_floating_point() or t.dtype == torch.bool or t.numel() == 0 or t.numel() > (1 << 22):
        return None
    t = t.to("cpu", torch.int64)  # NOTE: constants may live on the GPU; the analysis runs on the CPU
    base = int(t.reshape(-1)[0]) if t.dim() else int(t)
    coeffs, grid = {}, torch.full(t.shape, base, dtype=torch.int64)
    for d in range(t.dim()):
        if t.shape[d] < 2:
            continue
        idx = [0] * t.dim()
        idx[d] = 1
        k = int(t[tuple(idx)]) - base
        coeffs[d - t.dim()] = k
        view = [1] * t.dim()
        view[d] = t.shape[d]
        grid = grid + k * torch.arange(t.shape[d]).reshape(view)
    return Affine(_norm(coeffs), S(base)) if torch.equal(grid, t) else None


# --- coordinate maps of views ----------------------------------------------

def unit_map(in_shape, out_shape) -> Optional[dict[int, int]]:
    """Axis map (right-keyed) of a reshape that only inserts/removes size-1 dims."""
    a = [(i - len(in_shape), d) for i, d in enumerate(in_shape) if d != 1]
    b = [(i - len(out_shape), d) for i, d in enumerate(out_shape) if d != 1]
    if len(a) != len(b) or not same_dims([d for _, d in a], [d for _, d in b]):
        return None
    return {x: y for (x, _), (y, _) in zip(a, b)}


def map_coeffs(coeffs, amap: dict[int, int]):
    return _norm({amap[a]: c for a, c in coeffs})


def _slice_args(args, rank):
    dim = (args[1] if len(args) > 1 else 0)
    dim = dim - rank if dim >= 0 else dim
    start = args[2] if len(args) > 2 and args[2] is not None else 0
    step = args[4] if len(args) > 4 else 1
    return dim, start, step


# ---- integer rules: op -> (analysis, args, kwargs, out_shape) -> Affine | None

def _arange(an, args, kw, shape):
    vals = [a for a in args if isinstance(a, (int, Sym)) and not isinstance(a, bool)]
    if len(vals) == 1:
        return Affine(((-1, 1),), S(0))
    if len(vals) >= 2:
        step = vals[2] if len(vals) > 2 else 1
        if isinstance(step, int):
            return Affine(((-1, step),), to_sympy(vals[0]))
    return None


def _addsub(sign):
    def rule(an, args, kw, shape):
        a, b = an.affine(args[0]), an.affine(args[1])
        alpha = kw.get("alpha", 1)
        if a is None or b is None or not isinstance(alpha, int):
            return None
        return a + b.scale(sign * alpha)
    return rule


def _mul(an, args, kw, shape):
    a, b = an.affine(args[0]), an.affine(args[1])
    if a is None or b is None:
        return None
    if b.is_const and b.const.is_Integer:
        return a.scale(int(b.const))
    if a.is_const and a.const.is_Integer:
        return b.scale(int(a.const))
    return None


def _neg(an, args, kw, shape):
    a = an.affine(args[0])
    return None if a is None else a.scale(-1)


# NOTE: integers stay exact in these dtypes (float32 up to 2**24 positions).
EXACT_CASTS = (torch.int64, torch.int32, torch.float32, torch.float64)


def _passthrough(an, args, kw, shape):
    src = args[0]
    if isinstance(src, (Value, Expr)) and src.type.dtype == torch.bool:
        p = an.pred(src)
        return const(1) if p.is_true else const(0) if p.false else None
    if kw.get("dtype") not in EXACT_CASTS:
        return None
    return an.affine(src)


def minimum(a: Affine, shape) -> sympy.Expr:
    """The least element of an affine tensor of ``shape``."""
    r = len(shape)
    return a.const + sum((k * (to_sympy(shape[r + ax]) - 1) for ax, k in a.coeffs if k < 0), S(0))


def _reshape(an, args, kw, shape):
    a = an.affine(args[0])
    amap = unit_map(shape_of(args[0]), shape)
    if a is None or amap is None:
        return None
    return Affine(map_coeffs(_drop_unit(a.coeffs, shape_of(args[0])), amap), a.const)


def _expand(an, args, kw, shape):
    return an.affine(args[0])


def _slice(an, args, kw, shape):
    a = an.affine(args[0])
    if a is None:
        return None
    ishape = shape_of(args[0])
    dim, start, step = _slice_args(args, len(ishape))
    if isinstance(start, int) and start < 0:
        start = sym(to_sympy(ishape[dim]) + start) if not isinstance(ishape[dim], int) else ishape[dim] + start
    k = a.c.get(dim, 0)
    c = a.c
    c[dim] = k * step
    return Affine(_norm(c), a.const + k * to_sympy(start))


def _select(an, args, kw, shape):
    a = an.affine(args[0])
    if a is None or not isinstance(args[2], (int, Sym)):
        return None
    r = len(shape_of(args[0]))
    dim = args[1] - r if args[1] >= 0 else args[1]
    idx = args[2]
    if isinstance(idx, int) and idx < 0:
        return None
    c = {}
    for ax, k in a.coeffs:
        if ax == dim:
            continue
        c[ax + 1 if ax < dim else ax] = k
    return Affine(_norm(c), a.const + a.c.get(dim, 0) * to_sympy(idx))


def _permute(an, args, kw, shape):
    a = an.affine(args[0])
    if a is None:
        return None
    perm = list(args[1])
    r = len(perm)
    pos = {p % r: k for k, p in enumerate(perm)}
    return Affine(_norm({pos[ax + r] - r: k for ax, k in a.coeffs}), a.const)


def _index(an, args, kw, shape):
    """x[idx_0, ..., idx_r-1] with every axis indexed by an affine index."""
    a = an.affine(args[0])
    idx = args[1]
    r = len(shape_of(args[0]))
    if a is None or len(idx) != r or any(i is None for i in idx):
        return None
    out = const(a.const)
    for ax, k in a.coeffs:
        ia = an.affine(idx[ax + r])
        # NOTE: a negative index wraps around: only provably non-negative ones are affine
        if ia is None or not sympy.simplify(minimum(ia, shape_of(idx[ax + r]))).is_nonnegative:
            return None
        out = out + ia.scale(k)
    return out


def _cat(an, args, kw, shape):
    xs = args[0]
    r = len(shape)
    dim = args[1] if len(args) > 1 else 0
    dim = dim - r if dim >= 0 else dim
    parts = [(x, an.affine(x)) for x in xs]
    if any(p is None for _, p in parts):
        return None
    # the coefficient along dim: from any part longer than 1 there
    kd = None
    for x, p in parts:
        if shape_of(x)[r + dim] != 1:
            kd = p.c.get(dim, 0) if kd is None else kd
            if p.c.get(dim, 0) != kd:
                return None
    kd = kd or 0
    others = {ax: k for ax, k in parts[0][1].coeffs if ax != dim}
    offset = S(0)
    base = None
    for x, p in parts:
        if {ax: k for ax, k in p.coeffs if ax != dim} != others:
            return None
        b = p.const - kd * offset
        if base is None:
            base = b
        elif sympy.simplify(b - base) != 0:
            return None
        offset = offset + to_sympy(shape_of(x)[r + dim])
    others[dim] = kd
    return Affine(_norm(others), base)


def _cumsum(an, args, kw, shape):
    src = args[0]
    r = len(shape)
    dim = args[1] - r if args[1] >= 0 else args[1]
    if src.type.dtype == torch.bool:
        p = an.pred(src)
        k = 1 if p.is_true else 0 if p.false else None
        if k is None:
            return None
        a = const(k)
    else:
        a = an.affine(src)
        if a is None or not a.is_const:
            return None
    return Affine(_norm({dim: a.const}), a.const) if a.const.is_Integer else None


def _full(an, args, kw, shape):
    v = args[-1] if args else None
    if isinstance(v, (int, Sym)) and not isinstance(v, bool):
        return const(v)
    return None


def _new_full(an, args, kw, shape):
    return _full(an, args[1:], kw, shape)


def _ones(an, args, kw, shape):
    return const(1)


def _zeros(an, args, kw, shape):
    return const(0)


AFFINE_RULES: dict[str, Callable] = {
    "arange": _arange, "add": _addsub(1), "sub": _addsub(-1), "mul": _mul, "neg": _neg,
    "_to_copy": _passthrough, "reshape": _reshape, "expand": _expand, "slice": _slice, "select": _select,
    "permute": _permute, "index": _index, "cat": _cat, "cumsum": _cumsum, "full": _full,
    "new_full": _new_full, "scalar_tensor": lambda an, a, k, s: _full(an, a[:1], k, s),
    "ones": _ones, "ones_like": _ones, "new_ones": _ones, "zeros": _zeros, "zeros_like": _zeros,
    "new_zeros": _zeros, "full_like": _new_full,
}
