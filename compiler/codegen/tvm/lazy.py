"""Lazy tensors: an IR value as an index function, the unit of TVM lowering.

A :class:`Lazy` is a shape (TVM index expressions), an IR dtype and a
function from an index tuple to a TIR expression in the value's compute
dtype (``ops.compute_dtype``). Pointwise ops compose these functions and
layout ops rewrite the index tuple, so a fused chain becomes one expression
per output element; only reductions, GEMM accumulators and values the
schedule stages are materialised as ``te.compute`` tensors.

:class:`Ctx` holds what a lowering shares: the symbolic dims as TIR
variables, the index dtype, and the target kind (which picks the math
implementations in ``fastmath.py``).
"""
from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import sympy
import torch
import tvm
from tvm import te, tirx

from braze.compiler.codegen.tvm.fastmath import dt, let
from braze.compiler.codegen.tvm.ops import compute_dtype, tvm_dtype
from braze.ir.types import Dim, Sym, dims_equal

PrimExpr = tvm.ir.Expr
_TARGET: contextvars.ContextVar = contextvars.ContextVar("braze_tvm_target_kind", default="llvm")


@dataclass
class Lazy:
    """A value as ``fn(indices) -> PrimExpr`` over ``shape`` (see module doc)."""

    shape: tuple
    dtype: torch.dtype
    fn: Callable[[Sequence[PrimExpr]], PrimExpr]
    dims: tuple = ()  # the braze dims (int | Sym) of ``shape``, for reshape grouping
    reshape_of: Optional["Lazy"] = None  # set when this value is a reshape of that one (composed, not chained)
    unit: Optional[int] = None  # for views of an operand: the dim whose elements are adjacent in memory

    def __call__(self, idx: Sequence[PrimExpr]) -> PrimExpr:
        return self.fn(tuple(idx))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def cdtype(self) -> str:
        return compute_dtype(self.dtype)


class LoweringError(ValueError):
    """The group holds something this lowering does not handle (the checker should have declined)."""


@dataclass
class Ctx:
    """Shared state of one lowering.

    NOTE: creating a Ctx sets the target kind that :func:`convert` reads
    (a context variable), so casts use the target's native bf16 where it
    has one; lowerings run one at a time per thread.
    """

    index_dtype: str = "int64"
    target_kind: str = "llvm"
    syms: dict = field(default_factory=dict)  # symbol name -> tirx.Var

    def __post_init__(self):
        _TARGET.set(self.target_kind)

    # --- dims -------------------------------------------------------------
    def var(self, name: str) -> tirx.Var:
        v = self.syms.get(name)
        if v is None:
            v = te.var(name, self.index_dtype)
            self.syms[name] = v
        return v

    def idx(self, value: int) -> PrimExpr:
        return tirx.const(int(value), self.index_dtype)

    def dim(self, d: Dim) -> PrimExpr:
        if isinstance(d, int):
            return self.idx(d)
        if isinstance(d, Sym):
            return self._sympy(d.sympy)
        if isinstance(d, PrimExpr):
            return d
        raise LoweringError(f"dimension {d!r} is neither int nor symbolic")

    def shape(self, dims: Sequence[Dim]) -> tuple:
        return tuple(self.dim(d) for d in dims)

    def _sympy(self, e) -> PrimExpr:
        if e.is_Integer:
            return self.idx(int(e))
        if e.is_Symbol:
            return self.var(e.name)
        args = [self._sympy(a) for a in e.args] if not isinstance(e, sympy.floor) else []
        if e.is_Add:
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        if e.is_Mul:
            out = args[0]
            for a in args[1:]:
                out = out * a
            return out
        if e.is_Pow and e.args[1].is_Integer and int(e.args[1]) > 0:
            out = args[0]
            for _ in range(int(e.args[1]) - 1):
                out = out * args[0]
            return out
        if isinstance(e, sympy.floor):
            num, den = e.args[0].as_numer_denom()
            return tirx.floordiv(self._sympy(num), self._sympy(den))
        if isinstance(e, sympy.ceiling):
            num, den = e.args[0].as_numer_denom()
            n, d = self._sympy(num), self._sympy(den)
            return tirx.floordiv(n + d - 1, d)
        if isinstance(e, sympy.Mod):
            return tirx.floormod(args[0], args[1])
        if isinstance(e, sympy.Max):
            out = args[0]
            for a in args[1:]:
                out = tirx.max(out, a)
            return out
        if isinstance(e, sympy.Min):
            out = args[0]
            for a in args[1:]:
                out = tirx.min(out, a)
            return out
        raise LoweringError(f"cannot lower symbolic dimension {e}")

    # --- scalars ------------------------------------------------------------
    def const(self, value, dtype: str) -> PrimExpr:
        if isinstance(value, Sym):
            return self.dim(value).astype(dtype)
        if dtype == "bool":
            return tirx.const(bool(value), "bool")
        if dtype.startswith(("int", "uint")):
            return tirx.const(int(value), dtype)
        return tirx.const(float(value), dtype)


