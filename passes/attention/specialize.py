"""Attention specialisation: every form of attention becomes one ``attention`` op.

Rules (data, below) match the two shapes attention takes in a captured
graph and return None when their guard declines:

- ``sdpa(q, k, v, mask, is_causal, scale) -> attention(q, k, v, ...)``
- ``matmul(softmax(scale * matmul(q, k^T) + mask), v) -> attention(q, k, v, ...)``,
  with bmm/matmul/mm/baddbmm (ALiBi), the scale on the scores or on q/k,
  additive, ``where`` and ``masked_fill`` masks, float32 softmax with casts.

Around the match, the pass proves what it can (``masks``,
``scores``, ``layout``): GQA repetition of K/V becomes
``groups`` (the repeat is never materialised), a mask proven causal or
windowed becomes ``causal``/``window``, ALiBi with key positions proven to be
``arange`` becomes ``slopes``; the rest of the mask (padding, anything not
proven) stays a bool or additive operand, which is always correct.

Matching runs on the input graph, building happens after, so a declined
match leaves the graph as it was. ``find_attention`` returns what matched
and what declined (and why), for tests and reports.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace, field
from typing import Optional

import sympy
import torch

from braze.ir import Graph, Node, Value, eliminate_dead
from braze.ir.builder import Builder
from braze.ir.graph import map_values
from braze.ir.types import Dim, dim_mul, dims_equal
from braze.passes.attention.layout import (Operand, as4d, build, mk, peel_scale, producer, reshape, shape_of,
                                           strip, un_repeat, un_repeat_indexed, untranspose)
from braze.passes.attention.masks import MaskAnalysis, Pred, atom, to_sympy
from braze.passes.attention.scores import Frame, ScoreAnalysis
from braze.passes.attention.alibi import alibi_slopes
from braze.passes.context import PassContext
from braze.passes.rules import Rule
from braze.passes.mask_algebra import classify
from braze.passes.normalize_views import normalize_views

log = logging.getLogger("braze.passes")


class Decline(Exception):
    """A guard said no; the message says why."""


@dataclass
class Plan:
    """One attention to build, in terms of the input graph's values."""

    q: Operand
    k: Operand
    v: Operand
    mask: Optional[Operand]
    slopes: Optional[Operand]
    attrs: dict
    out_type: object

    def describe(self) -> dict:
        d = dict(self.attrs)
        d["mask_shape"] = None if self.mask is None else [str(x) for x in shape_of(self.mask)]
        d["slopes"] = self.slopes is not None
        return d


@dataclass
class Event:
    node: str
    rule: str
    fired: bool
    detail: object


@dataclass
class Context:
    graph: Graph
    users: dict
    masks: MaskAnalysis
    scores: ScoreAnalysis
    events: list = field(default_factory=list)

    @staticmethod
    def of(graph: Graph) -> "Context":
        masks = MaskAnalysis(graph.constants)
        users = graph.users()
        for v in graph.outputs:  # NOTE: a graph output is a use the rewrite must keep
            users.setdefault(v.node, []).append(None)
        return Context(graph, users, masks, ScoreAnalysis(masks))


# --- the rules -------------------------------------------------------------

