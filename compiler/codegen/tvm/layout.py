"""Layout ops folded into index arithmetic.

``reshape`` maps an output index to the source index through groups of
dims with equal products (no division where dims only merge or split one
to one); ``permute`` permutes indices; ``expand`` reads index 0 on
broadcast dims; ``slice``/``select`` offset or fix one index; ``cat`` is a
select between loads whose indices are clamped in range, so a vectorised
loop over the concatenated dim stays vectorised; ``split`` is slices.
"""
from __future__ import annotations

import math
from typing import Sequence

from tvm import tirx

from braze.compiler.codegen.tvm.fastmath import bind, dt
from braze.compiler.codegen.tvm.lazy import Ctx, Lazy, LoweringError, reshape_index
from braze.ir import Node
from braze.ir.types import Sym


def _norm_dim(d: int, rank: int) -> int:
    return d % rank if rank else 0


def reshape(ctx: Ctx, x: Lazy, dims: tuple) -> Lazy:
    if tuple(dims) == tuple(x.dims):
        return x
    if x.reshape_of is not None:  # reshape(reshape(y)) = reshape(y): no index round trip
        return reshape(ctx, x.reshape_of, dims)
    out_shape = ctx.shape(dims)
    src_dims, src_shape = x.dims, x.shape

    def fn(idx):
        return x(reshape_index(idx, src_dims, dims, src_shape, out_shape, ctx.index_dtype))

    unit = None
    if x.unit is not None and x.unit == x.rank - 1 and dims and str(dims[-1]) == str(x.dims[-1]):
        unit = len(dims) - 1  # the innermost dim is kept whole
    return Lazy(out_shape, x.dtype, fn, tuple(dims), reshape_of=x, unit=unit)


def permute(ctx: Ctx, x: Lazy, perm: Sequence[int]) -> Lazy:
    perm = [_norm_dim(p, x.rank) for p in perm]
    inv = [0] * len(perm)
    for k, p in enumerate(perm):
        inv[p] = k

    def fn(idx):
        return x([idx[inv[p]] for p in range(len(perm))])

    unit = perm.index(x.unit) if x.unit is not None else None
    return Lazy(tuple(x.shape[p] for p in perm), x.dtype, fn, tuple(x.dims[p] for p in perm), unit=unit)


def expand(ctx: Ctx, x: Lazy, dims: tuple) -> Lazy:
    R, r = len(dims), x.rank
    bcast = [isinstance(x.dims[k], int) and x.dims[k] == 1 and dims[R - r + k] != 1 for k in range(r)]

    def fn(idx):
        sub = list(idx[R - r:])
        for k in range(r):
            if bcast[k]:
                sub[k] = tirx.const(0, dt(sub[k]))
        return x(sub)

    unit = x.unit + (R - r) if x.unit is not None and not bcast[x.unit] else None
    return Lazy(ctx.shape(dims), x.dtype, fn, tuple(dims), unit=unit)


def _offset(ctx: Ctx, v, size) -> "tirx.PrimExpr":
    """A start/index argument (int, Sym or None) normalised like Python (negatives count from the end)."""
    if v is None:
        return ctx.idx(0)
    if isinstance(v, Sym):
        return ctx.dim(v)
    v = int(v)
    if v < 0:
        return tirx.max(size + ctx.idx(v), ctx.idx(0))
    if isinstance(size, tirx.IntImm):
        return ctx.idx(min(v, int(size.value)))
    return ctx.idx(v)


def slice_(ctx: Ctx, x: Lazy, dim: int, start, step: int, out_dims: tuple) -> Lazy:
    dim = _norm_dim(dim, x.rank)
    off = _offset(ctx, start, x.shape[dim])
    step = int(step)

    def fn(idx):
        idx = list(idx)
        i = idx[dim] if step == 1 else idx[dim] * tirx.const(step, dt(idx[dim]))
        idx[dim] = i + off if not (isinstance(off, tirx.IntImm) and off.value == 0) else i
        return x(idx)

    unit = x.unit if x.unit is not None and (dim != x.unit or step == 1) else None
    return Lazy(ctx.shape(out_dims), x.dtype, fn, tuple(out_dims), unit=unit)


def select(ctx: Ctx, x: Lazy, dim: int, index, out_dims: tuple) -> Lazy:
    dim = _norm_dim(dim, x.rank)
    off = _offset(ctx, index, x.shape[dim])

    def fn(idx):
        idx = list(idx)
        return x(idx[:dim] + [off] + idx[dim:])

    unit = None if x.unit is None or x.unit == dim else (x.unit - 1 if x.unit > dim else x.unit)
    return Lazy(ctx.shape(out_dims), x.dtype, fn, tuple(out_dims), unit=unit)


