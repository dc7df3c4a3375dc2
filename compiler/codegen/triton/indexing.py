"""Index arithmetic for generated Triton kernels.

Layout ops (reshape, permute, expand, slice, select, cat) are folded into
address computation: codegen "pulls" each value at an :class:`Index` of its
shape, starting from the kernel's iteration domain, and each layout op maps
the index of its output to an index of its operand. Nothing is materialised.

An :class:`Index` partitions a tensor's dims into *groups* of consecutive
dims, each carrying one linear (row-major) index over the group, a
:class:`Lin`: a sum of integer terms over *atoms* (``r``, ``c``: the
kernel's row and column indices) and :class:`Digit` (``(x // div) % mod``).
Keeping merged dims as one linear index is what lets a reshape that splits
and re-merges the same dims produce ``r`` again instead of
``(r // S) * S + r % S`` (the merge rule in :func:`_normalize`), which is how
the GEMM template recognises that its epilogue reads the product at exactly
the tile's ``(m, n)``.

Sizes are sympy expressions over the graph's symbols (positive integers),
rendered as kernel arguments ``sym_<name>``.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import sympy as sp

from braze.ir.types import Sym


class Unsupported(Exception):
    """The Triton code generator declines a group; the message says why."""


# --------------------------------------------------------------------------- sizes
def size(d: Union[int, Sym, sp.Expr]) -> sp.Expr:
    if isinstance(d, Sym):
        return d.sympy
    if isinstance(d, int):
        return sp.Integer(d)
    return sp.sympify(d)


def prod(ds: Iterable) -> sp.Expr:
    out = sp.Integer(1)
    for d in ds:
        out = out * size(d)
    return out


def eq(a, b) -> bool:
    a, b = size(a), size(b)
    if a == b:
        return True
    if a.is_Integer and b.is_Integer:
        return False
    return _eq(a, b)


@functools.lru_cache(maxsize=65536)
def _eq(a, b) -> bool:
    return sp.expand(a - b) == 0


def quotient(a, b) -> Optional[sp.Expr]:
    """``a / b`` when it is provably a polynomial (b divides a), else None."""
    a, b = size(a), size(b)
    if a.is_Integer and b.is_Integer:
        return sp.Integer(int(a) // int(b)) if int(b) != 0 and int(a) % int(b) == 0 else None
    return _quotient(a, b)


@functools.lru_cache(maxsize=65536)
def _quotient(a, b) -> Optional[sp.Expr]:
    q = sp.cancel(a / b)
    num, den = sp.fraction(q)
    if den == 1 or (den.is_Integer and num.is_Integer and num % den == 0):
        return sp.expand(q)
    return None


def nonneg(e) -> bool:
    """Provably ``e >= 0`` for positive integer symbols."""
    e = size(e)
    if e.is_Integer:
        return int(e) >= 0
    return _nonneg(e)


@functools.lru_cache(maxsize=65536)
def _nonneg(e) -> bool:
    e = sp.expand(e)
    if e.is_Number:
        return bool(e >= 0)
    return bool(e.is_nonnegative)


def render_size(e) -> str:
    """Triton/Python code for a size expression; symbols are ``sym_<name>``."""
    e = size(e)
    if e.is_Integer:
        return str(int(e))
    if e.is_Symbol:
        return f"sym_{e.name}"
    if e.is_Add:
        return "(" + " + ".join(render_size(a) for a in e.args) + ")"
    if e.is_Mul:
        num, den = sp.fraction(e)
        if den != 1:
            return f"({render_size(num)} // {render_size(den)})"
        return "(" + " * ".join(render_size(a) for a in e.args) + ")"
    if e.is_Pow and e.args[1].is_Integer and int(e.args[1]) > 0:
        return "(" + " * ".join([render_size(e.args[0])] * int(e.args[1])) + ")"
    if isinstance(e, sp.floor):
        num, den = sp.fraction(sp.together(e.args[0]))
        return f"({render_size(num)} // {render_size(den)})"
    if isinstance(e, sp.Max):
        return "max(" + ", ".join(render_size(a) for a in e.args) + ")"
    if isinstance(e, sp.Min):
        return "min(" + ", ".join(render_size(a) for a in e.args) + ")"
    if isinstance(e, sp.Mod):
        return f"({render_size(e.args[0])} % {render_size(e.args[1])})"
    raise Unsupported(f"cannot render size expression {e}")


def size_symbols(e) -> set[str]:
    return {s.name for s in size(e).free_symbols}


# --------------------------------------------------------------------------- linear index expressions
@dataclass(frozen=True)
class Atom:
    """A kernel index variable (``r``, ``c``, ``b``, ...)."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Digit:
    """``(base // div) % mod`` (no modulo when ``mod`` is None)."""

    base: "Lin"
    div: sp.Expr
    mod: Optional[sp.Expr]

    def __repr__(self) -> str:
        return f"D({self.base!r}//{self.div}%{self.mod})"