def sdpa_rule(n: Node, ctx: Context) -> Plan:
    """sdpa(q, k, v, mask, is_causal, scale, enable_gqa) -> attention(q, k, v, ...)"""
    q, k, v = n.args[:3]
    kw = n.kw
    if any(len(shape_of(x)) != 4 for x in (q, k, v)):
        raise Decline("sdpa operands are not 4-D")
    B, Hq, Sq, D = shape_of(q)
    scale = kw.get("scale")
    if scale is None:
        if not isinstance(D, int):
            raise Decline("head dim is symbolic: no default scale")
        scale = 1.0 / math.sqrt(D)
    hk = shape_of(k)[1]
    g0 = 1
    if not dims_equal(hk, Hq):
        if not (isinstance(hk, int) and isinstance(Hq, int) and Hq % hk == 0):
            raise Decline(f"{Hq} query heads are no multiple of {hk} K/V heads")
        g0 = Hq // hk
    k0, v0, g = _ungroup(k, v, ctx)
    q, cq = peel_scale(q, ctx.users, ctx.graph.constants)
    k0, ck = peel_scale(k0, ctx.users, ctx.graph.constants)
    frame = Frame(tuple(shape_of(n.out())), False)
    preds: list = []
    terms: list = []
    if kw.get("is_causal"):
        preds.append((atom({-1: 1, -2: -1}, 0, (Sq, shape_of(k)[2])), frame))  # j <= i
    m = kw.get("attn_mask")
    if m is not None:
        if m.type.dtype == torch.bool:
            preds.append((ctx.masks.pred(m), Frame(tuple(shape_of(m)), False)))
        else:
            s = ctx.scores.sum(m)
            if s is None or s.qk is not None:
                raise Decline("the float mask is not a mask")
            s = s.anchored(Frame(tuple(shape_of(m)), False))
            preds.extend(s.preds)
            terms.extend(s.terms)
    heads = (B, Hq)
    mask, slopes, attrs = decide_mask(preds, terms, heads, Sq, shape_of(k)[2], ctx)
    attrs.update(scale=float(scale) * cq * ck, groups=g0 * g)
    return Plan(q, k0, v0, mask, slopes, attrs, n.out().type)


def chain_rule(n: Node, ctx: Context) -> Plan:
    """matmul(softmax(scale * matmul(q, k^T) + mask), v) -> attention(q, k, v, ...)"""
    p, v3 = n.args[0], n.args[1]
    if not (isinstance(p, Value) and isinstance(v3, Value)) or len(shape_of(p)) != len(shape_of(v3)):
        raise Decline("not a batched matmul of two tensors")
    sm = _softmax_of(p, n, ctx)
    x, dim = sm.args[0], sm.args[1]
    rank = len(shape_of(x))
    if dim % rank != rank - 1:
        raise Decline(f"softmax over dim {dim}, not the key dim")
    s = ctx.scores.sum(x)
    if s is None or s.qk is None:
        raise Decline("the softmax input is not scale * q@k^T + mask")
    if s.alpha <= 0:
        raise Decline("non-positive scale")
    qk = s.qk
    a, bt = qk.a, qk.bt
    B, H = _heads(a)
    q4 = as4d(a, B, H)
    kt = untranspose(bt)
    if kt is None:
        raise Decline("the second matmul operand is not k^T (k is not transposed)")
    k4 = as4d(kt, B, H)
    v4 = as4d(v3, B, H)
    if q4 is None or k4 is None or v4 is None:
        raise Decline("q, k, v do not split into the same batch x heads")
    Sq, Sk = shape_of(q4)[2], shape_of(k4)[2]
    if not dims_equal(shape_of(v4)[2], Sk) or not dims_equal(shape_of(q4)[3], shape_of(k4)[3]):
        raise Decline("q@k^T and p@v disagree on the key length")
    if q4.type.dtype != k4.type.dtype or q4.type.dtype != v4.type.dtype:
        raise Decline("q, k, v have different dtypes")
    k0, v0, g = _ungroup(k4, v4, ctx)
    q4, cq = peel_scale(q4, ctx.users, ctx.graph.constants)
    k0, ck = peel_scale(k0, ctx.users, ctx.graph.constants)
    mask, slopes, attrs = decide_mask(list(s.preds), list(s.terms), (B, H), Sq, Sk, ctx)
    if s.tanh_scale is None:
        attrs.update(scale=float(s.alpha) * cq * ck, groups=g)
    else:   # alpha * tanh(t * q@k^T) = softcap * tanh(scale * q@k^T / softcap)
        attrs.update(scale=float(s.tanh_scale * s.alpha) * cq * ck, softcap=float(s.alpha), groups=g)
    return Plan(q4, k0, v0, mask, slopes, attrs, n.out().type)


RULES = [
    Rule.of("sdpa(q, k, v, mask, is_causal, scale) -> attention(q, k, v, ...)", "sdpa", sdpa_rule),
    Rule.of("matmul(softmax(scale*matmul(q, k^T) + mask), v) -> attention(q, k, v, ...)",
            {"bmm", "matmul", "mm"}, chain_rule),
]


