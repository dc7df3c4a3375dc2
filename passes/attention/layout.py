"""Layout algebra for the attention pass: lazy expressions and the view
reasoning that recovers ``[B, H, S, D]`` operands from what models feed
their matmuls.

An :class:`Expr` is a node the pass *may* build (a reshape of K back to 4-D,
a permute that cancels a transpose ...). Matching only creates Exprs; they
become graph nodes once a rule has fired, so a declined match leaves no
trace. Exprs are frozen and hashable, so identical ones (the padding mask
every layer shares) are built once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import torch

from braze.ir import Node, TensorType, Value, infer_types
from braze.ir.builder import Builder
from braze.ir.types import Dim, dim_mul, dims_equal

INT_MAX = 2 ** 63 - 1


@dataclass(frozen=True)
class Expr:
    """``op(*args, **kwargs)`` to be built; args hold Values, Exprs or literals."""

    op: str
    args: tuple
    kwargs: tuple = ()
    overload: str = "default"
    type: TensorType = field(default=None, compare=False, hash=False)


Operand = Union[Value, Expr]


def type_of(x: Operand) -> TensorType:
    return x.type


def shape_of(x: Operand) -> tuple[Dim, ...]:
    return x.type.shape


def mk(op: str, *args: Any, overload: str = "default", **kwargs: Any) -> Expr:
    """An Expr typed by the op's type rule (Exprs among args stand for their types)."""
    t = infer_types(op, _fake_args(tuple(args)), _fake_args(tuple(kwargs.items())), overload)
    return Expr(op, tuple(args), tuple(kwargs.items()), overload, t[0])


def _fake_args(obj):
    if isinstance(obj, Expr):
        return Node("input", ("expr",), types=(obj.type,)).out()
    if isinstance(obj, tuple):
        return tuple(_fake_args(o) for o in obj)
    return obj


def build(x: Any, b: Builder, env: dict, memo: dict) -> Any:
    """Append the nodes of ``x`` (Values are remapped through ``env``)."""
    if isinstance(x, Value):
        return env.get(x, x)
    if isinstance(x, tuple):
        return tuple(build(o, b, env, memo) for o in x)
    if not isinstance(x, Expr):
        return x
    out = memo.get(x)
    if out is None:
        args = build(x.args, b, env, memo)
        kwargs = {k: build(v, b, env, memo) for k, v in x.kwargs}
        out = b.call(x.op, *args, overload=x.overload, name=f"attn_{x.op}", **kwargs)
        memo[x] = out
    return out


# --- producers -----------------------------------------------------------

def producer(x: Operand) -> tuple[str, tuple, dict]:
    """(op, args, kwargs) of whatever produces ``x``."""
    if isinstance(x, Expr):
        return x.op, x.args, dict(x.kwargs)
    return x.node.op, x.node.args, x.node.kw


def is_noop_slice(op: str, args: tuple, x: Operand) -> bool:
    if op != "slice":
        return False
    src = args[0]
    rank = len(shape_of(src))
    dim = (args[1] if len(args) > 1 else 0) % rank
    start = args[2] if len(args) > 2 else 0
    end = args[3] if len(args) > 3 else None
    step = args[4] if len(args) > 4 else 1
    if step != 1 or start not in (0, None):
        return False
    size = shape_of(src)[dim]
    return end is None or (isinstance(end, int) and end >= INT_MAX // 2) or dims_equal(end, size) or (
        isinstance(end, int) and isinstance(size, int) and end >= size)


def strip(x: Operand) -> Operand:
    """Look through no-op slices and expands to the same shape."""
    while True:
        op, args, _ = producer(x)
        if is_noop_slice(op, args, x) or (op == "expand" and shape_of(args[0]) == shape_of(x)):
            x = args[0]
            continue
        return x


def reshape(x: Operand, shape) -> Operand:
    """``reshape(x, shape)``, composed with a reshape that produces ``x``."""
    shape = tuple(shape)
    x = strip(x)
    op, args, _ = producer(x)
    if op == "reshape":
        x = strip(args[0])
    if len(shape_of(x)) == len(shape) and all(dims_equal(a, b) for a, b in zip(shape_of(x), shape)):
        return x
    return mk("reshape", x, shape)


def permute(x: Operand, perm) -> Operand:
    """``permute(x, perm)``, composed with a permute that produces ``x``."""
    perm = list(perm)
    x = strip(x)
    op, args, _ = producer(x)
    if op == "permute":
        inner = list(args[1])
        perm = [inner[p] for p in perm]
        x = args[0]
    if perm == list(range(len(perm))):
        return x
    return mk("permute", x, tuple(perm))


def same_dims(a, b) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b))


def prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def as4d(x: Operand, B: Dim, H: Dim) -> Optional[Operand]:
    """``x`` of shape ``[*L, S, D]`` with ``prod(L) == B*H`` as a ``[B, H, S, D]`` operand.

    Looks through a reshape that merged the leading dims, so the 4-D tensor
    the model had (or the 5-D repeat_kv expand) is reused, not re-viewed.
    """
    x = strip(x)
    shape = shape_of(x)
    if len(shape) < 2 or not dims_equal(prod(shape[:-2]), dim_mul(B, H)):
        return None
    target = (B, H) + tuple(shape[-2:])
    if same_dims(shape, target):
        return x
    op, args, _ = producer(x)
    if op == "reshape":
        inner = strip(args[0])
        ishape = shape_of(inner)
        if len(ishape) >= 2 and same_dims(ishape[-2:], shape[-2:]):
            return reshape(inner, target)
    return reshape(x, target)


