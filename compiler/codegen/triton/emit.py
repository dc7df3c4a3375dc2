"""The emitter: generates the Triton code that computes subgraph values.

Codegen *pulls* a value at an :class:`~indexing.Index`: an input is a load
at the address the index gives (strides are kernel arguments), a layout op
maps the index to its operand's index, a pointwise op pulls its operands at
the broadcast index and applies its expression from ``exprs.TABLE``.
Templates register *special* nodes (reductions, the GEMM) whose values they
compute themselves. Every (value, index, condition) is computed once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from braze.compiler.codegen.triton import exprs
from braze.compiler.codegen.triton.exprs import TV, compute_dtype
from braze.compiler.codegen.triton.indexing import (TRUE, ZERO, Cond, Index, Unsupported, extents, render,
                                                     render_size, size)
from braze.compiler.codegen.triton.layout import (map_broadcast, map_permute, map_reshape, map_select, map_slice,
                                                   with_dim)
from braze.ir import Graph, Node, Value
from braze.ir.types import Sym

RESHAPES = {"reshape", "view", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "unflatten", "_reshape_alias"}
IDENTITIES = {"alias", "clone", "contiguous", "detach", "lift_fresh_copy"}
PERMUTES = {"permute", "t", "transpose"}
LAYOUT = RESHAPES | IDENTITIES | PERMUTES | {"expand", "expand_as", "slice", "select", "cat"}


@dataclass
class Operand:
    """Kernel argument names of one subgraph input."""

    ptr: str
    strides: list[str]


@dataclass
class Emitter(exprs.Ctx):
    graph: Graph
    operands: Mapping[Node, Operand]        # subgraph input node -> its kernel argument names
    names: Mapping[str, str]                # atom -> variable
    masks: Mapping[str, str]                # atom -> mask variable (atoms without a mask need none)
    special: dict = field(default_factory=dict)   # node -> fn(emitter, value, index, cond) -> TV
    subst: dict = field(default_factory=dict)     # index key (Atom/Digit) -> code
    lines: list = field(default_factory=list)
    indent: str = "    "
    helpers: set = field(default_factory=set)
    counter: list = field(default_factory=lambda: [0])
    memo: dict = field(default_factory=dict)
    raw_loads: bool = False     # keep loaded values in their storage dtype (GEMM operands)
    loads_only: bool = False    # only loads and layout ops (GEMM operands inside the K loop)
    spread: tuple = ()          # atoms every load is also shaped along (``name * 0`` address terms)

    # ------------------------------------------------------------------ plumbing
    def scope(self, indent: Optional[str] = None, names=None, masks=None) -> "Emitter":
        """A child emitter with a fresh memo writing to the same lines (e.g. a loop body)."""
        return Emitter(self.graph, self.operands, dict(self.names if names is None else names),
                       dict(self.masks if masks is None else masks),
                       self.special, self.subst, self.lines, indent if indent is not None else self.indent,
                       self.helpers, self.counter, {}, self.raw_loads, self.loads_only, self.spread)

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def fresh(self, prefix: str = "t") -> str:
        self.counter[0] += 1
        return f"{prefix}{self.counter[0]}"

    def tmp(self, code: str, dtype: torch.dtype, ir: torch.dtype, axes: frozenset, exact: bool = False) -> TV:
        if code.isidentifier():
            return TV(code, dtype, ir, frozenset(axes), exact)
        name = self.fresh()
        self.line(f"{name} = {code}")
        return TV(name, dtype, ir, frozenset(axes), exact)

    def helper(self, name: str) -> str:
        self.helpers.add(name)
        return name

    def code(self, lin) -> str:
        return render(lin, self.names, self.subst)

    def mask_for(self, axes, cond: Cond = TRUE) -> Optional[str]:
        parts = [self.masks[a] for a in sorted(axes) if a in self.masks]
        parts += cond.render(self.names, self.subst)
        return " & ".join(parts) if parts else None

    # ------------------------------------------------------------------ pulling values
    def pull(self, v: Value, idx: Index, cond: Cond = TRUE) -> TV:
        key = (v, idx.key(), cond)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        out = self._pull(v, idx, cond)
        self.memo[key] = out
        return out

    def _pull(self, v: Value, idx: Index, cond: Cond) -> TV:
        n = v.node
        if self.loads_only and n.op not in LAYOUT and n.op != "input":
            raise Unsupported(f"GEMM operand computed by {n.op}: only views of inputs are read in the K loop")
        if n in self.special:
            return self.special[n](self, v, idx, cond)
        if n.op == "input":
            return self.load(n, idx, cond)
        if n.op in LAYOUT:
            return self.layout(n, idx, cond)
        if n.op in exprs.TABLE:
            return self.pointwise(n, idx, cond)
        raise Unsupported(f"op {n.op} cannot be generated in this template")

    def load(self, n: Node, idx: Index, cond: Cond) -> TV:
        opd = self.operands.get(n)
        if opd is None:
            raise Unsupported(f"input {n.name} has no kernel argument")
        t = n.type
        terms = []
        axes: frozenset = frozenset()
        for k, lin in enumerate(idx.dims()):
            if lin == ZERO:
                continue
            axes |= lin.atoms()
            terms.append(f"{self.code(lin)} * {opd.strides[k]}")
        caxes = cond.atoms() | frozenset(self.spread)
        for a in sorted(caxes - axes):  # the load must have the shape of its mask (and of the spread)
            terms.append(f"{self.names[a]} * 0")
        axes |= caxes
        addr = opd.ptr + "".join(" + " + tm for tm in terms)
        mask = self.mask_for(axes, cond)
        other = "" if mask is None else (", other=0" if t.dtype != torch.bool else ", other=0")
        code = f"tl.load({addr}{'' if mask is None else ', mask=' + mask}{other})"
        ct = t.dtype if self.raw_loads else compute_dtype(t.dtype)
        if ct != t.dtype:
            code += f".to({exprs.TL[ct]})"
        return self.tmp(code, ct, t.dtype, axes, exact=True)

    def layout(self, n: Node, idx: Index, cond: Cond) -> TV:
        x = n.args[0] if n.op != "cat" else None
        if n.op in IDENTITIES:
            return self.pull(x, idx, cond)
        if n.op in RESHAPES:
            return self.pull(x, map_reshape(idx, x.type.shape), cond)
        if n.op in PERMUTES:
            return self.pull(x, map_permute(idx, _perm(n)), cond)
        if n.op in ("expand", "expand_as"):
            return self.pull(x, map_broadcast(idx, x.type.shape), cond)
        if n.op == "slice":
            dim, start, step = _slice_args(n)
            return self.pull(x, map_slice(idx, x.type.shape, dim, start, step), cond)
        if n.op == "select":
            dim, index = _arg(n, 1, "dim"), _arg(n, 2, "index")
            d = x.type.shape[dim % x.type.rank]
            if isinstance(index, int) and index < 0:
                index = size(d) + index
            return self.pull(x, map_select(idx, x.type.shape, dim, _size_arg(index)), cond)
        if n.op == "cat":
            return self.cat(n, idx, cond)
        raise Unsupported(f"layout op {n.op}")

    def cat(self, n: Node, idx: Index, cond: Cond) -> TV:
        xs = [x for x in n.args[0]]
        rank = n.type.rank
        dim = _arg(n, 1, "dim", 0) % rank
        cur = idx.split_at(dim).split_at(dim + 1)
        e = cur.dims()[dim]
        ext = extents()
        off = size(0)
        branches = []
        for j, x in enumerate(xs):
            w = size(x.type.shape[dim])
            c: Optional[Cond] = cond
            if j > 0:
                c = c.and_(e, "ge", off, ext)
            if c is not None and j < len(xs) - 1:
                c = c.and_(e, "lt", off + w, ext)
            if c is not None:
                sub = with_dim(cur, dim, e.shift(-off), x.type.shape)
                branches.append((self.pull(x, sub, c), off + w))
            off = off + w
        if not branches:
            raise Unsupported("cat: no branch can be taken")
        ct = n.type.dtype if self.raw_loads else compute_dtype(n.type.dtype)
        val, _ = branches[-1]
        code = exprs.cast(val, ct)
        axes = val.axes
        for tv, end in reversed(branches[:-1]):
            code = f"tl.where({self.code(e)} < {render_size(end)}, {exprs.cast(tv, ct)}, {code})"
            axes = axes | tv.axes | e.atoms()
        return self.tmp(code, ct, n.type.dtype, axes, exact=all(b[0].exact for b in branches))

    def pointwise(self, n: Node, idx: Index, cond: Cond) -> TV:
        reason = exprs.supported_op(n)
        if reason:
            raise Unsupported(reason)
        def ev(a):
            if isinstance(a, Value):
                return self.pull(a, map_broadcast(idx, a.type.shape), cond)
            if isinstance(a, Sym):
                return TV(render_size(a.sympy), torch.int64, torch.int64, frozenset(), True)
            if isinstance(a, (tuple, list)):
                raise Unsupported(f"{n.op} takes a list argument")
            return a

        vals = [ev(a) for a in n.args]
        kws = {k: ev(v) for k, v in n.kwargs}
        return exprs.TABLE[n.op].fn(self, exprs.bind(n, vals, kws), n.types[0].dtype)


# --------------------------------------------------------------------------- argument helpers
def _arg(n: Node, pos: int, name: str, default=None):
    if len(n.args) > pos:
        return n.args[pos]
    return n.attr(name, default)


def _size_arg(v):
    if isinstance(v, Sym):
        return v.sympy
    return v


def _perm(n: Node) -> list[int]:
    rank = n.args[0].type.rank
    if n.op == "permute":
        return [d % rank for d in _arg(n, 1, "dims")]
    if n.op == "t":
        return list(range(rank))[::-1]
    d0, d1 = (_arg(n, 1, "dim0") % rank, _arg(n, 2, "dim1") % rank)
    p = list(range(rank))
    p[d0], p[d1] = p[d1], p[d0]
    return p


def _slice_args(n: Node):
    x = n.args[0]
    dim = _arg(n, 1, "dim", 0) % x.type.rank
    start = _arg(n, 2, "start", None)
    step = _arg(n, 4, "step", 1)
    if not isinstance(step, int) or step < 1:
        raise Unsupported(f"slice step {step}")
    d = size(x.type.shape[dim])
    if start is None:
        start = 0
    if isinstance(start, int):
        if start < 0:
            start = d + start
            if d.is_Integer and int(start) < 0:
                start = 0
        elif d.is_Integer and start > int(d):
            start = int(d)
    return dim, _size_arg(start), step


def operand_names(graph: Graph, prefix: str = "in") -> dict[Node, Operand]:
    """Kernel argument names for each subgraph input: ``in0_ptr``, ``in0_s0`` ..."""
    out = {}
    for i, n in enumerate(graph.inputs):
        out[n] = Operand(f"{prefix}{i}_ptr", [f"{prefix}{i}_s{k}" for k in range(n.type.rank)])
    return out