def cat(ctx: Ctx, xs: Sequence[Lazy], dim: int, out_dims: tuple, out_dtype) -> Lazy:
    from braze.compiler.codegen.tvm.lazy import convert  # lazy: imports tvm on first use

    rank = len(out_dims)
    dim = _norm_dim(dim, rank)
    parts = [x for x in xs if not (isinstance(x.dims[dim], int) and x.dims[dim] == 0)]
    if not parts:
        raise LoweringError("cat of empty tensors")
    offsets, acc = [], ctx.idx(0)
    for x in parts:
        offsets.append(acc)
        acc = acc + x.shape[dim]

    if ctx.target_kind == "cuda":
        return Lazy(ctx.shape(out_dims), out_dtype, _cat_guarded(parts, offsets, dim, out_dtype), tuple(out_dims))

    def fn(idx):
        i = idx[dim]
        if len(parts) == 1:
            return convert(parts[0](idx), parts[0].dtype, out_dtype)
        # NOTE: both sides of a Select are evaluated, so every part's load must
        # stay in bounds: each part reads at a clamped index, and the loaded
        # values are Let-bound outside the Select (inside it, TVM's simplifier
        # would drop the clamp, knowing the branch condition holds there).
        zero = tirx.const(0, dt(i))
        one = tirx.const(1, dt(i))
        vals = []
        for k, x in enumerate(parts):
            sub = list(idx)
            sub[dim] = tirx.min(tirx.max(i - offsets[k] if k else i, zero), x.shape[dim] - one)
            vals.append(convert(x(sub), x.dtype, out_dtype))

        def body(*vs):
            val = vs[-1]
            for k in range(len(parts) - 2, -1, -1):
                val = tirx.Select(i < offsets[k + 1], vs[k], val)
            return val
        return bind(vals, body, "catv")

    return Lazy(ctx.shape(out_dims), out_dtype, fn, tuple(out_dims))


def _cat_guarded(parts, offsets, dim: int, out_dtype):
    """cat for CUDA: ``if_then_else`` (only the taken part is loaded, no clamps).
    The condition is written on ``i // g`` with ``g`` the gcd of the static
    offsets, so that it is uniform over an aligned vector of lanes and the
    loop stays vectorised (TVM's CUDA code cannot hold a vector of bools)."""
    from braze.compiler.codegen.tvm.lazy import convert  # lazy: imports tvm on first use

    stat = [int(o.value) for o in offsets[1:] if isinstance(o, tirx.IntImm)]
    g = 0
    if len(stat) == len(offsets) - 1:
        for o in stat:
            g = math.gcd(g, o)

    def fn(idx):
        i = idx[dim]
        val = None
        for k in range(len(parts) - 1, -1, -1):
            sub = list(idx)
            sub[dim] = i - offsets[k] if k else i
            v = convert(parts[k](sub), parts[k].dtype, out_dtype)
            if val is None:
                val = v
                continue
            off = offsets[k + 1]
            if g > 1:
                cond = tirx.floordiv(i, tirx.const(g, dt(i))) < tirx.const(int(off.value) // g, dt(i))
            else:
                cond = i < off
            val = tirx.if_then_else(cond, v, val)
        return val
    return fn


def lower_layout(ctx: Ctx, node: Node, args: list, kw: dict) -> list[Lazy]:
    """The Lazy outputs of a layout node (a list: ``split`` has several)."""
    op = node.op
    out = node.types
    if op in ("alias", "clone", "contiguous", "detach", "lift_fresh_copy"):
        return [args[0]]
    if op in ("reshape", "view", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "unflatten"):
        return [reshape(ctx, args[0], tuple(out[0].shape))]
    if op in ("expand", "expand_as"):
        return [expand(ctx, args[0], tuple(out[0].shape))]
    if op == "permute":
        return [permute(ctx, args[0], args[1])]
    if op == "transpose":
        x = args[0]
        d0, d1 = _norm_dim(args[1], x.rank), _norm_dim(args[2], x.rank)
        p = list(range(x.rank))
        p[d0], p[d1] = p[d1], p[d0]
        return [permute(ctx, x, p)]
    if op == "t":
        return [permute(ctx, args[0], list(range(args[0].rank))[::-1])]
    if op == "slice":
        dim = kw.get("dim", args[1] if len(args) > 1 else 0)
        start = kw.get("start", args[2] if len(args) > 2 else None)
        step = kw.get("step", args[4] if len(args) > 4 else 1)
        return [slice_(ctx, args[0], dim, start, step or 1, tuple(out[0].shape))]
    if op == "select":
        return [select(ctx, args[0], args[1], args[2], tuple(out[0].shape))]
    if op == "cat":
        dim = kw.get("dim", args[1] if len(args) > 1 else 0)
        return [cat(ctx, list(args[0]), dim, tuple(out[0].shape), out[0].dtype)]
    if op in ("split", "split_with_sizes"):
        x = args[0]
        dim = _norm_dim(kw.get("dim", args[2] if len(args) > 2 else 0), x.rank)
        outs, start = [], 0
        for t in out:
            outs.append(slice_(ctx, x, dim, start, 1, tuple(t.shape)))
            size = t.shape[dim]
            if not isinstance(size, int):
                if len(out) > 1 and t is not out[-1]:
                    raise LoweringError("split with symbolic chunk sizes")
            else:
                start += size
        return outs
    raise LoweringError(f"no TVM lowering for layout op {op}")