# --- dtype conversions ---------------------------------------------------------

def storage_dtype(dtype: torch.dtype, target_kind: str) -> str:
    """How a tensor of IR dtype ``dtype`` is stored in TVM buffers.

    NOTE: on LLVM, bf16 tensors are passed as int16 views of the same memory
    (the runner reinterprets them, zero-copy) and converted with bit
    arithmetic here: TVM's own bf16 legalisation on LLVM duplicates
    expressions and breaks on the Let bindings this lowering relies on.
    """
    if dtype == torch.bfloat16 and target_kind == "llvm":
        return "int16"
    return tvm_dtype(dtype)


def bf16_bits_to_f32(e: PrimExpr) -> PrimExpr:
    return tirx.reinterpret("float32", e.astype("uint16").astype("uint32") << tirx.const(16, "uint32"))


def f32_to_bf16_bits(e: PrimExpr) -> PrimExpr:
    """Round to nearest even (NaN stays a quiet NaN), as the int16 bit pattern."""
    def body(v):
        def on_bits(b):
            r = (b + tirx.const(0x7FFF, "uint32") + ((b >> tirx.const(16, "uint32")) & tirx.const(1, "uint32"))) \
                >> tirx.const(16, "uint32")
            r = tirx.Select(tirx.isnan(v), tirx.const(0x7FC0, "uint32"), r)
            return r.astype("uint16").astype("int16")
        return let(tirx.reinterpret("uint32", v), on_bits, "bits")
    return let(e, body, "tobf")


def round_bf16(e: PrimExpr) -> PrimExpr:
    return bf16_bits_to_f32(f32_to_bf16_bits(e))


def convert(e: PrimExpr, src: torch.dtype, dst: torch.dtype) -> PrimExpr:
    """A value computed in ``compute_dtype(src)`` as a value of IR dtype ``dst``
    (in ``compute_dtype(dst)``), with torch's cast semantics: to bool is
    ``!= 0``, float to int truncates, a cast to f16/bf16 rounds."""
    if src == dst:
        return e
    if dst == torch.bool:
        return tirx.NE(e, tirx.const(0, dt(e))) if dt(e) != "bool" else e
    cd = compute_dtype(dst)
    if dst == torch.bfloat16:
        if _TARGET.get() != "llvm":  # native bf16 (CUDA)
            return let(e, lambda v: v.astype("bfloat16").astype(cd), "rnd")
        return round_bf16(e.astype("float32") if dt(e) != "float32" else e)
    if dst == torch.float16:
        return let(e, lambda v: v.astype("float16").astype(cd), "rnd")
    return e.astype(cd) if dt(e) != cd else e


def load(tensor: te.Tensor, dtype: torch.dtype) -> Callable:
    """Index function reading a te tensor, widened to the compute dtype."""
    cd = compute_dtype(dtype)
    if str(tensor.dtype) == cd:
        return lambda idx: tensor(*idx)
    if dtype == torch.bfloat16 and str(tensor.dtype) == "int16":
        return lambda idx: bf16_bits_to_f32(tensor(*idx))
    return lambda idx: tensor(*idx).astype(cd)


def widen(value: PrimExpr, dtype: torch.dtype) -> PrimExpr:
    """A loaded element of IR dtype ``dtype`` (in its storage dtype) in the compute dtype."""
    cd = compute_dtype(dtype)
    if dt(value) == cd:
        return value
    if dtype == torch.bfloat16 and dt(value) == "int16":
        return bf16_bits_to_f32(value)
    return value.astype(cd)


def store(e: PrimExpr, dtype: torch.dtype, target_kind: str = "llvm") -> PrimExpr:
    """A computed value as stored in a buffer of IR dtype ``dtype``."""
    t = storage_dtype(dtype, target_kind)
    if dt(e) == t:
        return e
    if t == "int16" and dtype == torch.bfloat16:
        return f32_to_bf16_bits(e)
    if t in ("bfloat16", "float16"):
        return let(e, lambda v: v.astype(t), "st")
    return e.astype(t)


