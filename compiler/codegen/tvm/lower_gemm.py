"""GEMM groups: the GEMM node of a fused group as TensorIR (a mixin of
``lower.GroupLowering``).

Two layouts, chosen by the ``layout`` knob (``"auto"``: from B's memory
order, tracked through views as ``Lazy.unit``):

- ``nn``: vectors along N. B is packed in ``nr``-wide panels (``packB``,
  zero-padded, contiguous) and each ``mr x nr`` accumulator tile is a set of
  FMAs of a broadcast A element with a vector of B.
- ``nt``: dot products along K, for a K-contiguous B (nn.Linear's weight
  ``[N, K]``): ``tm x tn`` tiles of K-lane partial sums, no packing.

Either way the GEMM's accumulator is padded to whole tiles (padded rows and
columns read clamped, in-bounds elements and are never stored) and the
node's value is ``alpha * C + beta * bias``; the rest of the epilogue is
the group's other ops, inlined by the anchor.
"""
from __future__ import annotations

import torch
from tvm import te, tirx

from braze.compiler.codegen.tvm.fastmath import let
from braze.compiler.codegen.tvm.lazy import Lazy, convert
from braze.compiler.codegen.tvm.ops import compute_dtype
from braze.compiler.codegen.tvm.pointwise import broadcast_reader
from braze.ir import Node