Key = Union[Atom, Digit]


@dataclass(frozen=True)
class Lin:
    """``const + sum(coef * key)``: an integer index expression."""

    terms: tuple[tuple[Key, sp.Expr], ...] = ()
    const: sp.Expr = sp.Integer(0)

    def __repr__(self) -> str:
        parts = [f"{c}*{k!r}" if c != 1 else repr(k) for k, c in self.terms]
        if self.const != 0 or not parts:
            parts.append(str(self.const))
        return " + ".join(parts)

    @property
    def is_const(self) -> bool:
        return not self.terms

    def atoms(self) -> frozenset[str]:
        out: set[str] = set()
        for k, _ in self.terms:
            out |= {k.name} if isinstance(k, Atom) else k.base.atoms()
        return frozenset(out)

    def __add__(self, other: "Lin") -> "Lin":
        d = dict(self.terms)
        for k, c in other.terms:
            d[k] = d.get(k, 0) + c
        return _normalize(d, self.const + other.const)

    def scale(self, k) -> "Lin":
        k = size(k)
        if k == 0:
            return ZERO
        return _normalize({key: c * k for key, c in self.terms}, self.const * k)

    def shift(self, k) -> "Lin":
        return Lin(self.terms, sp.expand(self.const + size(k)))


ZERO = Lin()


def const(k) -> Lin:
    return Lin((), sp.expand(size(k)))


def atom(name: str) -> Lin:
    return Lin(((Atom(name), sp.Integer(1)),))


def _sorted(d: Mapping[Key, sp.Expr]) -> tuple:
    return tuple(sorted(((k, sp.expand(c)) for k, c in d.items() if sp.expand(c) != 0), key=lambda kc: repr(kc[0])))


def _normalize(d: dict, c0) -> Lin:
    """Combine like terms and re-merge digit pairs split from one index:
    ``(x // (d*m)) * m * k + ((x // d) % m) * k -> (x // d) * k``."""
    d = {k: sp.expand(v) for k, v in d.items() if sp.expand(v) != 0}
    c0 = sp.expand(size(c0))
    changed = True
    while changed:
        changed = False
        digits = [k for k in d if isinstance(k, Digit) and k.mod is not None]
        for lo in digits:
            for hi in [k for k in d if isinstance(k, Digit) and k is not lo]:
                if hi.base != lo.base or not eq(hi.div, lo.div * lo.mod):
                    continue
                if not eq(d[hi], d[lo] * lo.mod):
                    continue
                coef = d.pop(lo)
                d.pop(hi)
                merged = digit(lo.base, lo.div, None if hi.mod is None else hi.mod * lo.mod)
                for k, c in merged.terms:
                    d[k] = sp.expand(d.get(k, 0) + c * coef)
                    if d[k] == 0:
                        d.pop(k)
                c0 = sp.expand(c0 + merged.const * coef)
                changed = True
                break
            if changed:
                break
    return Lin(_sorted(d), c0)


# Extents of the atoms of the kernel being generated (exclusive upper bounds).
_EXTENTS: contextvars.ContextVar[Mapping[str, sp.Expr]] = contextvars.ContextVar("atom_extents", default={})


@contextlib.contextmanager
def atom_extents(extents: Mapping[str, object]):
    """Within this block, atoms have these extents (used to simplify digits and prune cat branches)."""
    tok = _EXTENTS.set({k: size(v) for k, v in extents.items()})
    try:
        yield
    finally:
        _EXTENTS.reset(tok)


def extents() -> Mapping[str, sp.Expr]:
    return _EXTENTS.get()