# --- helpers of the rules ----------------------------------------------------

def _softmax_of(p: Value, root: Node, ctx: Context) -> Node:
    """The ``_softmax`` node under the views and casts of ``p``, each used once."""
    x: Operand = p
    while True:
        node = x.node
        src = node.args[0] if node.args else None
        view = isinstance(src, Value) and (
            (node.op == "reshape" and len(shape_of(src)) >= 2
             and all(dims_equal(a, b) for a, b in zip(shape_of(src)[-2:], shape_of(x)[-2:])))
            or (node.op == "_to_copy" and src.type.dtype.is_floating_point and x.type.dtype.is_floating_point)
            or strip(x) is not x)
        if node.op != "_softmax" and not view:
            raise Decline(f"the first matmul operand is {node.op}, not a softmax")
        if node is not root and len(ctx.users.get(node, ())) != 1:
            raise Decline(f"{node.name or node.op} has other users (attention probabilities are used elsewhere)")
        if node.op == "_softmax":
            return node
        x = strip(x) if strip(x) is not x else src


def _heads(a: Operand) -> tuple[Dim, Dim]:
    """(B, H) of the scores from q's layout."""
    sh = shape_of(a)
    if len(sh) == 4:
        return sh[0], sh[1]
    if len(sh) == 2:
        return 1, 1
    op, args, _ = producer(strip(a))
    if op == "reshape":
        inner = strip(args[0])
        ish = shape_of(inner)
        if len(ish) == 4 and dims_equal(dim_mul(ish[0], ish[1]), sh[0]) and all(
                dims_equal(x, y) for x, y in zip(ish[2:], sh[1:])):
            return ish[0], ish[1]
    return 1, sh[0]


def _ungroup(k: Operand, v: Operand, ctx: Context) -> tuple[Operand, Operand, int]:
    """Undo the GQA repetition of K and V when both repeat by the same factor."""
    def one(x):
        x0, g = un_repeat(x)
        if g == 1:
            x0, g = un_repeat_indexed(x, ctx.graph.constants)
        return x0, g

    k0, gk = one(k)
    v0, gv = one(v)
    if gk == gv and gk > 1:
        return k0, v0, gk
    return strip(k), strip(v), 1


def _canonical(x: Operand, frame: Frame, heads) -> Operand:
    """A term of ``frame`` as an operand broadcastable to ``[B, H, Sq, Sk]``."""
    B, H = heads
    xs = shape_of(x)
    if frame.merged:
        if len(xs) == 3 and xs[0] != 1:
            if not dims_equal(xs[0], dim_mul(B, H)):
                raise Decline("a mask term does not split into batch x heads")
            op, args, _ = producer(x)
            if op == "repeat" and len(args[1]) == 3 and dims_equal(args[1][0], B) and list(args[1][1:]) == [1, 1] \
                    and dims_equal(shape_of(args[0])[0], H):
                return reshape(args[0], (1, H) + tuple(xs[1:]))
            return reshape(x, (B, H) + tuple(xs[1:]))
        return x
    lead = tuple(frame.shape[:-2])
    if len(lead) > 2:
        raise Decline(f"a mask lives in a frame of rank {len(frame.shape)}")
    for d, full in zip(lead[::-1], (H, B)):
        if d != 1 and not dims_equal(d, full):
            raise Decline("a mask does not broadcast as [B, H, Sq, Sk]")
    return x