class GemmLowering:
    """GEMM lowering; expects ``self.ctx`` and ``self.opts`` (a ``LowerOptions``)."""

    def _gemm(self, n: Node, args: list, kw: dict, nest) -> Lazy:
        ctx, o = self.ctx, self.opts
        if n.op == "addmm":
            bias, a, b = args[0], args[1], args[2]
            beta = kw.get("beta", args[3] if len(args) > 3 else 1)
            alpha = kw.get("alpha", args[4] if len(args) > 4 else 1)
        else:
            bias, a, b = None, args[0], args[1]
            beta = alpha = 1
        t = n.types[0]
        batch = a.rank - 2
        M, K = a.shape[-2], a.shape[-1]
        N = b.shape[-1]
        layout = o.gemm_layout
        if layout == "auto":  # K-contiguous B (nn.Linear's weight): dot products need no packing
            layout = "nt" if b.unit is not None and b.unit == b.rank - 2 else "nn"
        if layout == "nt":
            return self._epilogue(self._gemm_nt(a, b, t, nest), bias, alpha, beta, t)
        cdt = torch.float64 if t.dtype == torch.float64 else torch.float32
        cd = compute_dtype(cdt)
        mr, nr = max(1, o.mr), max(1, o.nr)
        zero_i = ctx.idx(0)

        def static(e):
            return int(e.value) if isinstance(e, tirx.IntImm) else None

        n_even = static(N) is not None and static(N) % nr == 0
        m_even = static(M) is not None and static(M) % mr == 0
        NP = tirx.floordiv(N + ctx.idx(nr - 1), ctx.idx(nr))
        Mp = tirx.floordiv(M + ctx.idx(mr - 1), ctx.idx(mr)) * ctx.idx(mr) if not m_even else M
        k = te.reduce_axis((zero_i, K), name="k")

        def A(bi, i, kk):
            i = i if m_even else tirx.min(i, M - ctx.idx(1))
            return convert(a(list(bi) + [i, kk]), a.dtype, cdt)

        def B(bi, kk, j):
            return convert(b(list(bi) + [kk, j]), b.dtype, cdt)

        Bp = None
        packed = None
        if o.pack:
            def pack(*ix):
                bi, jo, kk, ji = ix[:batch], ix[batch], ix[batch + 1], ix[batch + 2]
                j = jo * ctx.idx(nr) + ji
                if n_even:
                    return B(bi, kk, j)
                # NOTE: the load is bound outside the Select so that its clamp is kept (see layout.cat)
                return let(B(bi, kk, tirx.min(j, N - ctx.idx(1))), lambda bv: tirx.Select(j < N, bv,
                                                                                       tirx.const(0.0, cd)), "bv")
            Bp = te.compute(tuple(a.shape[:batch]) + (NP, K, ctx.idx(nr)), pack, name="packB")
            src = Bp
            if self.prepack_pos is not None:
                # B (a constant) arrives packed: packB becomes its own function, run once per weight
                packed = te.placeholder(Bp.shape, cd, name="packedB")
                self.pack = (Bp, packed)
                src, Bp = packed, None

            def C_body(*ix):
                bi, i, j = ix[:batch], ix[batch], ix[batch + 1]
                jo, ji = tirx.floordiv(j, ctx.idx(nr)), tirx.floormod(j, ctx.idx(nr))
                return te.sum(A(bi, i, k) * src(*bi, jo, k, ji), axis=k)
            C = te.compute(tuple(a.shape[:batch]) + (Mp, NP * ctx.idx(nr)), C_body, name="gemm")
        else:
            def C_body(*ix):
                bi, i, j = ix[:batch], ix[batch], ix[batch + 1]
                return te.sum(A(bi, i, k) * B(bi, k, j), axis=k)
            C = te.compute(tuple(a.shape[:batch]) + (M if o.mr <= 1 else Mp, N), C_body, name="gemm")
        nest.gemm = {"C": C, "Bp": Bp, "batch": batch, "M": M, "N": N, "K": K, "layout": "nn", "parts": []}
        return self._epilogue(C, bias, alpha, beta, t)

    def _gemm_nt(self, a: Lazy, b: Lazy, t, nest):
        """C[i, j] = sum_k A[i, k] B[k, j] as vectorised dot products along K:
        ``tm x tn`` tiles of ``k_lanes``-wide partial sums (``gemm_lanes``),
        summed across lanes (``gemm_comb``) plus the K tail (``gemm_tail``).
        No packing: both operands are read along K, where they are contiguous."""
        ctx, o = self.ctx, self.opts
        batch = a.rank - 2
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        cdt = torch.float64 if t.dtype == torch.float64 else torch.float32
        tm, nr, V = max(1, o.tm), max(1, o.nr), ctx.idx(o.k_lanes)

        def static(e):
            return int(e.value) if isinstance(e, tirx.IntImm) else None

        m_even = static(M) is not None and static(M) % tm == 0
        n_even = static(N) is not None and static(N) % nr == 0
        Mp = M if m_even else tirx.floordiv(M + ctx.idx(tm - 1), ctx.idx(tm)) * ctx.idx(tm)
        Np = N if n_even else tirx.floordiv(N + ctx.idx(nr - 1), ctx.idx(nr)) * ctx.idx(nr)
        one = ctx.idx(1)

        # NOTE: padded rows and columns read clamped (in-bounds) elements; they are never stored
        def A(bi, i, kk):
            return convert(a(list(bi) + [i if m_even else tirx.min(i, M - one), kk]), a.dtype, cdt)

        def B(bi, kk, j):
            return convert(b(list(bi) + [kk, j if n_even else tirx.min(j, N - one)]), b.dtype, cdt)

        zero = ctx.idx(0)
        full = tirx.floordiv(K, V)
        ko = te.reduce_axis((zero, full), name="ko")
        lead = tuple(a.shape[:batch])

        def lanes(*ix):
            bi, i, j, kv = ix[:batch], ix[batch], ix[batch + 1], ix[batch + 2]
            return te.sum(A(bi, i, ko * V + kv) * B(bi, ko * V + kv, j), axis=ko)
        P = te.compute(lead + (Mp, Np, V), lanes, name="gemm_lanes")
        kl = te.reduce_axis((zero, V), name="kl")
        static_tail = static(K) % o.k_lanes if static(K) is not None else None
        parts = [P]
        if static_tail == 0:
            C = te.compute(lead + (Mp, Np), lambda *ix: te.sum(P(*ix, kl), axis=kl), name="gemm")
        else:
            Q = te.compute(lead + (Mp, Np), lambda *ix: te.sum(P(*ix, kl), axis=kl), name="gemm_comb")
            kt = te.reduce_axis((zero, K - full * V), name="kt")

            def tail(*ix):
                bi, i, j = ix[:batch], ix[batch], ix[batch + 1]
                return te.sum(A(bi, i, full * V + kt) * B(bi, full * V + kt, j), axis=kt)
            T = te.compute(lead + (Mp, Np), tail, name="gemm_tail")
            C = te.compute(lead + (Mp, Np), lambda *ix: Q(*ix) + T(*ix), name="gemm")
            parts += [Q, T]
        nest.gemm = {"C": C, "Bp": None, "batch": batch, "M": M, "N": N, "K": K, "layout": "nt", "parts": parts}
        return C

    def _epilogue(self, C, bias, alpha, beta, t) -> Lazy:
        """The GEMM node's value, ``alpha * C + beta * bias``, over the node's shape."""
        ctx = self.ctx
        cdt = torch.float64 if t.dtype == torch.float64 else torch.float32
        cd = compute_dtype(cdt)
        bias_rd = broadcast_reader(bias, t.shape) if isinstance(bias, Lazy) else None

        def fn(idx):
            v = C(*idx)
            if alpha != 1:
                v = v * tirx.const(float(alpha), cd)
            if bias_rd is not None:
                bv = convert(bias_rd(idx), bias.dtype, cdt)
                if beta != 1:
                    bv = bv * tirx.const(float(beta), cd)
                v = v + bv if beta != 0 else v
            return convert(v, cdt, t.dtype) if t.dtype == torch.float64 else v

        return Lazy(ctx.shape(t.shape), t.dtype, fn, tuple(t.shape))
