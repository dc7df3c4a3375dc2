"""What an attention mask is, proven from the ops that build it.

Hugging Face builds masks in many ways (``arange`` comparisons, indexing
into ``attention_mask``, ``&``/``|``, ``where(mask, 0, -inf)``, ...). This
module evaluates the subgraph that produces a mask *symbolically*: every
value becomes a sympy expression in the index variables of its own
dimensions, with the padding input as an uninterpreted function
``Pad(b, s)`` (nonzero = valid token). The attention mask then is a formula
F(b, h, i, j) (for an additive mask: the condition under which it adds 0,
the other branch adding -inf or a very negative number).

:func:`classify` decides whether F equals ``Pad(b, j) & C(i, j)`` with C a
causal or sliding-window rule, or ``C(i, j)`` alone, by evaluating F on the
whole index space when the sizes are static (exhaustive, so a proof), and
on grids larger than every constant in F when they are symbolic (F's atoms
are checked to be comparisons of i - j, i, j with constants, whose truth
stops changing beyond the largest constant). Anything else is declined.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import numpy as np
import sympy
import torch

from braze.ir import Graph, Node, Value
from braze.ir.types import Sym

Pad = sympy.Function("Pad")
NEG = -1e4  # an additive mask value at or below this hides the key


@dataclass(frozen=True)
class MaskClass:
    padding: Optional[Value]   # the [B, S] input whose nonzero entries are the valid keys, if any
    causal: str                # "none" | "top_left" (j <= i)
    window: Optional[int]      # keys with i - j < window only


class _Unsupported(Exception):
    pass


def _vars(rank: int):
    return [sympy.Symbol(f"x{k}", integer=True, nonnegative=True) for k in range(rank)]


class _Eval:
    """Symbolic values: (expr over x0..x{r-1}, shape)."""

    def __init__(self, graph: Graph, padding_inputs: set):
        self.g = graph
        self.pads = padding_inputs
        self.memo: dict[Value, tuple] = {}
        self.pad_source: Optional[Value] = None

    def value(self, v: Value):
        if v not in self.memo:
            self.memo[v] = self._eval(v)
        return self.memo[v]

    def _eval(self, v: Value):
        n = v.node
        shape = v.type.shape
        xs = _vars(len(shape))
        if n.op == "input":
            if v not in self.pads or len(shape) != 2:
                raise _Unsupported(f"input {n.args[0]}")
            if self.pad_source is not None and self.pad_source != v:
                raise _Unsupported("two padding inputs")
            self.pad_source = v
            # NOTE: Pad is integer valued, 1 for a valid token and 0 for padding.
            return Pad(xs[0], xs[1]), shape
        if n.op == "constant":
            return self._constant(self.g.constants.get(n.args[0]), shape)
        fn = getattr(self, "op_" + n.op.replace("::", "_"), None)
        if fn is None:
            raise _Unsupported(n.op)
        return fn(n, shape, xs)

    def _constant(self, t, shape):
        if t is None:
            raise _Unsupported("constant without its tensor")
        if t.numel() == 1:
            return sympy.sympify(t.reshape(()).item()), shape
        if t.dim() == 1 and not t.dtype.is_floating_point and t.numel() > 1:
            start, step = int(t[0]), int(t[1] - t[0])
            if torch.equal(t, torch.arange(t.numel(), dtype=t.dtype, device=t.device) * step + start):
                return _vars(1)[0] * step + start, shape
        raise _Unsupported("constant tensor")

    # --- operand alignment -----------------------------------------------------
    def aligned(self, a, out_shape):
        """Operand ``a`` (Value or scalar) as an expression over the output's vars."""
        if not isinstance(a, Value):
            if isinstance(a, (bool, int, float)):
                return sympy.sympify(a)
            raise _Unsupported(f"operand {a!r}")
        e, shape = self.value(a)
        ys = _vars(len(out_shape))
        off = len(out_shape) - len(shape)
        subs = {}
        for k, d in enumerate(shape):
            subs[_vars(len(shape))[k]] = 0 if (d == 1 and out_shape[k + off] != 1) else ys[k + off]
        return e.xreplace(subs) if subs else e

    # --- ops ---------------------------------------------------------------------
    def _pointwise(self, n, shape, f):
        args = [self.aligned(a, shape) for a in n.args if isinstance(a, (Value, bool, int, float))]
        return f(*args), shape

    def op__to_copy(self, n, shape, xs):
        e = self.aligned(n.args[0], shape)
        dt = n.type.dtype
        if dt == torch.bool:
            return (e if isinstance(e, sympy.logic.boolalg.Boolean) else sympy.Ne(e, 0)), shape
        if isinstance(e, sympy.logic.boolalg.Boolean):
            return sympy.Piecewise((1, e), (0, True)), shape
        if e.free_symbols and dt in (torch.float16, torch.bfloat16):
            # NOTE: positions cast to a half type round above 2048 / 256: not exact.
            raise _Unsupported("index values cast to a half type")
        return e, shape

    op_prims_convert_element_type = op__to_copy

    def _rel(self, n, shape, rel):
        a, b = (self.aligned(x, shape) for x in n.args[:2])
        return rel(a, b), shape

    def op_eq(self, n, s, xs): return self._rel(n, s, sympy.Eq)
    def op_ne(self, n, s, xs): return self._rel(n, s, sympy.Ne)
    def op_lt(self, n, s, xs): return self._rel(n, s, sympy.Lt)
    def op_le(self, n, s, xs): return self._rel(n, s, sympy.Le)
    def op_gt(self, n, s, xs): return self._rel(n, s, sympy.Gt)
    def op_ge(self, n, s, xs): return self._rel(n, s, sympy.Ge)

    def _bool(self, e):
        return e if isinstance(e, sympy.logic.boolalg.Boolean) else sympy.Ne(e, 0)

    def op_bitwise_and(self, n, s, xs): return self._pointwise(n, s, lambda a, b: sympy.And(self._bool(a), self._bool(b)))
    op_logical_and = op_bitwise_and
    def op_bitwise_or(self, n, s, xs): return self._pointwise(n, s, lambda a, b: sympy.Or(self._bool(a), self._bool(b)))
    op_logical_or = op_bitwise_or
    def op_bitwise_not(self, n, s, xs): return self._pointwise(n, s, lambda a: sympy.Not(self._bool(a)))
    op_logical_not = op_bitwise_not

    def op_add(self, n, s, xs):
        alpha = n.attr("alpha", 1)
        return self._pointwise(n, s, lambda a, b: a + alpha * b)

    def op_sub(self, n, s, xs):
        alpha = n.attr("alpha", 1)
        return self._pointwise(n, s, lambda a, b: a - alpha * b)

    def op_mul(self, n, s, xs):
        def f(a, b):
            if isinstance(a, sympy.logic.boolalg.Boolean) and isinstance(b, sympy.logic.boolalg.Boolean):
                return sympy.And(a, b)
            a = sympy.Piecewise((1, a), (0, True)) if isinstance(a, sympy.logic.boolalg.Boolean) else a
            b = sympy.Piecewise((1, b), (0, True)) if isinstance(b, sympy.logic.boolalg.Boolean) else b
            return a * b
        return self._pointwise(n, s, f)

    def op_neg(self, n, s, xs): return self._pointwise(n, s, lambda a: -a)

    def op_where(self, n, s, xs):
        c, a, b = (self.aligned(x, s) for x in n.args[:3])
        return sympy.Piecewise((a, self._bool(c)), (b, True)), s

    def op_masked_fill(self, n, s, xs):
        x, m, val = (self.aligned(a, s) for a in n.args[:3])
        return sympy.Piecewise((val, self._bool(m)), (x, True)), s

    def op_arange(self, n, s, xs):
        a = [x for x in n.args if isinstance(x, (int, Sym))]
        if len(a) == 1:
            return xs[0], s
        if len(a) >= 2 and isinstance(a[0], int):
            step = a[2] if len(a) > 2 and isinstance(a[2], int) else 1
            return xs[0] * step + a[0], s
        raise _Unsupported("arange")

    def _fill(self, value, s):
        return sympy.sympify(value), s

    def op_new_ones(self, n, s, xs): return self._fill(1 if n.type.dtype != torch.bool else True, s)
    def op_ones(self, n, s, xs): return self._fill(1 if n.type.dtype != torch.bool else True, s)
    def op_ones_like(self, n, s, xs): return self._fill(1 if n.type.dtype != torch.bool else True, s)
    def op_zeros(self, n, s, xs): return self._fill(0 if n.type.dtype != torch.bool else False, s)
    def op_zeros_like(self, n, s, xs): return self._fill(0 if n.type.dtype != torch.bool else False, s)
    def op_new_zeros(self, n, s, xs): return self._fill(0 if n.type.dtype != torch.bool else False, s)
    def op_scalar_tensor(self, n, s, xs): return self._fill(n.args[0], s)
    def op_full(self, n, s, xs): return self._fill(n.args[1], s)
    def op_full_like(self, n, s, xs): return self._fill(n.args[1], s)
    def op_new_full(self, n, s, xs): return self._fill(n.args[2], s)

    def op_expand(self, n, s, xs):
        return self.aligned(n.args[0], s), s

    def op_permute(self, n, s, xs):
        e, shape = self.value(n.args[0])
        src = _vars(len(shape))
        return e.xreplace({src[p]: xs[k] for k, p in enumerate(n.args[1])}), s

    def op_reshape(self, n, s, xs):
        e, shape = self.value(n.args[0])
        keep_in = [k for k, d in enumerate(shape) if d != 1]
        keep_out = [k for k, d in enumerate(s) if d != 1]
        if [shape[k] for k in keep_in] != [s[k] for k in keep_out]:
            raise _Unsupported("reshape that regroups dims")
        src = _vars(len(shape))
        subs = {src[k]: 0 for k, d in enumerate(shape) if d == 1}
        subs.update({src[a]: xs[b] for a, b in zip(keep_in, keep_out)})
        return e.xreplace(subs), s

    def op_slice(self, n, s, xs):
        e, shape = self.value(n.args[0])
        dim = n.args[1] % len(shape)
        start = n.args[2] if len(n.args) > 2 and n.args[2] is not None else 0
        step = n.args[4] if len(n.args) > 4 else 1
        if not isinstance(start, int) or step != 1:
            raise _Unsupported("slice")
        src = _vars(len(shape))
        return e.xreplace({src[k]: (xs[k] + start if k == dim else xs[k]) for k in range(len(shape))}), s

    def op_select(self, n, s, xs):
        e, shape = self.value(n.args[0])
        dim, idx = n.args[1] % len(shape), n.args[2]
        if not isinstance(idx, int):
            raise _Unsupported("select")
        src = _vars(len(shape))
        out = iter(xs)
        return e.xreplace({src[k]: (idx if k == dim else next(out)) for k in range(len(shape))}), s

    def op_index(self, n, s, xs):
        base, idxs = n.args[0], n.args[1]
        e, shape = self.value(base)
        if any(i is None for i in idxs):
            raise _Unsupported("index with None")
        k = len(idxs)
        lead = len(s) - (len(shape) - k)
        lead_shape = s[:lead]
        src = _vars(len(shape))
        subs = {src[d]: self.aligned(i, lead_shape) for d, i in enumerate(idxs)}
        for e_idx in subs.values():
            if not _nonnegative(e_idx):
                # NOTE: a negative index wraps around; only provably
                # non-negative positions index like the formula says.
                raise _Unsupported("index that may be negative")
        for d in range(k, len(shape)):
            subs[src[d]] = xs[lead + d - k]
        return e.xreplace(subs), s