def _split_multiple(x: Lin, k) -> tuple[Optional[Lin], Lin]:
    """``x = k * y + z`` with the terms whose coefficients k divides in y."""
    y: dict = {}
    z: dict = {}
    for key, c in x.terms:
        q = quotient(c, k)
        (y if q is not None else z)[key] = q if q is not None else c
    return (Lin(_sorted(y)) if y else None), Lin(_sorted(z), x.const)


def digit(x: Lin, div, mod=None, extent=None) -> Lin:
    """``(x // div) % mod`` simplified; ``extent`` (exclusive bound of x) drops a needless modulo."""
    div = sp.expand(size(div))
    mod = None if mod is None else sp.expand(size(mod))
    extent = None if extent is None else size(extent)
    return _digit(x, div, mod, extent, tuple(sorted(extents().items())))


@functools.lru_cache(maxsize=65536)
def _digit(x: Lin, div, mod, extent, _ext_key) -> Lin:
    if x.is_const and x.const.is_Integer and div.is_Integer and (mod is None or mod.is_Integer):
        v = int(x.const) // int(div)
        return const(v % int(mod) if mod is not None else v)
    if extent is not None and mod is not None and eq(div * mod, extent):
        mod = None
    ext = extents()
    if not eq(div, 1):
        # (div * y + z) // div == y when 0 <= z < div
        y, z = _split_multiple(x, div)
        b = bounds(z, ext)
        if b is not None and nonneg(b[0]) and nonneg(div - 1 - b[1]):
            return digit(y if y is not None else ZERO, 1, mod)
    if mod is not None:
        # (mod * y + z) % mod == z when 0 <= z < mod
        y, z = _split_multiple(x, mod)
        b = bounds(z, ext)
        if eq(div, 1) and b is not None and nonneg(b[0]) and nonneg(mod - 1 - b[1]):
            return z
    if mod is not None and eq(mod, 1):
        return ZERO
    if eq(div, 1) and mod is None:
        return x
    if len(x.terms) == 1 and x.const == 0 and x.terms[0][1] == 1 and isinstance(x.terms[0][0], Digit):
        inner: Digit = x.terms[0][0]
        ndiv = inner.div * div
        if inner.mod is None:
            return digit(inner.base, ndiv, mod)
        if mod is not None and quotient(inner.mod, div * mod) is not None:
            return digit(inner.base, ndiv, mod)
        if mod is None and quotient(inner.mod, div) is not None:
            return digit(inner.base, ndiv, quotient(inner.mod, div))
    return Lin(((Digit(x, div, mod), sp.Integer(1)),))


def render(x: Lin, names: Mapping[str, str], subst: Optional[Mapping] = None) -> str:
    """Code for ``x``; ``names`` maps atoms to variables, ``subst`` maps keys to code."""
    subst = subst or {}
    parts = []
    for k, c in x.terms:
        if k in subst:
            t = subst[k]
        elif isinstance(k, Atom):
            t = names[k.name]
        else:
            t = f"({render(k.base, names, subst)} // {render_size(k.div)})" if k.div != 1 else \
                f"({render(k.base, names, subst)})"
            if k.mod is not None:
                t = f"({t} % {render_size(k.mod)})"
        parts.append(t if c == 1 else f"{t} * {render_size(c)}" if nonneg(c) else f"{t} * (-{render_size(-c)})")
    if x.const != 0 or not parts:
        parts.append(render_size(x.const) if nonneg(x.const) else f"(-{render_size(-x.const)})")
    return parts[0] if len(parts) == 1 else "(" + " + ".join(parts) + ")"


def bounds(x: Lin, extents: Mapping[str, sp.Expr]) -> Optional[tuple[sp.Expr, sp.Expr]]:
    """Inclusive (lo, hi) of ``x`` given each atom's extent, or None when unknown."""
    lo, hi = sp.expand(x.const), sp.expand(x.const)
    for k, c in x.terms:
        if isinstance(k, Atom):
            if k.name not in extents:
                return None
            top = extents[k.name] - 1
        elif k.mod is not None:
            top = k.mod - 1
        else:
            b = bounds(k.base, extents)
            if b is None:
                return None
            top = sp.floor(b[1] / k.div)
        if nonneg(c):
            hi = hi + c * top
        elif nonneg(-c):
            lo = lo + c * top
        else:
            return None
    return sp.expand(lo), sp.expand(hi)