# --- index helpers ----------------------------------------------------------------

def numel(dims: Sequence[Dim]):
    out = sympy.Integer(1)
    for d in dims:
        out = out * (sympy.Integer(d) if isinstance(d, int) else d.sympy)
    return out


def same_numel(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    if all(isinstance(d, int) for d in a) and all(isinstance(d, int) for d in b):
        return math.prod(a) == math.prod(b)
    return sympy.simplify(numel(a) - numel(b)) == 0


def dim_eq(a: Dim, b: Dim) -> bool:
    return dims_equal(a, b)


def linearize(idx: Sequence[PrimExpr], shape: Sequence[PrimExpr], dtype: str) -> PrimExpr:
    out = tirx.const(0, dtype)
    for i, s in zip(idx, shape):
        out = out * s + i
    return out


def unravel(flat: PrimExpr, shape: Sequence[PrimExpr]) -> list:
    """Row-major indices of ``flat`` in ``shape`` (the outermost one without a modulo:
    ``flat`` is in range)."""
    out = []
    for k, s in enumerate(reversed(shape)):
        if k == len(shape) - 1:
            out.append(flat)
            break
        out.append(tirx.floormod(flat, s))
        flat = tirx.floordiv(flat, s)
    return out[::-1]


def reshape_groups(src: Sequence[Dim], dst: Sequence[Dim]):
    """Pair up runs of dims of equal product: ``[(src dims idx), (dst dims idx)]``.

    Size-1 dims become their own groups (one side empty). Returns ``None``
    when the products cannot be matched (symbolic dims not provably equal).
    """
    groups = []
    i = j = 0
    n, m = len(src), len(dst)
    while i < n or j < m:
        if i < n and src[i] == 1:
            groups.append(((i,), ()))
            i += 1
            continue
        if j < m and dst[j] == 1:
            groups.append(((), (j,)))
            j += 1
            continue
        if i >= n or j >= m:
            return None
        gi, gj = [i], [j]
        pi = sympy.Integer(src[i]) if isinstance(src[i], int) else src[i].sympy
        pj = sympy.Integer(dst[j]) if isinstance(dst[j], int) else dst[j].sympy
        i += 1
        j += 1
        for _ in range(n + m):
            if sympy.simplify(pi - pj) == 0:
                break
            # grow the side whose product is (numerically) smaller
            grow_src = _smaller(pi, pj)
            if grow_src and i < n:
                pi = pi * (sympy.Integer(src[i]) if isinstance(src[i], int) else src[i].sympy)
                gi.append(i)
                i += 1
            elif not grow_src and j < m:
                pj = pj * (sympy.Integer(dst[j]) if isinstance(dst[j], int) else dst[j].sympy)
                gj.append(j)
                j += 1
            else:
                return None
        else:
            return None
        groups.append((tuple(gi), tuple(gj)))
    return groups


def _smaller(a, b) -> bool:
    """Whether product ``a`` is smaller than ``b``, evaluated at large symbol values."""
    subs = {s: 4099 for s in (a.free_symbols | b.free_symbols)}
    return float(a.subs(subs)) < float(b.subs(subs))


def reshape_index(out_idx: Sequence[PrimExpr], src_dims: Sequence[Dim], dst_dims: Sequence[Dim],
                  src_shape: Sequence[PrimExpr], dst_shape: Sequence[PrimExpr], index_dtype: str) -> list:
    """Indices into ``src`` of the element at ``out_idx`` of its row-major reshape to ``dst``."""
    groups = reshape_groups(src_dims, dst_dims)
    zero = tirx.const(0, index_dtype)
    if groups is None:  # fall back to full linearisation
        return unravel(linearize(out_idx, dst_shape, index_dtype), src_shape)
    src_idx: list = [zero] * len(src_dims)
    for gi, gj in groups:
        if not gi:
            continue
        if not gj:
            for i in gi:
                src_idx[i] = zero
            continue
        if len(gi) == 1 and len(gj) == 1:
            src_idx[gi[0]] = out_idx[gj[0]]
            continue
        flat = linearize([out_idx[j] for j in gj], [dst_shape[j] for j in gj], index_dtype)
        if len(gi) == 1:
            src_idx[gi[0]] = flat
        else:
            for i, v in zip(gi, unravel(flat, [src_shape[i] for i in gi])):
                src_idx[i] = v
    return src_idx