def _nonnegative(e) -> bool:
    """A linear expression in the (non-negative) index variables with
    non-negative coefficients and constant term."""
    e = sympy.expand(e)
    if not e.is_polynomial() or any(sympy.degree(e, x) > 1 for x in e.free_symbols):
        return False
    poly = e.as_coefficients_dict()
    return all(c >= 0 for c in poly.values() if c.is_number)


def classify(mask: Value, mask_kind: str, graph: Graph, padding_inputs: set,
             scores: Optional[tuple] = None) -> Optional[MaskClass]:
    """The MaskClass of an attention ``mask`` operand (broadcastable to the
    scores ``[B, H, Sq, Sk]``; ``scores`` = (Sq, Sk), default the mask's own),
    or None if unproven."""
    ev = _Eval(graph, padding_inputs)
    try:
        e, shape = ev.value(mask)
    except _Unsupported:
        return None
    if len(shape) != 4:
        return None
    if mask_kind == "additive":
        cond = _zero_branch(e)
        if cond is None:
            return None
    else:
        cond = e if isinstance(e, sympy.logic.boolalg.Boolean) else sympy.Ne(e, 0)
    b, h, i, j = _vars(4)
    pads = cond.atoms(Pad)
    if pads and ev.pad_source.type.shape[0] == 1:
        # NOTE: a batch of one: the only row index is 0, so Pad(0, j) is Pad(b, j)
        # (a lookup with a constant row 0, as Dynamo writes it for a static batch of 1).
        cond = cond.xreplace({p: Pad(b, p.args[1]) for p in pads if p.args[0] == 0})
        pads = cond.atoms(Pad)
    if any(p.args != (b, j) for p in pads):
        return None
    q = sympy.Symbol("q", integer=True)
    f = cond.xreplace({Pad(b, j): q})
    if f.atoms(Pad) or f.free_symbols - {q, b, h, i, j}:
        return None
    if scores is not None:
        shape = tuple(shape[:2]) + tuple(scores)
    return _decide(f, q, (b, h, i, j), shape, ev.pad_source if pads else None)


