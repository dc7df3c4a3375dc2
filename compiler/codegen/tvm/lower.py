"""A fused group's subgraph as one TensorIR PrimFunc.

Every value becomes a :class:`~lazy.Lazy` index function; what must exist in
memory becomes a ``te.compute``: reductions (per row), values a reduction
and something else both read ("staged", kept row-local by the schedule),
the GEMM accumulator and its packed B panel. Outputs are written by one
multi-output ``te.compute`` per *nest*, over the group's iteration domain:

- pointwise: the first output's shape;
- reduction: the row domain ``[rows..., N]`` for row-shaped outputs, and
  ``[rows...]`` for reduced outputs (a second nest when both exist);
- gemm: the GEMM's ``[batch..., M, N]``.

An output whose shape differs from its nest's domain but has as many
elements is written in the domain's shape and handed back as a view (a
reshape is free on the contiguous buffer the kernel allocates), so the
schedule sees one loop nest per domain.

Parameters of the PrimFunc: the operand buffers (contiguous, or flat 1-D
storage plus stride variables for operands listed in ``strided``), the
output buffers, then the symbolic dims as scalars (TVM checks each buffer
shape against them on every call).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import tvm
from tvm import te, tirx

from braze.compiler.codegen.tvm import layout as L
from braze.compiler.codegen.tvm.fastmath import Math, let
from braze.compiler.codegen.tvm.lazy import (Ctx, Lazy, LoweringError, convert, load, reshape_index, same_numel,
                                             storage_dtype, store, widen)
from braze.compiler.codegen.tvm.ops import GEMM, LAYOUT, POINTWISE, REDUCTION
from braze.compiler.codegen.tvm.lower_gemm import GemmLowering
from braze.compiler.codegen.tvm.pointwise import lower_pointwise
from braze.ir import Graph, Node, Value
from braze.ir.graph import map_values
from braze.ir.builder import ancestors


@dataclass(frozen=True)
class LowerOptions:
    """What the lowering depends on besides the group (part of the build key)."""

    target_kind: str = "llvm"          # "llvm" | "cuda"
    index_dtype: str = "int64"
    strided: frozenset = frozenset()   # (operand position, dims of stride 1): passed as flat storage + strides
    stage: bool = True                 # materialise values shared by a reduction and others
    mr: int = 1                        # GEMM: pad M to a multiple of mr
    nr: int = 1                        # GEMM: pad N to a multiple of nr (and pack B in nr-wide panels)
    pack: bool = False                 # GEMM: pack B into [N/nr, K, nr] panels
    lanes: int = 1                     # reductions: partial results per row (vector lanes), see _reduce_last
    prepack: bool = False              # GEMM "nn": B (a constant) is packed by a separate function, once
    gemm_layout: str = "nn"            # GEMM: "nn" (vectors along N), "nt" (dot products along K), "auto"
    tm: int = 4                        # GEMM "nt": rows of the register tile
    k_lanes: int = 16                  # GEMM "nt": vector lanes along K


@dataclass
class OutSpec:
    """How the kernel allocates output ``index`` and hands it back."""

    index: int
    alloc_dims: tuple     # dims of the buffer the kernel writes (its nest's domain)
    view_dims: tuple      # the IR output shape
    dtype: torch.dtype


@dataclass
class Nest:
    """One loop nest: a multi-output anchor over ``domain`` and the
    intermediates the schedule places inside it (in creation order)."""

    role: str                     # "pointwise" | "rows" | "reduced" | "gemm"
    domain: tuple
    anchor: list                  # te.Tensor outputs
    block_names: list             # their block names
    reductions: list = field(default_factory=list)   # te.Tensors (reduce blocks)
    staged: list = field(default_factory=list)       # te.Tensors (row-local spatial blocks)
    inter: list = field(default_factory=list)        # both, in creation (topological) order
    gemm: Optional[dict] = None   # {"C": te.Tensor, "Bp": te.Tensor | None, "batch": int, "M", "N", "K"}
    out_indices: list = field(default_factory=list)  # the group output each anchor tensor writes


@dataclass
class Lowered:
    kind: str
    func: "tirx.PrimFunc"
    inputs: list                  # per operand: te.Tensor placeholder
    outputs: list[OutSpec]
    nests: list[Nest]
    sym_names: list[str]          # scalar params, in order
    stride_params: list           # (operand position, dim) per stride scalar param, in order
    opts: LowerOptions
    pack_func: Optional["tirx.PrimFunc"] = None  # prepack: (B operand, packed B) -> packs B
    prepack_pos: Optional[int] = None            # the operand the main function takes packed
    pack_shape: tuple = ()                       # static shape of the packed B
    pack_stride_params: list = field(default_factory=list)  # (pos, dim) stride scalars of pack_func

    def schedule(self, cfg: dict, pointwise, rows, gemm):
        """The scheduled IRModule: each nest scheduled by the function for its
        role (``fn(sch, nest, cfg)``); the CPU and CUDA schedules share this."""
        from tvm import s_tir

        by_role = {"pointwise": pointwise, "rows": rows, "reduced": rows, "gemm": gemm}
        sch = s_tir.Schedule(tvm.IRModule({"main": self.func}))
        for nest in self.nests:
            fn = by_role.get(nest.role)
            if fn is not None:
                fn(sch, nest, cfg)
        return sch.mod



class _Namer:
    def __init__(self):
        self.n = 0

    def __call__(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"


def _reducer(combine: str, target_kind: str = "llvm"):
    if combine == "sum":
        return te.sum, lambda t: tirx.const(0, t)
    if target_kind == "cuda":
        # NOTE: TVM's cross-thread reduction only matches its own reducers
        # (identity: the dtype's lowest value, so a row of -inf gives -3.4e38)
        if combine == "max":
            return te.max, tirx.min_value
        return te.min, tirx.max_value
    if combine == "max":
        ident = lambda t: tirx.const(-float("inf"), t) if t.startswith("float") else tirx.min_value(t)  # noqa: E731
        return te.comm_reducer(lambda a, b: tirx.max(a, b), ident, name="amax"), ident
    if combine == "min":
        ident = lambda t: tirx.const(float("inf"), t) if t.startswith("float") else tirx.max_value(t)  # noqa: E731
        return te.comm_reducer(lambda a, b: tirx.min(a, b), ident, name="amin"), ident
    raise LoweringError(combine)


def _reduce_last(ctx: Ctx, x: Lazy, combine: str, name: str, body=None, lanes: int = 1) -> list:
    """te.computes reducing the last dim of ``x`` (``body(idx)`` overrides the
    value read); the row result is the last tensor returned.

    With ``lanes > 1`` the reduction is staged for vectorisation: ``lanes``
    partial results per row over the whole vectors of the row
    (``<name>_lanes``: lanes spatial, vector steps reduced), then their
    combination, plus the ``N % lanes`` tail elements (``<name>_tail``) when
    N is not a multiple of ``lanes``. No load reads past the row.
    """
    n = x.shape[-1]
    read = body or x.fn
    red, ident = _reducer(combine, ctx.target_kind)
    rows = tuple(x.shape[:-1])
    zero = tirx.const(0, ctx.index_dtype)
    if lanes <= 1:
        k = te.reduce_axis((zero, n), name=f"k_{name}")
        return [te.compute(rows, lambda *r: red(read(tuple(r) + (k,)), axis=k), name=name)]
    V = ctx.idx(lanes)
    full = tirx.floordiv(n, V)
    ko = te.reduce_axis((zero, full), name=f"ko_{name}")
    P = te.compute(rows + (V,), lambda *ix: red(read(tuple(ix[:-1]) + (ko * V + ix[-1],)), axis=ko),
                   name=f"{name}_lanes")
    kl = te.reduce_axis((zero, V), name=f"kl_{name}")
    static_tail = int(n.value) % lanes if isinstance(n, tirx.IntImm) else None
    if static_tail == 0:
        return [P, te.compute(rows, lambda *r: red(P(*(tuple(r) + (kl,))), axis=kl), name=name)]
    Q = te.compute(rows, lambda *r: red(P(*(tuple(r) + (kl,))), axis=kl), name=f"{name}_comb")
    kt = te.reduce_axis((zero, n - full * V), name=f"kt_{name}")
    Tl = te.compute(rows, lambda *r: red(read(tuple(r) + (full * V + kt,)), axis=kt), name=f"{name}_tail")
    both = (lambda a, b: a + b) if combine == "sum" else (tirx.max if combine == "max" else tirx.min)
    R = te.compute(rows, lambda *r: both(Q(*r), Tl(*r)), name=name)
    return [P, Q, Tl, R]


def make_inputs(ctx: Ctx, types: Sequence, strided: frozenset):
    """Placeholders and Lazies of operands of ``types``: contiguous buffers, or
    (``strided`` holds ``(position, unit-stride dims)``) flat storage read
    through stride variables (a constant 1 for the unit-stride dims).
    Returns (placeholders, lazies, stride params [(pos, dim)], stride vars)."""
    phs, lazies, params, svars = [], [], [], []
    unit = {pos: set(dims) for pos, dims in strided}
    for pos, t in enumerate(types):
        inner = t.rank - 1 if t.rank else None
        shape = ctx.shape(t.shape)
        if pos in unit and t.rank > 0:
            span = te.var(f"span{pos}", ctx.index_dtype)
            strides = []
            for d in range(t.rank):
                if d in unit[pos]:  # NOTE: a stride of 1 is compiled in, so the dim stays vectorisable
                    strides.append(ctx.idx(1))
                    continue
                v = te.var(f"stride{pos}_{d}", ctx.index_dtype)
                strides.append(v)
                params.append((pos, d))
                svars.append(v)
            ph = te.placeholder((span,), storage_dtype(t.dtype, ctx.target_kind), name=f"in{pos}")

            def fn(idx, ph=ph, strides=strides, dtype=t.dtype):
                off = idx[0] * strides[0]
                for i, s in zip(idx[1:], strides[1:]):
                    off = off + i * s
                return widen(ph(off), dtype)
            inner = max(unit[pos]) if unit[pos] else None
        else:
            ph = te.placeholder(shape, storage_dtype(t.dtype, ctx.target_kind), name=f"in{pos}")
            fn = load(ph, t.dtype)
        phs.append(ph)
        lazies.append(Lazy(shape, t.dtype, fn, tuple(t.shape), unit=inner))
    return phs, lazies, params, svars


class GroupLowering(GemmLowering):
    """Lowers one fused subgraph (see module doc)."""

    def __init__(self, sub: Graph, kind: str, opts: LowerOptions):
        self.sub = sub
        self.kind = kind
        self.opts = opts
        self.ctx = Ctx(opts.index_dtype, opts.target_kind)
        self.math = Math(opts.target_kind)
        self.name = _Namer()
        self.inputs: list = []
        self.input_lazy: dict[Value, Lazy] = {}
        self.stride_params: list = []
        self.stride_vars: list = []
        self._make_inputs()
        self.pack = None
        self.prepack_pos = prepack_operand(sub) if opts.prepack and kind == "gemm" else None
        if self.prepack_pos is not None and self.sub.inputs[self.prepack_pos].type.symbols:
            self.prepack_pos = None  # packed once only from an operand of static shape

    # --- inputs ---------------------------------------------------------------
    def _make_inputs(self) -> None:
        phs, lazies, self.stride_params, self.stride_vars = make_inputs(
            self.ctx, [n.type for n in self.sub.inputs], self.opts.strided)
        self.inputs = phs
        for n, lz in zip(self.sub.inputs, lazies):
            self.input_lazy[n.out()] = lz

    # --- values ------------------------------------------------------------------
    def evaluate(self, targets: Sequence[Value], nest: Nest) -> dict[Value, Lazy]:
        """Lazies of ``targets`` (and everything they need) with a fresh memo for ``nest``."""
        needed = ancestors(targets)
        stage = self._stage_set(needed) if self.opts.stage and self.kind == "reduction" else set()
        memo: dict[Value, Lazy] = dict(self.input_lazy)
        for n in self.sub.nodes:
            if n not in needed or n.op == "input":
                continue
            outs = self._node(n, memo, nest)
            for i, lz in enumerate(outs):
                v = Value(n, i)
                if v in stage:
                    lz = self._materialise(lz, nest)
                memo[v] = lz
        return memo

    def _stage_set(self, needed: set) -> set:
        """Values worth keeping row-local: computed (not a load or a view), read
        by several nodes, at least one of which leads to a reduction, and of
        the shape of that reduction's input."""
        users: dict[Value, list[Node]] = {}
        for n in self.sub.nodes:
            if n in needed:
                for v in set(n.inputs):
                    users.setdefault(v, []).append(n)
        feeds: dict[Node, set] = {}  # node -> input shapes of the reductions it leads to
        for n in reversed(self.sub.nodes):
            if n not in needed:
                continue
            shapes = set()
            if n.op in REDUCTION:
                shapes.add(tuple(n.args[0].type.shape))
            for u in users.get(n.out(), []) if len(n.types) == 1 else []:
                shapes |= feeds.get(u, set())
            feeds[n] = shapes
        out = set()
        for v, us in users.items():
            if v.node.op in ("input", "constant") or v.node.op in LAYOUT or len(us) < 2 or len(v.node.types) != 1:
                continue
            if tuple(v.type.shape) in feeds.get(v.node, set()):
                out.add(v)
        return out

    def _materialise(self, lz: Lazy, nest: Nest) -> Lazy:
        T = te.compute(lz.shape, lambda *i: lz(i), name=self.name("stage"))
        nest.staged.append(T)
        nest.inter.append(T)
        return Lazy(lz.shape, lz.dtype, lambda idx: T(*idx), lz.dims)

    def _node(self, n: Node, memo: dict, nest: Nest) -> list[Lazy]:
        args = map_values(n.args, memo.__getitem__)
        kw = {k: map_values(v, memo.__getitem__) for k, v in n.kwargs}
        op = n.op
        if op in POINTWISE:
            return [lower_pointwise(self.ctx, self.math, n, list(args), kw)]
        if op in LAYOUT:
            return L.lower_layout(self.ctx, n, list(args), kw)
        if op in REDUCTION:
            return self._reduction(n, list(args), kw, nest)
        if op in GEMM:
            return [self._gemm(n, list(args), kw, nest)]
        raise LoweringError(f"no TVM lowering for op {op}")

    # --- reductions -------------------------------------------------------------
    def _reduction(self, n: Node, args: list, kw: dict, nest: Nest) -> list[Lazy]:
        op = n.op
        x: Lazy = args[0]
        if x.rank == 0:
            raise LoweringError(f"{op} of a 0-d tensor")
        ctx, m = self.ctx, self.math
        cd = x.cdtype
        N = x.shape[-1]
        nf = N.astype(cd) if cd.startswith("float") else N

        def out_of(R: te.Tensor, t) -> Lazy:
            keep = t.rank == x.rank
            fn = (lambda idx: R(*idx[:-1])) if keep else (lambda idx: R(*idx))
            return Lazy(ctx.shape(t.shape), t.dtype, lambda idx: convert(fn(idx), x.dtype, t.dtype), tuple(t.shape))

        def red(combine: str, body=None, label="") -> te.Tensor:
            Ts = _reduce_last(ctx, x, combine, self.name(f"red_{label or combine}_"), body, self.opts.lanes)
            nest.reductions.extend(Ts)
            nest.inter.extend(Ts)
            return Ts[-1]

        if op in ("_softmax", "_log_softmax"):
            M = red("max", label="max")
            S = red("sum", lambda idx: m.exp(x(idx) - M(*idx[:-1])), label="expsum")
            t = n.types[0]
            if op == "_softmax":
                def fn(idx):
                    return convert(m.exp(x(idx) - M(*idx[:-1])) / S(*idx[:-1]), x.dtype, t.dtype)
            else:
                def fn(idx):
                    return convert(x(idx) - M(*idx[:-1]) - m.log(S(*idx[:-1])), x.dtype, t.dtype)
            return [Lazy(ctx.shape(t.shape), t.dtype, fn, tuple(t.shape))]
        if op in ("sum", "mean"):
            t = n.types[0]
            acc_t = t.dtype
            if not x.dtype.is_floating_point and op == "sum":
                # integer sums accumulate in the output dtype (int64 for ints and bools)
                xa = Lazy(x.shape, acc_t, lambda idx: convert(x(idx), x.dtype, acc_t), x.dims)
                Ts = _reduce_last(ctx, xa, "sum", self.name("red_sum_"), None, self.opts.lanes)
                nest.reductions.extend(Ts)
                nest.inter.extend(Ts)
                R = Ts[-1]
                rd = (lambda idx: R(*idx[:-1])) if t.rank == x.rank else (lambda idx: R(*idx))
                return [Lazy(ctx.shape(t.shape), t.dtype, rd, tuple(t.shape))]
            R = red("sum")
            if op == "sum":
                return [out_of(R, t)]
            keep = t.rank == x.rank
            rd = (lambda idx: R(*idx[:-1])) if keep else (lambda idx: R(*idx))
            return [Lazy(ctx.shape(t.shape), t.dtype, lambda idx: convert(rd(idx) / nf, x.dtype, t.dtype),
                         tuple(t.shape))]
        if op in ("amax", "amin"):
            R = red("max" if op == "amax" else "min")
            return [out_of(R, n.types[0])]
        if op in ("var", "var_mean", "std"):
            corr = kw.get("correction")
            if corr is None:
                unbiased = kw.get("unbiased", args[2] if len(args) > 2 and isinstance(args[2], bool) else True)
                corr = 1 if unbiased else 0
            S1 = red("sum", label="mean")

            def mean(idx):
                return S1(*idx[:-1]) / nf
            S2 = red("sum", lambda idx: let(x(idx) - mean(idx), lambda d: d * d, "dev"), label="sqdev")
            denom = nf - tirx.const(float(corr), cd)
            t0 = n.types[0]
            keep = t0.rank == x.rank

            def rows(idx):
                return idx[:-1] if keep else idx

            def var(idx):
                v = S2(*rows(idx)) / tirx.max(denom, tirx.const(0.0, cd))
                return convert(tirx.sqrt(v) if op == "std" else v, x.dtype, t0.dtype)
            outs = [Lazy(ctx.shape(t0.shape), t0.dtype, var, tuple(t0.shape))]
            if op == "var_mean":
                t1 = n.types[1]
                outs.append(Lazy(ctx.shape(t1.shape), t1.dtype,
                                 lambda idx: convert(S1(*rows(idx)) / nf, x.dtype, t1.dtype), tuple(t1.shape)))
            return outs
        raise LoweringError(f"no TVM lowering for reduction {op}")

    # --- nests and outputs -----------------------------------------------------------
    def _anchor(self, nest: Nest, domain: tuple, items: list[tuple[int, Lazy]], name: str) -> list[OutSpec]:
        ctx = self.ctx
        dshape = ctx.shape(domain)
        specs, fns = [], []
        for index, lz in items:
            view = tuple(lz.dims)
            if tuple(view) != tuple(domain) and lz.reshape_of is not None and \
                    tuple(lz.reshape_of.dims) == tuple(domain):
                lz = lz.reshape_of  # written in the domain's shape, handed back as the view
            if tuple(lz.dims) == tuple(domain):
                fns.append((lambda lz: lambda idx: store(lz(idx), lz.dtype, ctx.target_kind))(lz))
            else:
                fns.append((lambda lz, view: lambda idx: store(lz(reshape_index(
                    idx, view, domain, lz.shape, dshape, ctx.index_dtype)), lz.dtype, ctx.target_kind))(lz, view))
            specs.append(OutSpec(index, tuple(domain), view, lz.dtype))
        outs = te.compute(dshape, lambda *i: [f(i) for f in fns], name=name)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        nest.anchor = outs
        nest.block_names = [name] if len(outs) == 1 else [f"{name}_v{i}" for i in range(len(outs))]
        nest.domain = tuple(domain)
        nest.out_indices = [index for index, _ in items]
        return specs

    def lower(self) -> Lowered:
        outs = list(self.sub.outputs)
        types = [v.type for v in outs]
        nests: list[Nest] = []
        specs: list[OutSpec] = []
        if self.kind == "pointwise":
            domain = tuple(types[0].shape)
            nest = Nest("pointwise", domain, [], [])
            memo = self.evaluate(outs, nest)
            specs += self._anchor(nest, domain, [(i, memo[v]) for i, v in enumerate(outs)], "out")
            nests.append(nest)
        elif self.kind == "reduction":
            red_nodes = [n for n in self.sub.nodes if n.op in REDUCTION]
            domain = tuple(red_nodes[0].args[0].type.shape)
            rows = domain[:-1]
            row_outs = [i for i, t in enumerate(types) if same_numel(t.shape, domain)]
            red_outs = [i for i, t in enumerate(types) if i not in row_outs and same_numel(t.shape, rows)]
            if len(row_outs) + len(red_outs) != len(outs):
                raise LoweringError("reduction group output of neither row nor reduced shape")
            if row_outs:
                nest = Nest("rows", domain, [], [])
                memo = self.evaluate([outs[i] for i in row_outs], nest)
                specs += self._anchor(nest, domain, [(i, memo[outs[i]]) for i in row_outs], "out")
                nests.append(nest)
            if red_outs:
                nest = Nest("reduced", rows, [], [])
                memo = self.evaluate([outs[i] for i in red_outs], nest)
                specs += self._anchor(nest, rows, [(i, memo[outs[i]]) for i in red_outs], "outr")
                nests.append(nest)
        elif self.kind == "gemm":
            g = [n for n in self.sub.nodes if n.op in GEMM][0]
            domain = tuple(g.types[0].shape)
            nest = Nest("gemm", domain, [], [])
            memo = self.evaluate(outs, nest)
            specs += self._anchor(nest, domain, [(i, memo[v]) for i, v in enumerate(outs)], "out")
            nests.append(nest)
        else:
            raise LoweringError(f"unknown fused kind {self.kind!r}")
        specs.sort(key=lambda s: s.index)
        anchor_of = {}
        for nest in nests:
            for index, T in zip(nest.out_indices, nest.anchor):
                anchor_of[index] = T
        out_tensors = [anchor_of[s.index] for s in specs]
        sym_names = sorted(self.ctx.syms)
        ins = list(self.inputs)
        pack_func, pack_shape = None, ()
        stride_params, stride_vars = list(self.stride_params), list(self.stride_vars)
        pack_params: list = []
        if self.pack is not None:
            # NOTE: the main function takes B packed (contiguous); B's own strides,
            # if it is strided, belong to the pack function
            p = self.prepack_pos
            mine = [i for i, (pos, _) in enumerate(stride_params) if pos == p]
            pack_params = [stride_params[i] for i in mine]
            compute, packed = self.pack
            pack_func = te.create_prim_func([self.inputs[p], compute] + [stride_vars[i] for i in mine])
            pack_shape = tuple(int(d.value) for d in compute.shape)
            ins[p] = packed
            stride_params = [sp for i, sp in enumerate(stride_params) if i not in mine]
            stride_vars = [sv for i, sv in enumerate(stride_vars) if i not in mine]
        params = ins + out_tensors + [self.ctx.syms[s] for s in sym_names] + stride_vars
        func = te.create_prim_func(params)
        return Lowered(self.kind, func, self.inputs, specs, nests, sym_names, stride_params, self.opts,
                       pack_func, self.prepack_pos if pack_func is not None else None, pack_shape, pack_params)


def prepack_operand(sub: Graph) -> Optional[int]:
    """The operand position B of the group's GEMM comes from (through layout
    ops only), if nothing else in the group reads that operand."""
    g = [n for n in sub.nodes if n.op in GEMM]
    if len(g) != 1:
        return None
    v = g[0].args[2] if g[0].op == "addmm" else g[0].args[1]
    chain = set()
    while v.node.op in LAYOUT and len(v.node.inputs) == 1:
        chain.add(v.node)
        v = v.node.inputs[0]
    if v.node.op != "input":
        return None
    for n in sub.nodes:
        if n not in chain and n is not g[0] and v in n.inputs:
            return None
    if sum(1 for u in g[0].inputs if u.node in chain or u == v) != 1:
        return None
    return list(sub.inputs).index(v.node)


def lower_group(sub: Graph, kind: str, opts: LowerOptions) -> Lowered:
    """Lower a fused group's subgraph (see the module doc); raises LoweringError."""
    return GroupLowering(sub, kind, opts).lower()