def decide_mask(preds, terms, heads, Sq: Dim, Sk: Dim, ctx: Context):
    """(mask, slopes, attrs) from the predicates and additive terms of the scores."""
    for p, _ in preds:
        if p.false:
            raise Decline("the mask hides every key")
    attrs = _structure([p for p, _ in preds], Sq, Sk)
    collapsed = set()
    if attrs is None:  # some atom is no causal/window rule: keep those predicates as tensors
        collapsed = {i for i, (p, _) in enumerate(preds) if not _representable(p, Sq, Sk)}
        attrs = _structure([p for i, (p, _) in enumerate(preds) if i not in collapsed], Sq, Sk)
        if attrs is None:
            collapsed = {i for i, (p, _) in enumerate(preds) if p.atoms}
            attrs = _structure([], Sq, Sk)
    bools: list[Operand] = []
    for i, (p, frame) in enumerate(preds):
        if i in collapsed:
            if p.source is None:
                raise Decline("a mask predicate has no tensor to keep")
            bools.append(_canonical(p.source, frame, heads))
        else:
            bools.extend(_canonical(t, frame, heads) for t in p.terms)
    slopes = None
    adds: list[Operand] = []
    for t in terms:
        x = _canonical(t.value, t.frame, heads)
        if slopes is None:
            slopes = alibi_slopes(t, heads, ctx)
            if slopes is not None:
                continue
        adds.append(x if t.coef == 1.0 else mk("mul", x, t.coef, overload="Tensor"))
    mask, kind = None, "none"
    bmask = None
    for x in dict.fromkeys(bools):
        bmask = x if bmask is None else mk("bitwise_and", bmask, x, overload="Tensor")
    if adds:
        amask = adds[0]
        for x in adds[1:]:
            amask = mk("add", amask, x, overload="Tensor")
        if bmask is not None:
            amask = mk("where", bmask, amask, float("-inf"), overload="ScalarOther")
        mask, kind = amask, "additive"
    elif bmask is not None:
        mask, kind = bmask, "bool"
    if mask is not None and len(shape_of(mask)) > 4:
        raise Decline("the mask has more than 4 dims")
    attrs["mask_kind"] = kind
    return mask, slopes, attrs


def _classify(atom_, Sq, Sk):
    """("causal", offset) | ("window", bound) | None for an atom over (i, j)."""
    c = dict(atom_.coeffs)
    if c == {-1: 1, -2: -1}:
        return "causal", -atom_.const      # j <= i + offset
    if c == {-1: -1, -2: 1}:
        return "window", -atom_.const      # i - j <= bound
    return None


def _representable(p: Pred, Sq, Sk) -> bool:
    return all(_classify(a, Sq, Sk) is not None for a in p.atoms)


def _structure(preds, Sq: Dim, Sk: Dim) -> Optional[dict]:
    """causal/window attributes for the atoms of ``preds``, or None."""
    offs, bounds = [], []
    for p in preds:
        for a in p.atoms:
            kind = _classify(a, Sq, Sk)
            if kind is None:
                return None
            (offs if kind[0] == "causal" else bounds).append(sympy.expand(kind[1]))
    attrs = {"causal": "none", "window": None}
    delta = sympy.expand(to_sympy(Sk) - to_sympy(Sq))
    align = 0
    if offs:
        o = _least(offs)
        if o is None:
            return None
        if o == 0:
            attrs["causal"] = "top_left"
        elif sympy.simplify(o - delta) == 0:
            attrs["causal"], align = "bottom_right", delta
        else:
            return None
    if bounds:
        u = _least(bounds)
        if u is None:
            return None
        w = sympy.simplify(u + align + 1)
        if not (w.is_Integer and int(w) >= 1):
            return None
        attrs["window"] = int(w)
    return attrs


def _least(xs):
    best = xs[0]
    for x in xs[1:]:
        d = sympy.simplify(x - best)
        if d.is_negative:
            best = x
        elif not (d.is_nonnegative or d == 0):
            return None
    return best


# --- the pass ---------------------------------------------------------------

def find_attention(graph: Graph, strict: bool = False) -> tuple[dict, list]:
    """Plans for every attention the rules prove, and the events (fired or declined, why).

    An unexpected error while matching declines that one match (logged as a
    warning) so the rest of the graph still compiles; ``strict`` re-raises it.
    """
    ctx = Context.of(graph)
    by_op: dict = {}
    for r in RULES:
        for op in r.ops:
            by_op.setdefault(op, []).append(r)
    plans: dict[Node, tuple[str, Plan]] = {}
    for n in graph.nodes:
        for r in by_op.get(n.op, ()):
            try:
                plan = r.fn(n, ctx)
            except Decline as e:
                ctx.events.append(Event(n.name or n.op, r.name, False, str(e)))
                continue
            except Exception as e:  # noqa: BLE001 - a bug in a guard must not cost the whole graph
                if strict:
                    raise
                log.warning("attention rule %r failed at %s: %s: %s", r.name, n.name or n.op, type(e).__name__, e)
                ctx.events.append(Event(n.name or n.op, r.name, False, f"internal error: {type(e).__name__}: {e}"))
                continue
            plans[n] = (r.name, plan)
            ctx.events.append(Event(n.name or n.op, r.name, True, plan.describe()))
            break
    return plans, ctx.events