def _zero_branch(e) -> Optional[sympy.Basic]:
    """cond for an additive mask expression that is 0 when cond and <= NEG otherwise."""
    if not isinstance(e, sympy.Piecewise) or len(e.args) != 2:
        return None
    (v1, c1), (v2, c2) = e.args
    if c2 != sympy.true:
        return None
    if _is_zero(v1) and _very_negative(v2):
        return c1
    if _is_zero(v2) and _very_negative(v1):
        return sympy.Not(c1)
    return None


def _is_zero(v) -> bool:
    return bool(v.is_number and v.is_zero)


def _very_negative(v) -> bool:
    try:
        return bool(v.is_number and (v == -sympy.oo or float(v) <= NEG))
    except TypeError:
        return False


def _visibility(f, q, idx_vars, n: int) -> Optional[np.ndarray]:
    """Visible (i, j) of valid keys on an n x n grid; None if F depends on
    (b, h) or shows a padded key."""
    b, h, i, j = idx_vars
    fn = sympy.lambdify((q, b, h, i, j), f, modules=["numpy"])
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    seen = None
    for qv, bv, hv in itertools.product((1, 0), (0, 1), (0, 1)):
        full = [np.full(ii.shape, x) for x in (qv, bv, hv)]
        got = np.broadcast_to(np.asarray(fn(*full, ii, jj), dtype=bool), ii.shape)
        if qv == 0:
            if f.has(q) and got.any():
                return None  # a padded key would be visible
            continue
        if seen is None:
            seen = got.copy()
        elif not np.array_equal(seen, got):
            return None  # depends on the batch or head: not a padding + position mask
    return seen