def untranspose(bt: Operand) -> Optional[Operand]:
    """K from the ``k^T`` operand of ``q @ k^T``: ``[*L, D, Sk] -> [*L, Sk, D]``.

    Only a transpose the model made is undone (``bt`` is a permute, maybe
    under a reshape that keeps the last two dims, whose composition with the
    swap leaves D innermost in the permuted tensor): a K that is not
    transposed is no q@k^T, and the pass does not materialise one.
    """
    bt = strip(bt)
    op, args, _ = producer(bt)
    if op == "reshape":
        inner = strip(args[0])
        ishape, shape = shape_of(inner), shape_of(bt)
        if len(ishape) >= 2 and same_dims(ishape[-2:], shape[-2:]):
            k = untranspose(inner)
            return None if k is None else reshape(k, tuple(shape[:-2]) + (shape[-1], shape[-2]))
        return None
    if op == "expand":  # a broadcasting matmul (MQA) expands k^T over the heads
        k = untranspose(args[0])
        shape = shape_of(bt)
        return None if k is None else mk("expand", k, tuple(shape[:-2]) + (shape[-1], shape[-2]))
    if op != "permute":
        return None
    base, perm = args[0], list(args[1])
    r = len(perm)
    swapped = perm[:-2] + [perm[-1], perm[-2]]
    if swapped[-1] != r - 1:
        return None  # D would not be innermost: this permute is not k^T
    return permute(base, swapped)


def un_repeat(x: Operand, axis: int = 1) -> tuple[Operand, int]:
    """``(x0, g)`` with ``x[:, h] == x0[:, h // g]`` (GQA/MQA K/V repetition), else ``(x, 1)``.

    Recognised: repeat_kv / repeat_interleave (reshape of an expand of a
    ``[B, Hkv, 1, S, D]`` view), an expand of a single head, and explicit head
    indexing with the constant ``arange(Hq) // g`` (index_select, index).
    """
    x = strip(x)
    shape = shape_of(x)
    if len(shape) != 4 or axis != 1:
        return x, 1
    B, Hq, S, D = shape
    op, args, _ = producer(x)
    if op == "reshape":
        e = strip(args[0])
        eop, eargs, _ = producer(e)
        es = shape_of(e)
        if eop == "expand" and len(es) == 5 and same_dims((es[0],) + tuple(es[3:]), (B, S, D)) \
                and dims_equal(dim_mul(es[1], es[2]), Hq) and isinstance(es[2], int):
            r = strip(eargs[0])
            rs = shape_of(r)
            if len(rs) == 5 and rs[2] == 1 and same_dims(rs[:2], es[:2]) and same_dims(rs[3:], es[3:]):
                return reshape(r, (B, es[1], S, D)), es[2]
    if op == "expand":
        src = strip(args[0])
        ss = shape_of(src)
        if len(ss) == 4 and ss[1] == 1 and isinstance(Hq, int) and same_dims((ss[0],) + tuple(ss[2:]), (B, S, D)):
            return src, Hq
    return x, 1


def un_repeat_indexed(x: Operand, constants) -> tuple[Operand, int]:
    """Explicit head indexing ``x0[:, arange(Hq) // g]`` (index_select / index)."""
    x = strip(x)
    op, args, _ = producer(x)
    idx = None
    if op == "index_select" and len(args) >= 3 and args[1] in (1, -3) and isinstance(args[2], Value):
        src, idx = args[0], args[2]
    elif op == "index" and isinstance(args[1], tuple) and len(args[1]) == 2 and args[1][0] is None \
            and isinstance(args[1][1], Value):
        src, idx = args[0], args[1][1]
    if idx is None or idx.node.op != "constant" or len(shape_of(src)) != 4:
        return x, 1
    t = constants[idx.node.args[0]]
    hkv, hq = shape_of(src)[1], shape_of(x)[1]
    if not (isinstance(hkv, int) and isinstance(hq, int)) or hq % hkv or t.dim() != 1 or t.numel() != hq:
        return x, 1
    g = hq // hkv
    if not torch.equal(t.to("cpu", torch.int64), torch.arange(hq) // g):
        return x, 1
    return src, g


def scalar_value(x, constants: Mapping[str, torch.Tensor]) -> Optional[float]:
    """A Python number, or the value of a one-element float constant."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, Value) and x.node.op == "constant":
        t = constants[x.node.args[0]]
        if t.numel() == 1:
            return float(t.reshape(()).item())
    return None


def peel_scale(x: Operand, users: dict, constants) -> tuple[Operand, float]:
    """``(x', c)`` with ``x == c * x'`` when ``x`` is views of ``mul(y, c)`` / ``div(y, c)``
    with a scalar ``c``, each used once; the views are rebuilt on ``y``."""
    views = []
    cur = x
    while True:
        cur = strip(cur)
        if not isinstance(cur, Value) or len(users.get(cur.node, ())) != 1:
            return x, 1.0
        op, args, _ = producer(cur)
        if op in ("reshape", "permute"):
            views.append((op, args[1]))
            cur = args[0]
            continue
        if op in ("mul", "div") and len(args) == 2:
            c = scalar_value(args[1], constants)
            base = args[0]
            if c is None and op == "mul":
                c, base = scalar_value(args[0], constants), args[1]
            if c is None or c == 0 or not isinstance(base, Value) or base.type.dtype != cur.type.dtype \
                    or base.type.shape != cur.type.shape:
                return x, 1.0
            c = c if op == "mul" else 1.0 / c
            out: Operand = base
            for vop, varg in reversed(views):
                out = reshape(out, varg) if vop == "reshape" else permute(out, varg)
            return out, float(c)
        return x, 1.0
