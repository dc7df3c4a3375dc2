"""View and layout normalisation.

After this pass the graph spells layout in few ops: ``reshape`` (for view,
_unsafe_view, unsqueeze, squeeze, flatten, unflatten), ``permute`` (for t,
transpose, movedim), ``expand``, ``slice``, ``select``, ``cat``; copies
without effect on values (alias, clone, contiguous, detach, a cast to the
same dtype) are gone, ``prims::convert_element_type`` is ``_to_copy``, a
functional ``copy(dst, src)`` is ``src`` cast and expanded to ``dst``'s type,
and chains of reshapes and of permutes are composed.

NOTE: ``reshape`` means "the same elements in row-major order" whatever the
producer's strides, so later passes may change a producer's memory layout
without breaking its views.
"""
from __future__ import annotations

from typing import Optional

from braze.ir import Graph, Node, Value
from braze.ir.builder import Builder
from braze.passes.context import PassContext
from braze.passes.rules import Rule, apply_rules


def _x(n: Node) -> Value:
    return n.args[0]


def _same_type(a: Value, n: Node) -> bool:
    return a.type == n.type


def identity(n: Node, b: Builder):
    x = _x(n)
    return (x,) if isinstance(x, Value) and _same_type(x, n) else None


def cast_canonical(n: Node, b: Builder):
    """_to_copy(x, dtype=d, layout, device, pin_memory...) -> _to_copy(x, dtype=d)"""
    x = _x(n)
    if _same_type(x, n):
        return (x,)
    if x.type.device != n.type.device:
        return None
    canon = (("dtype", n.type.dtype),)
    if n.op == "_to_copy" and n.kwargs == canon:
        return None
    return b.append(Node("_to_copy", (x,), canon, n.types, "default", n.name)).outputs


def to_reshape(n: Node, b: Builder):
    x = _x(n)
    if _same_type(x, n):
        return (x,)
    if x.type.dtype != n.type.dtype:
        return None  # view(dtype): a bitcast, not a reshape
    inner = x.node
    if inner.op == "reshape":  # reshape(reshape(y)) -> reshape(y)
        x = inner.args[0]
        if _same_type(x, n):
            return (x,)
    return b.append(Node("reshape", (x, tuple(n.type.shape)), (), n.types, "default", n.name)).outputs


def _perm_of(n: Node) -> Optional[list[int]]:
    rank = n.args[0].type.rank
    if n.op == "t":
        return list(range(rank))[::-1]
    if n.op == "transpose":
        d0, d1 = (d % rank if rank else 0 for d in n.args[1:3])
        p = list(range(rank))
        p[d0], p[d1] = p[d1], p[d0]
        return p
    if n.op == "permute":
        return [d % rank for d in n.args[1]]
    if n.op == "movedim":
        src, dst = n.args[1], n.args[2]
        src = [s % rank for s in (src if isinstance(src, tuple) else (src,))]
        dst = [d % rank for d in (dst if isinstance(dst, tuple) else (dst,))]
        rest = [d for d in range(rank) if d not in src]
        p = [-1] * rank
        for s, d in zip(src, dst):
            p[d] = s
        it = iter(rest)
        return [v if v >= 0 else next(it) for v in p]
    return None


def to_permute(n: Node, b: Builder):
    perm = _perm_of(n)
    if perm is None:
        return None
    x = _x(n)
    inner = x.node
    if inner.op == "permute":  # permute(permute(y, p), q) -> permute(y, p[q])
        p = list(inner.args[1])
        perm = [p[q] for q in perm]
        x = inner.args[0]
    if perm == list(range(len(perm))):
        return (x,)
    if n.op == "permute" and x is n.args[0] and list(n.args[1]) == perm:
        return None
    return b.append(Node("permute", (x, tuple(perm)), (), n.types, "default", n.name)).outputs


def full_slice(n: Node, b: Builder):
    step = n.args[4] if len(n.args) > 4 else 1
    start = n.args[2] if len(n.args) > 2 else 0
    return (n.args[0],) if step == 1 and start in (0, None) and _same_type(n.args[0], n) else None


def expand_noop(n: Node, b: Builder):
    x = _x(n)
    return (x,) if _same_type(x, n) else None


def cat_drop_empty(n: Node, b: Builder):
    """cat([empty, x, ...], d) -> cat([x, ...], d); cat([x], d) -> x"""
    xs = n.args[0]
    keep = tuple(x for x in xs if not (x.type.is_static and 0 in x.type.shape))
    if len(keep) == len(xs):
        return None
    if len(keep) == 1 and _same_type(keep[0], n):
        return (keep[0],)
    if not keep:
        return None
    return b.append(Node("cat", (keep,) + n.args[1:], n.kwargs, n.types, n.overload, n.name)).outputs


def copy_to_source(n: Node, b: Builder):
    """Functional copy(dst, src) (what functionalisation makes of ``dst.copy_(src)``) has dst's
    type and src's values: it reads no value of dst, so a later in-place write of dst's base is
    not held back by it."""
    dst, src = n.args[0], n.args[1]
    if not isinstance(src, Value) or src.type.device != n.type.device:
        return None
    x = src
    if x.type.dtype != n.type.dtype:
        x = b.append(Node("_to_copy", (x,), (("dtype", n.type.dtype),),
                          (x.type.with_dtype(n.type.dtype),), "default", n.name)).out()
    if tuple(x.type.shape) != tuple(n.type.shape):
        x = b.append(Node("expand", (x, tuple(n.type.shape)), (), n.types, "default", n.name)).out()
    return (x,)


RULES = [
    Rule.of("cat([empty, x], d) -> x", "cat", cat_drop_empty),
    Rule.of("alias(x) -> x; clone(x) -> x; contiguous(x) -> x; detach(x) -> x",
            {"alias", "clone", "contiguous", "detach", "lift_fresh_copy"}, identity),
    Rule.of("cast(x, dtype(x)) -> x; cast(x, d, ...) -> _to_copy(x, dtype=d)",
            {"_to_copy", "prims::convert_element_type"}, cast_canonical),
    Rule.of("view|unsqueeze|squeeze|flatten|unflatten(x) -> reshape(x, shape); reshape(reshape(x)) -> reshape(x)",
            {"view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten", "_reshape_alias"},
            to_reshape),
    Rule.of("t|transpose|movedim(x) -> permute(x, p); permute(permute(x, p), q) -> permute(x, p[q])",
            {"t", "transpose", "movedim", "permute"}, to_permute),
    Rule.of("expand(x, shape(x)) -> x", {"expand", "expand_as"}, expand_noop),
    Rule.of("slice(x, d, 0, >= size(x, d)) -> x", "slice", full_slice),
    Rule.of("copy(dst, src) -> expand(cast(src, dtype(dst)), shape(dst))", "copy", copy_to_source),
]


def normalize_views(graph: Graph, ctx=None) -> Graph:
    return apply_rules(graph, RULES, ctx=PassContext.of(ctx) if ctx is not None else None, pass_name="normalize_views")