def _rule_of(vis: np.ndarray) -> Optional[tuple[str, Optional[int]]]:
    n = vis.shape[0]
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    if vis.all():
        return "none", None
    causal = jj <= ii
    if np.array_equal(vis, causal):
        return "top_left", None
    for w in range(1, n):
        if np.array_equal(vis, causal & (ii - jj < w)):
            return "top_left", w
    return None


def _decide(f, q, idx_vars, shape, pad_source) -> Optional[MaskClass]:
    consts = [abs(int(c)) for c in f.atoms(sympy.Integer)] + [0]
    sq, sk = shape[2], shape[3]
    if isinstance(sq, int) and isinstance(sk, int):
        if sq != sk:
            return None
        grids = [sq]  # the whole index space: exhaustive
    else:
        big = 2 * max(consts) + 8
        grids = [big, big + 5]  # beyond every constant of F the atoms stop changing
    rules = set()
    for n in grids:
        try:
            vis = _visibility(f, q, idx_vars, n)
        except (TypeError, ValueError):  # a formula numpy cannot evaluate on the grid
            return None
        if vis is None:
            return None
        rule = _rule_of(vis)
        if rule is None:
            return None
        rules.add(rule)
    if len(rules) != 1:
        return None
    causal, window = rules.pop()
    return MaskClass(pad_source, causal, window)