# --------------------------------------------------------------------------- conditions (cat branches)
@dataclass(frozen=True)
class Cond:
    """A conjunction of ``lin < bound`` / ``lin >= bound`` terms."""

    terms: tuple[tuple[Lin, str, sp.Expr], ...] = ()

    def and_(self, lin: Lin, op: str, bound, extents: Mapping[str, sp.Expr]) -> Optional["Cond"]:
        """This condition and one more term; None when it is provably false."""
        bound = sp.expand(size(bound))
        b = bounds(lin, extents)
        if b is not None:
            lo, hi = b
            always = nonneg(bound - hi - 1) if op == "lt" else nonneg(lo - bound)
            never = nonneg(lo - bound) if op == "lt" else nonneg(bound - hi - 1)
            if always:
                return self
            if never:
                return None
        return Cond(tuple(sorted(set(self.terms) | {(lin, op, bound)}, key=repr)))

    def atoms(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for lin, _, _ in self.terms:
            out |= lin.atoms()
        return out

    def render(self, names: Mapping[str, str], subst=None) -> list[str]:
        return [f"({render(lin, names, subst)} {'<' if op == 'lt' else '>='} {render_size(b)})"
                for lin, op, b in self.terms]


TRUE = Cond()


# --------------------------------------------------------------------------- indices
@dataclass(frozen=True)
class Index:
    """An index into a tensor of ``shape``: groups ``(start, end, lin)`` of consecutive dims."""

    shape: tuple[sp.Expr, ...]
    groups: tuple[tuple[int, int, Lin], ...]

    @staticmethod
    def of(shape: Sequence, groups: Sequence[tuple[int, int, Lin]]) -> "Index":
        shape = tuple(size(d) for d in shape)
        gs = tuple(groups)
        if not gs and shape:
            gs = ((0, len(shape), ZERO),)
        return Index(shape, gs)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def split_at(self, k: int) -> "Index":
        if k <= 0 or k >= self.rank:
            return self
        return _split_at(self, k, tuple(sorted(extents().items())))

    def _split_at(self, k: int) -> "Index":
        out = []
        for s, e, lin in self.groups:
            if s < k < e:
                inner = prod(self.shape[k:e])
                out.append((s, k, ZERO if eq(prod(self.shape[s:k]), 1) else digit(lin, inner, None)))
                out.append((k, e, digit(lin, 1, inner, prod(self.shape[s:e]))))
            else:
                out.append((s, e, lin))
        return Index(self.shape, tuple(out))

    def dims(self) -> list[Lin]:
        """One linear index per dim (size-1 dims are 0)."""
        return list(_dims(self, tuple(sorted(extents().items()))))

    def _dims(self) -> tuple:
        idx = self
        for k in range(1, self.rank):
            idx = idx.split_at(k)
        out = [ZERO] * self.rank
        for s, e, lin in idx.groups:
            if e > s:
                out[s] = ZERO if eq(self.shape[s], 1) else lin
        return tuple(out)

    def linear(self, a: int, b: int) -> Lin:
        """Row-major linear index over dims ``a..b``."""
        idx = self.split_at(a).split_at(b)
        out = ZERO
        for s, e, lin in idx.groups:
            if s >= a and e <= b and e > s:
                out = out + lin.scale(prod(self.shape[e:b]))
        return out

    def key(self) -> tuple:
        return tuple(self.dims())


@functools.lru_cache(maxsize=65536)
def _split_at(idx: Index, k: int, _ext_key) -> Index:
    return idx._split_at(k)


@functools.lru_cache(maxsize=65536)
def _dims(idx: Index, _ext_key) -> tuple:
    return idx._dims()


def domain_index(shape: Sequence, row_atom: str = "r", col_atom: str = "c") -> Index:
    """The kernel's iteration index over ``shape``: all dims but the last are one
    row group indexed by ``row_atom``, the last dim is indexed by ``col_atom``."""
    shape = tuple(size(d) for d in shape)
    if not shape:
        return Index((), ())
    if len(shape) == 1:
        return Index(shape, ((0, 1, atom(col_atom)),))
    return Index(shape, ((0, len(shape) - 1, atom(row_atom)), (len(shape) - 1, len(shape), atom(col_atom))))
