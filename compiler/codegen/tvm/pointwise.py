"""Pointwise ops as TIR expressions: one table, op name -> builder.

Each builder gets the :class:`~lazy.Ctx`, the target's :class:`~fastmath.Math`,
the IR node, and its operands with tensors already lowered to
:class:`~lazy.Lazy` (scalars stay Python numbers); it returns the node's
output as a Lazy. Broadcasting follows torch (trailing dims align, size-1
dims read index 0); type promotion is read from the node's declared output
dtype, and comparisons compute in ``torch.result_type`` of their operands.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tvm import tirx

from braze.compiler.codegen.tvm.fastmath import Math, bind, dt
from braze.compiler.codegen.tvm.lazy import Ctx, Lazy, LoweringError, convert
from braze.compiler.codegen.tvm.ops import compute_dtype
from braze.ir import Node
from braze.ir.types import Sym


def broadcast_reader(x: Lazy, out_dims: tuple) -> Callable:
    """Index function of ``x`` read at the indices of a broadcast output of rank ``len(out_dims)``."""
    r, R = x.rank, len(out_dims)
    bcast = [isinstance(x.dims[k], int) and x.dims[k] == 1 and out_dims[R - r + k] != 1 for k in range(r)]
    zero = None

    def read(idx):
        nonlocal zero
        sub = list(idx[R - r:])
        for k in range(r):
            if bcast[k]:
                if zero is None:
                    zero = tirx.const(0, dt(sub[k]))
                sub[k] = zero
        return x(sub)

    return read


def _torch_promote(a, b) -> torch.dtype:
    def meta(v):
        if isinstance(v, Lazy):
            return torch.empty([1] * v.rank, dtype=v.dtype, device="meta")
        if isinstance(v, Sym):
            return 1
        return v
    return torch.result_type(meta(a), meta(b))


def elementwise(ctx: Ctx, node: Node, operands: list, body: Callable, compute: torch.dtype | None = None) -> Lazy:
    """Output Lazy of ``node``: ``body(*values)`` where each operand (Lazy or
    scalar) is read broadcast and converted to ``compute`` (default: the
    output dtype)."""
    out = node.types[0]
    cdt = compute or out.dtype
    cd = compute_dtype(cdt)
    readers = []
    for v in operands:
        if isinstance(v, Lazy):
            rd = broadcast_reader(v, out.shape)
            readers.append((rd, v.dtype))
        else:
            c = ctx.const(v, cd)
            readers.append((c, None))

    def fn(idx):
        vals = []
        for rd, src in readers:
            if src is None:
                vals.append(rd)
            else:
                vals.append(convert(rd(idx), src, cdt))

        def finish(*vs):
            e = body(*vs)
            return convert(e, cdt if dt(e) != "bool" else torch.bool, out.dtype)
        # NOTE: operands are let-bound, so a body may use each of them several
        # times (an expression holding a Let must appear once in the tree).
        return bind(vals, finish)

    return Lazy(ctx.shape(out.shape), out.dtype, fn, tuple(out.shape))


def _f(x, v):
    return tirx.const(v, dt(x))


def _is_float(e) -> bool:
    return dt(e).startswith(("float", "bfloat"))


def _pow_scalar(x, e: float):
    if e == 1:
        return x
    if e == 2:
        return x * x
    if e == 3:
        return x * x * x
    if e == 4:
        x2 = x * x
        return x2 * x2
    if e == 0.5:
        return tirx.sqrt(x)
    if e == -0.5:
        return tirx.rsqrt(x)
    if e == -1:
        return _f(x, 1.0) / x
    if e == -2:
        return _f(x, 1.0) / (x * x)
    if e == 0:
        return _f(x, 1)
    return tirx.power(x, _f(x, e))


def _div(a, b, mode=None):
    if mode is None:
        return a / b
    if mode == "trunc":
        return tirx.trunc(a / b) if _is_float(a) else tirx.truncdiv(a, b)
    if mode == "floor":
        return tirx.floor(a / b) if _is_float(a) else tirx.floordiv(a, b)
    raise LoweringError(f"div rounding_mode={mode!r}")


def _gelu(m: Math, x, approximate: str = "none"):
    half = _f(x, 0.5)
    if approximate == "tanh":
        inner = _f(x, math.sqrt(2.0 / math.pi)) * (x + _f(x, 0.044715) * x * x * x)
        return half * x * (_f(x, 1.0) + m.tanh(inner))
    return half * x * (_f(x, 1.0) + m.erf(x * _f(x, math.sqrt(0.5))))


def _softplus(m: Math, x, beta=1.0, threshold=20.0):
    bx = x * _f(x, beta)
    return tirx.Select(bx > _f(x, threshold), x, m.log(_f(x, 1.0) + m.exp(bx)) / _f(x, beta))


def _sign(x):
    zero = _f(x, 0)
    return tirx.Select(x > zero, _f(x, 1), tirx.Select(x < zero, _f(x, -1), zero))


def _round(x):
    # round half to even, as torch.round
    return tirx.nearbyint(x)


def _remainder(a, b):
    if _is_float(a):
        return a - tirx.floor(a / b) * b
    return tirx.floormod(a, b)


def _fmod(a, b):
    if _is_float(a):
        return a - tirx.trunc(a / b) * b
    return tirx.truncmod(a, b)


def _clamp(x, lo, hi):
    if lo is not None:
        x = tirx.max(x, lo)
    if hi is not None:
        x = tirx.min(x, hi)
    return x


def _nan_to_num(x, nan=0.0, posinf=None, neginf=None, dtype="float32"):
    big = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}.get(dtype, 3.4028234663852886e38)
    posinf = big if posinf is None else posinf
    neginf = -big if neginf is None else neginf
    y = tirx.Select(tirx.isnan(x), _f(x, nan), x)
    y = tirx.Select(tirx.EQ(x, _f(x, math.inf)), _f(x, posinf), y)
    return tirx.Select(tirx.EQ(x, _f(x, -math.inf)), _f(x, neginf), y)


def _logical(e):
    return e if dt(e) == "bool" else tirx.NE(e, tirx.const(0, dt(e)))


# Unary ops computed in the output dtype: name -> (math) -> fn(x)
UNARY: dict[str, Callable] = {
    "abs": lambda m: tirx.abs,
    "neg": lambda m: lambda x: -x,
    "exp": lambda m: m.exp,
    "exp2": lambda m: lambda x: m.exp(x * _f(x, math.log(2.0))),
    "expm1": lambda m: lambda x: m.exp(x) - _f(x, 1.0),
    "log": lambda m: m.log,
    "log2": lambda m: lambda x: m.log(x) * _f(x, 1.0 / math.log(2.0)),
    "log10": lambda m: lambda x: m.log(x) * _f(x, 1.0 / math.log(10.0)),
    "log1p": lambda m: lambda x: m.log(x + _f(x, 1.0)),
    "sqrt": lambda m: tirx.sqrt,
    "rsqrt": lambda m: tirx.rsqrt,
    "reciprocal": lambda m: lambda x: _f(x, 1.0) / x,
    "sin": lambda m: tirx.sin,
    "cos": lambda m: tirx.cos,
    "tan": lambda m: tirx.tan,
    "tanh": lambda m: m.tanh,
    "sinh": lambda m: tirx.sinh,
    "cosh": lambda m: tirx.cosh,
    "asin": lambda m: tirx.asin,
    "acos": lambda m: tirx.acos,
    "atan": lambda m: tirx.atan,
    "asinh": lambda m: tirx.asinh,
    "acosh": lambda m: tirx.acosh,
    "atanh": lambda m: tirx.atanh,
    "sigmoid": lambda m: m.sigmoid,
    "erf": lambda m: m.erf,
    "erfc": lambda m: lambda x: _f(x, 1.0) - m.erf(x),
    "floor": lambda m: tirx.floor,
    "ceil": lambda m: tirx.ceil,
    "trunc": lambda m: tirx.trunc,
    "round": lambda m: _round,
    "frac": lambda m: lambda x: x - tirx.trunc(x),
    "sign": lambda m: _sign,
    "relu": lambda m: lambda x: tirx.max(x, _f(x, 0)),
    "relu6": lambda m: lambda x: tirx.min(tirx.max(x, _f(x, 0)), _f(x, 6)),
    "silu": lambda m: lambda x: x * m.sigmoid(x),
    "mish": lambda m: lambda x: x * m.tanh(_softplus(m, x)),
    "square": lambda m: lambda x: x * x,
    "hardsigmoid": lambda m: lambda x: tirx.min(tirx.max(x / _f(x, 6.0) + _f(x, 0.5), _f(x, 0.0)), _f(x, 1.0)),
    "hardswish": lambda m: lambda x: x * tirx.min(tirx.max(x + _f(x, 3.0), _f(x, 0.0)), _f(x, 6.0)) / _f(x, 6.0),
}

# Binary arithmetic computed in the output dtype.
BINARY: dict[str, Callable] = {
    "mul": lambda a, b: a * b,
    "maximum": tirx.max,
    "minimum": tirx.min,
    "atan2": tirx.atan2,
    "remainder": _remainder,
    "fmod": _fmod,
    "floor_divide": lambda a, b: tirx.floor(a / b) if _is_float(a) else tirx.floordiv(a, b),
    "copysign": lambda a, b: tirx.Select(b < _f(b, 0) if _is_float(b) else b < tirx.const(0, dt(b)),
                                         -tirx.abs(a), tirx.abs(a)),
    "xlogy": lambda a, b: tirx.Select(tirx.EQ(a, _f(a, 0)), _f(a, 0), a * tirx.log(b)),
}

COMPARE: dict[str, Callable] = {
    "eq": tirx.EQ,
    "ne": tirx.NE,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}

LOGICAL: dict[str, Callable] = {
    "logical_and": lambda a, b: tirx.And(_logical(a), _logical(b)),
    "logical_or": lambda a, b: tirx.Or(_logical(a), _logical(b)),
    "logical_xor": lambda a, b: tirx.NE(_logical(a), _logical(b)),
}

BITWISE: dict[str, Callable] = {
    "bitwise_and": lambda a, b: tirx.And(a, b) if dt(a) == "bool" else a & b,
    "bitwise_or": lambda a, b: tirx.Or(a, b) if dt(a) == "bool" else a | b,
    "bitwise_xor": lambda a, b: tirx.NE(a, b) if dt(a) == "bool" else a ^ b,
}


def lower_pointwise(ctx: Ctx, m: Math, node: Node, args: list, kw: dict) -> Lazy:
    """The Lazy output of a pointwise node (args/kwargs with tensors as Lazy)."""
    op = node.op
    out_dtype = node.types[0].dtype
    if op in UNARY:
        fn = UNARY[op](m)
        if out_dtype == torch.bool:
            raise LoweringError(f"{op} on bool")
        return elementwise(ctx, node, [args[0]], fn)
    if op in ("add", "sub"):
        alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
        sign = 1 if op == "add" else -1

        def addsub(a, b):
            if alpha != 1:
                b = b * tirx.const(alpha, dt(b))
            return a + b if sign > 0 else a - b
        return elementwise(ctx, node, list(args[:2]), addsub)
    if op == "div":
        mode = kw.get("rounding_mode", args[2] if len(args) > 2 else None)
        return elementwise(ctx, node, list(args[:2]), lambda a, b: _div(a, b, mode))
    if op in BINARY:
        return elementwise(ctx, node, list(args[:2]), BINARY[op])
    if op == "pow":
        base, ex = args[0], args[1]
        if isinstance(base, Lazy) and not isinstance(ex, Lazy):
            e = float(ex)
            return elementwise(ctx, node, [base], lambda x: _pow_scalar(x, e))
        return elementwise(ctx, node, [base, ex], lambda a, b: tirx.power(a, b))
    if op in COMPARE:
        cmp_dtype = _torch_promote(args[0], args[1])
        return elementwise(ctx, node, list(args[:2]), COMPARE[op], compute=cmp_dtype)
    if op in LOGICAL:
        return elementwise(ctx, node, list(args[:2]), LOGICAL[op], compute=torch.bool)
    if op == "logical_not":
        return elementwise(ctx, node, [args[0]], lambda a: tirx.Not(_logical(a)), compute=torch.bool)
    if op in BITWISE:
        return elementwise(ctx, node, list(args[:2]), BITWISE[op])
    if op == "bitwise_not":
        return elementwise(ctx, node, [args[0]], lambda a: tirx.Not(a) if dt(a) == "bool" else ~a)
    if op in ("isnan", "isinf", "isfinite", "signbit"):
        src = args[0].dtype
        fns = {"isnan": tirx.isnan,
               "isinf": tirx.isinf,
               "isfinite": tirx.isfinite,
               "signbit": lambda x: x < _f(x, 0)}
        if not src.is_floating_point:
            raise LoweringError(f"{op} of {src}")
        return elementwise(ctx, node, [args[0]], fns[op], compute=src)
    if op in ("_to_copy", "prims::convert_element_type"):
        x = args[0]
        return Lazy(x.shape, out_dtype, lambda idx: convert(x(idx), x.dtype, out_dtype), x.dims)
    if op == "where":
        cond, a, b = args[0], args[1], args[2]
        return _where(ctx, node, cond, a, b)
    if op == "masked_fill":
        x, mask, value = args[0], args[1], args[2]
        return _where(ctx, node, mask, value, x)
    if op == "fill":
        value = args[1]
        return elementwise(ctx, node, [value] if isinstance(value, Lazy) else [], lambda *v: v[0] if v else
                           ctx.const(value, compute_dtype(out_dtype)))
    if op in ("clamp", "clamp_min", "clamp_max", "hardtanh"):
        x = args[0]
        if op == "clamp":
            lo = kw.get("min", args[1] if len(args) > 1 else None)
            hi = kw.get("max", args[2] if len(args) > 2 else None)
        elif op == "clamp_min":
            lo, hi = args[1], None
        elif op == "clamp_max":
            lo, hi = None, args[1]
        else:
            lo = kw.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kw.get("max_val", args[2] if len(args) > 2 else 1.0)
        ops = [x] + [v for v in (lo, hi) if v is not None]
        has_lo, has_hi = lo is not None, hi is not None

        def clamp(*vals):
            it = iter(vals[1:])
            lo_v = next(it) if has_lo else None
            hi_v = next(it) if has_hi else None
            return _clamp(vals[0], lo_v, hi_v)
        return elementwise(ctx, node, ops, clamp)
    if op == "gelu":
        approx = kw.get("approximate", args[1] if len(args) > 1 else "none")
        return elementwise(ctx, node, [args[0]], lambda x: _gelu(m, x, approx))
    if op == "leaky_relu":
        slope = kw.get("negative_slope", args[1] if len(args) > 1 else 0.01)
        return elementwise(ctx, node, [args[0]], lambda x: tirx.Select(x > _f(x, 0), x, x * _f(x, slope)))
    if op == "elu":
        alpha = kw.get("alpha", args[1] if len(args) > 1 else 1.0)
        scale = kw.get("scale", args[2] if len(args) > 2 else 1.0)
        iscale = kw.get("input_scale", args[3] if len(args) > 3 else 1.0)
        return elementwise(ctx, node, [args[0]], lambda x: tirx.Select(
            x > _f(x, 0), x * _f(x, scale),
            (m.exp(x * _f(x, iscale)) - _f(x, 1.0)) * _f(x, alpha * scale)))
    if op == "softplus":
        beta = kw.get("beta", args[1] if len(args) > 1 else 1.0)
        thr = kw.get("threshold", args[2] if len(args) > 2 else 20.0)
        return elementwise(ctx, node, [args[0]], lambda x: _softplus(m, x, beta, thr))
    if op == "threshold":
        thr, value = args[1], args[2]
        return elementwise(ctx, node, [args[0]], lambda x: tirx.Select(x > _f(x, thr), x, _f(x, value)))
    if op == "lerp":
        return elementwise(ctx, node, list(args[:3]), lambda a, b, w: a + w * (b - a))
    if op == "nan_to_num":
        nan = kw.get("nan", args[1] if len(args) > 1 else 0.0)
        pinf = kw.get("posinf", args[2] if len(args) > 2 else None)
        ninf = kw.get("neginf", args[3] if len(args) > 3 else None)
        if not out_dtype.is_floating_point:
            return elementwise(ctx, node, [args[0]], lambda x: x)
        return elementwise(ctx, node, [args[0]], lambda x: _nan_to_num(x, nan or 0.0, pinf, ninf, dt(x)))
    if op in ("triu", "tril"):
        return _tri(ctx, node, args[0], kw.get("diagonal", args[1] if len(args) > 1 else 0), op == "triu")
    raise LoweringError(f"no TVM lowering for pointwise op {op}")


def _where(ctx: Ctx, node: Node, cond, a, b) -> Lazy:
    out = node.types[0]

    def body(c, x, y):
        return tirx.Select(_logical(c), x, y)

    # the condition keeps its own dtype; the branches compute in the output dtype
    cdt = compute_dtype(out.dtype)
    rc = broadcast_reader(cond, out.shape) if isinstance(cond, Lazy) else None
    branches = []
    for v in (a, b):
        if isinstance(v, Lazy):
            branches.append((broadcast_reader(v, out.shape), v.dtype))
        else:
            branches.append((ctx.const(v, cdt), None))

    def fn(idx):
        c = rc(idx) if rc is not None else tirx.const(bool(cond), "bool")
        vals = [rd if src is None else convert(rd(idx), src, out.dtype) for rd, src in branches]
        return bind([c] + vals, body)

    return Lazy(ctx.shape(out.shape), out.dtype, fn, tuple(out.shape))


def _tri(ctx: Ctx, node: Node, x: Lazy, diagonal: int, upper: bool) -> Lazy:
    out = node.types[0]

    def fn(idx):
        i, j = idx[-2], idx[-1]
        d = tirx.const(int(diagonal), dt(i))
        keep = (j - i >= d) if upper else (j - i <= d)
        v = x(idx)
        return tirx.Select(keep, v, tirx.const(0, dt(v)))  # v appears once

    return Lazy(x.shape, out.dtype, fn, tuple(out.shape))