def specialize_attention(graph: Graph, ctx=None) -> Graph:
    """Rewrite every attention braze can prove into one ``attention`` op."""
    ctx = PassContext.of(ctx)
    plans, events = find_attention(graph, strict=bool(ctx.option("strict", False)))
    for e in events:
        if e.fired:
            log.debug("attention at %s: %s", e.node, e.detail)
        elif e.rule.startswith("matmul(softmax") and "not a softmax" in str(e.detail):
            continue  # every other matmul of the model
        else:
            log.info("attention at %s not specialised: %s", e.node, e.detail)
            ctx.decline("specialize_attention", f"{e.rule} at {e.node}", str(e.detail), graph)
    if not plans:
        return graph
    for _, plan in plans.values():
        _positional_mask(plan, graph)
    env: dict[Value, Value] = {}
    memo: dict = {}
    b = Builder(graph.constants)
    for n in graph.nodes:
        if n.op == "input":
            b.inputs.append(n)
            b.append(n)
            continue
        n2 = n.with_args(map_values(n.args, lambda v: env.get(v, v)), map_values(n.kwargs, lambda v: env.get(v, v)))
        if n in plans:
            env[n.out()] = _build(plans[n][1], b, env, memo, n.name)
            continue
        b.append(n2)
        if n2 is not n:
            for i in range(len(n.types)):
                env[Value(n, i)] = Value(n2, i)
    out = replace(graph, nodes=tuple(b.nodes), inputs=tuple(b.inputs),
                  outputs=tuple(env.get(v, v) for v in graph.outputs), constants=b.constants)
    return normalize_views(eliminate_dead(out))


def _positional_mask(plan: Plan, graph: Graph) -> None:
    """A kept mask tensor that the mask algebra proves to be only a causal or
    windowed pattern (``passes/mask_algebra.py``: symbolic evaluation, decided
    over the whole index space) becomes those attributes, without the tensor."""
    a = plan.attrs
    if not isinstance(plan.mask, Value) or plan.slopes is not None or a["causal"] != "none" or a["window"]:
        return
    sq, sk = shape_of(plan.q)[-2], shape_of(plan.k)[-2]
    cls = classify(plan.mask, a["mask_kind"], graph, set(), (sq, sk))
    if cls is None or cls.padding is not None or cls.causal == "none" and cls.window is None:
        return
    plan.mask = None
    a.update(causal=cls.causal, window=cls.window, mask_kind="none")


def _build(plan: Plan, b: Builder, env, memo, name: str) -> Value:
    q, k, v, mask, slopes = (build(x, b, env, memo) for x in (plan.q, plan.k, plan.v, plan.mask, plan.slopes))
    a = plan.attrs
    extra = {"softcap": a["softcap"]} if a.get("softcap") else {}
    out = b.call("attention", q, k, v, mask, slopes, scale=a["scale"], causal=a["causal"], window=a["window"],
                 groups=a["groups"], mask_kind=a["mask_kind"], name=f"attention_{name}" if name else "attention",
                 **extra)
    want = plan.out_type
    if out.type.dtype != want.dtype:
        out = b.call("_to_copy", out, dtype=want.dtype)
    if len(out.type.shape) != len(want.shape) or not all(dims_equal(x, y) for x, y in zip(out.type.shape, want.shape)):
        out = b.call("reshape", out, tuple(want.shape))
    return out


__all__ = ["specialize_attention", "find_attention", "RULES", "Plan", "Decline"]
