"""Variable-length padding elimination: never compute padding tokens.

Given a padding mask input ``[B, S]`` (Hugging Face ``attention_mask``), the
pass finds the *token-wise* region of the graph, the ops that act on each
token independently (embedding lookups, linear layers, norms, activations,
MLPs, residual adds, views that keep the token dimensions), and runs it on
packed tokens ``[T, ...]``: ``pack`` where a padded value enters the region,
``unpack`` where the padded layout is needed again (graph outputs, ops that
mix tokens). Attention whose mask is provably "padding, and maybe causal"
(``passes/mask_algebra.py``) becomes ``attention_varlen`` on the packed
tokens with ``cu_seqlens``. Values indexed by position only (``[1, S, ...]``:
rotary cos/sin, learned position embeddings) are gathered at each token's
own position ``pos``, so positions follow each sequence exactly as the eager
model computes them, left padding included.

The valid-token count T is the one host synchronisation of a forward
(``padding_index``); everything else uses upper bounds (``max_seqlen = S``).
Outputs are zero at padding positions. When the mask is not a padding mask
(arbitrary 2-D or 4-D masks), or an attention cannot be made varlen, the
pass leaves the graph padded and records why (``ctx.decline``, shown by
``braze.explain``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional

import torch

from braze.ir import Category, Graph, Node, Value, get_op, sym
from braze.ir import attention_varlen as _varlen  # noqa: F401 - the attention_varlen op
from braze.ir.builder import Builder, eliminate_dead, rewrite
from braze.ir.graph import map_values
from braze.ir.types import Dim, TensorType, dim_mul, dims_equal
from braze.passes.mask_algebra import classify
from braze.passes.context import PassContext
from braze.passes.fuse import _le

log = logging.getLogger("braze.passes")

# Why the pass left the last graph padded (read by braze.explain), by graph name.
RULE = "pack the valid tokens of a padded batch"

REDUCTIONS = {"sum", "mean", "amax", "amin", "var", "var_mean", "_softmax", "_log_softmax", "linalg_vector_norm"}


@dataclass(frozen=True)
class Layout:
    """Where the token dimensions of a padded value are: ``b`` and ``s``, or
    one merged ``b * s`` dimension (``merged``)."""

    b: Optional[int] = None
    s: Optional[int] = None
    merged: Optional[int] = None

    def token_dims(self) -> tuple[int, ...]:
        return (self.merged,) if self.merged is not None else (self.b, self.s)


class _Decline(Exception):
    pass


class _Packer:
    def __init__(self, graph: Graph, mask: Value, attn: dict):
        self.g = graph
        self.mask = mask
        self.attn = attn  # attention-like node -> MaskClass
        self.B, self.S = mask.type.shape
        self.T = sym(_fresh_symbol(graph))
        self.b = Builder(graph.constants)
        self.env: dict[Value, Value] = {}            # padded value (old) -> padded value (new)
        self.packed: dict[Value, tuple[Value, Layout]] = {}  # old value -> packed value, layout
        self.index: Optional[tuple] = None
        self.gathered: dict[tuple, Value] = {}  # (value, token dims) -> its packed form
        self.mixing: list[Node] = []            # ops that read a packed value back in the padded layout
        self.positions: set[int] = set()        # sequence positions read in the padded layout (guarded)

    MAX_GUARDED = 4096   # positions a guard may list

    def _positions_read(self, n: Node) -> Optional[set]:
        """The sequence positions ``n`` reads of a packed value, when it is a ``select`` or
        ``slice`` of fixed positions along the sequence dim (else None)."""
        if n.op not in ("select", "slice") or n.args[0] not in self.packed or \
                any(v in self.packed for v in n.inputs[1:]):
            return None
        x = n.args[0]
        lay = self.packed[x][1]
        if lay.merged is not None or not isinstance(n.args[1], int) or n.args[1] % x.type.rank != lay.s:
            return None
        S = self.S if isinstance(self.S, int) else None
        if n.op == "select":
            i = n.args[2] if len(n.args) > 2 else None
            if not isinstance(i, int) or (i < 0 and S is None):
                return None
            i = i + S if i < 0 else i
            return {i} if S is None or i < S else None
        start, end, step = (list(n.args[2:5]) + [None, None, None])[:3]
        start, step = start or 0, step or 1
        if S is None or not all(isinstance(a, int) for a in (start, step)) or not isinstance(end, (int, type(None))):
            return None
        got = set(range(*slice(start, end, step).indices(S)))
        return got if len(got) <= self.MAX_GUARDED else None

    # --- the index and the two conversions -------------------------------------
    def idx(self):
        if self.index is None:
            outs = self.b.call("padding_index", self.padded(self.mask), symbol=self.T.expr)
            self.index = outs
        return self.index

    def padded(self, v: Value) -> Value:
        """The padded (original layout) version of an old value."""
        got = self.env.get(v)
        if got is not None:
            return got
        if v in self.packed:
            pv, lay = self.packed[v]
            out = self.unpack(pv, lay, v.type)
            self.env[v] = out
            return out
        return v  # inputs and constants

    def unpack(self, pv: Value, lay: Layout, t: TensorType) -> Value:
        dst = self.idx()[4]
        up = self.b.call("unpack", pv, dst, batch=self.B, seq=self.S)  # [B, S, F...]
        if lay.merged is not None:
            return self.b.call("reshape", up, tuple(t.shape))
        rank = t.rank
        feats = [d for d in range(rank) if d not in (lay.b, lay.s)]
        order = [lay.b, lay.s] + feats  # dims of `up` in terms of t's dims
        perm = [order.index(d) for d in range(rank)]
        return up if perm == list(range(rank)) else self.b.call("permute", up, tuple(perm))

    def pack(self, v: Value, lay: Layout) -> Value:
        """Packed [T, F...] of a padded value with token dims at ``lay``."""
        x = self.padded(v)
        rank = x.type.rank
        if lay.merged is not None:
            shape = (self.B, self.S) + tuple(x.type.shape[1:])
            x = self.b.call("reshape", x, shape) if lay.merged == 0 else None
            if x is None:
                raise _Decline("merged token dim not leading")
        elif (lay.b, lay.s) != (0, 1):
            feats = [d for d in range(rank) if d not in (lay.b, lay.s)]
            x = self.b.call("permute", x, (lay.b, lay.s, *feats))
        return self.b.call("pack", x, self.idx()[0])

    def gather_positions(self, x: Value, sdim: int, drop: list[int]) -> Value:
        """A value indexed by position ([.., 1 (batch), .., S, ..]) at each token's position."""
        pos = self.idx()[2]
        g = self.b.call("index_select", x, sdim, pos)
        rank = x.type.rank
        feats = [d for d in range(rank) if d != sdim and d not in drop]
        order = [sdim, *drop, *feats]
        g = self.b.call("permute", g, tuple(order)) if order != list(range(rank)) else g
        # NOTE: -1, never the symbol T, in shape arguments: T is only known at run time.
        return self.b.call("reshape", g, (-1,) + tuple(x.type.shape[d] for d in feats)) if drop else g

    # --- token-dim bookkeeping ----------------------------------------------------
    def is_b(self, d) -> bool:
        return dims_equal(d, self.B)

    def is_s(self, d) -> bool:
        return dims_equal(d, self.S)

    def operand_for(self, v, out_rank: int, lay: Layout):
        """An operand of a pointwise op whose output has token dims ``lay``, in packed form."""
        if not isinstance(v, Value):
            return v
        if v in self.packed:
            pv, vlay = self.packed[v]
            off = out_rank - v.type.rank
            if lay.merged is not None or vlay.merged is not None:
                if (vlay.merged or 0) + off != lay.merged:
                    raise _Decline("operands with token dims in different places")
                return pv
            if (vlay.b + off, vlay.s + off) != (lay.b, lay.s):
                raise _Decline("operands with token dims in different places")
            return pv
        t = v.type
        off = out_rank - t.rank
        tok = [d - off for d in lay.token_dims()]
        at = [t.shape[d] if 0 <= d < t.rank else 1 for d in tok]
        feats = [d for d in range(t.rank) if d not in tok]
        if lay.merged is not None:
            if at[0] == 1:
                return self._drop_dims(v, [d for d in tok if d >= 0])
            raise _Decline("a padded operand of a merged-token op")
        b_at, s_at = at
        if b_at == 1 and s_at == 1:
            return self._drop_dims(v, [d for d in tok if d >= 0])
        if b_at != 1 and s_at != 1 and self.is_b(b_at) and self.is_s(s_at) and tok[0] >= 0:
            return self.pack(v, Layout(b=tok[0], s=tok[1]))
        if b_at == 1 and self.is_s(s_at) and tok[1] >= 0:
            key = (v, tok[1], tok[0])
            if key not in self.gathered:
                self.gathered[key] = self.gather_positions(self.padded(v), tok[1], [tok[0]] if tok[0] >= 0 else [])
            return self.gathered[key]
        raise _Decline(f"operand {t} does not broadcast over tokens")

    def _drop_dims(self, v: Value, dims: list[int]) -> Value:
        x = self.padded(v)
        if not dims:
            return x
        shape = tuple(d for k, d in enumerate(x.type.shape) if k not in dims)
        return self.b.call("reshape", x, (1,) + shape) if shape else self.b.call("reshape", x, (1,))

    # --- ops ------------------------------------------------------------------------
    def try_pack(self, n: Node) -> Optional[tuple[list[Value], list[Layout]]]:
        """Packed outputs of ``n`` (with their layouts), or None to run it padded."""
        ins = n.inputs
        has_packed = any(v in self.packed for v in ins)
        if n.op == "embedding":
            ids = n.args[1]
            if ids in self.packed:
                pv, lay = self.packed[ids]
            elif ids.type.rank == 2 and self.is_b(ids.type.shape[0]) and self.is_s(ids.type.shape[1]):
                pv, lay = self.pack(ids, Layout(0, 1)), Layout(0, 1)
            else:
                return None
            out = self.b.call("embedding", self.padded(n.args[0]), pv, *n.args[2:], overload=n.overload)
            return [out], [Layout(lay.b, lay.s, lay.merged)]
        if not has_packed:
            return None
        cat = get_op(n.op).category
        if n.op in ("attention", "sdpa"):
            return self._attention(n)
        if cat == Category.POINTWISE:
            return self._pointwise(n)
        if n.op in REDUCTIONS:
            return self._reduction(n)
        if n.op == "reshape":
            return self._reshape(n)
        if n.op == "permute":
            return self._permute(n)
        if n.op in ("mm", "addmm"):
            return self._gemm(n)
        if n.op in ("slice", "select"):
            return self._slice(n)
        if n.op in ("split", "split_with_sizes"):
            return self._split(n)
        if n.op == "cat":
            return self._cat(n)
        if n.op == "expand":
            return self._expand(n)
        return None

    def _out_layout(self, n: Node) -> Layout:
        r = n.type.rank
        lays = set()
        for v in n.inputs:
            if v in self.packed:
                vl = self.packed[v][1]
                off = r - v.type.rank
                lays.add(Layout(merged=vl.merged + off) if vl.merged is not None else Layout(vl.b + off, vl.s + off))
        if len(lays) != 1:
            raise _Decline(f"{n.op}: packed operands with different token layouts")
        return lays.pop()

    def _pointwise(self, n: Node):
        lay = self._out_layout(n)
        r = n.type.rank
        args = map_values(n.args, lambda v: self.operand_for(v, r, lay))
        kwargs = map_values(n.kwargs, lambda v: self.operand_for(v, r, lay))
        out = self.b.call(n.op, *args, overload=n.overload, **dict(kwargs))
        return [out], [lay]

    def _feature_dim(self, lay: Layout, d: int) -> int:
        """Index in the packed value of the padded value's dim ``d`` (not a token dim)."""
        if d in lay.token_dims():
            raise _Decline("an op along a token dimension")
        return 1 + sum(1 for k in range(d) if k not in lay.token_dims())

    def _reduction(self, n: Node):
        x = n.args[0]
        pv, lay = self.packed[x]
        rank = x.type.rank
        if n.op in ("_softmax", "_log_softmax"):
            d = self._feature_dim(lay, n.args[1] % rank)
            return [self.b.call(n.op, pv, d, *n.args[2:], overload=n.overload)], [lay]
        dims = n.args[1] if len(n.args) > 1 else n.attr("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if not dims:
            return None
        nd = tuple(self._feature_dim(lay, d % rank) for d in dims)
        outs = self.b.call(n.op, pv, nd, *n.args[2:], overload=n.overload, **n.kw)
        outs = outs if isinstance(outs, tuple) else (outs,)
        keep = n.types[0].rank == rank
        olay = lay if keep else self._reduced_layout(lay, [d % rank for d in dims])
        return list(outs), [olay] * len(outs)

    @staticmethod
    def _reduced_layout(lay: Layout, dims: list[int]) -> Layout:
        def shift(k):
            return k - sum(1 for d in dims if d < k)
        if lay.merged is not None:
            return Layout(merged=shift(lay.merged))
        return Layout(shift(lay.b), shift(lay.s))

    def _reshape(self, n: Node):
        """Reshapes that regroup feature dims, merge adjacent (b, s) into one
        dim or split a merged one; token dims themselves never mix with features."""
        x = n.args[0]
        pv, lay = self.packed[x]
        src, dst = list(x.type.shape), list(n.type.shape)
        blocks = _blocks(src, dst)
        if blocks is None:
            raise _Decline("reshape this pass cannot factor")
        tok = lay.token_dims()
        new_b = new_s = new_m = None
        for ins, outs in blocks:
            mine = [d for d in ins if d in tok]
            if not mine:
                continue
            real_in = [d for d in ins if src[d] != 1 or d in tok]
            real_out = [d for d in outs if dst[d] != 1]
            if lay.merged is not None:  # [.., B*S, ..] -> [.., B*S, ..] or [.., B, S, ..]
                if real_in != [lay.merged]:
                    raise _Decline("reshape mixing the merged token dim with features")
                unit = [d for d in outs if dst[d] == 1 and d < real_out[0]] if real_out else []
                if len(real_out) == 1 and unit and self.is_b(1):
                    # NOTE: a batch of one: [S] -> [1, S] splits the merged dim into (b, s)
                    new_b, new_s = unit[-1], real_out[0]
                elif len(real_out) == 1:
                    new_m = real_out[0]
                elif len(real_out) == 2 and self.is_b(dst[real_out[0]]) and self.is_s(dst[real_out[1]]):
                    new_b, new_s = real_out
                else:
                    raise _Decline("reshape splitting the merged token dim oddly")
            elif real_in == [lay.b, lay.s] and len(real_out) == 1:
                new_m = real_out[0]
            elif real_in == [lay.b, lay.s] and len(real_out) == 2:
                new_b, new_s = real_out
            elif len(real_in) == 1 and (len(real_out) == 1 or (not real_out and len(outs) == 1)):
                tgt = real_out[0] if real_out else outs[0]  # a batch dim of one maps to a unit dim
                if real_in[0] == lay.b:
                    new_b = tgt
                else:
                    new_s = tgt
            else:
                raise _Decline("reshape mixing token and feature dims")
        new = Layout(merged=new_m) if new_m is not None else Layout(new_b, new_s)
        if None in new.token_dims():
            raise _Decline("reshape that loses a token dim")
        rest = tuple(d for k, d in enumerate(dst) if k not in new.token_dims())
        out = self.b.call("reshape", pv, (-1,) + rest)
        return [out], [new]

    def _expand(self, n: Node):
        x = n.args[0]
        pv, lay = self.packed[x]
        sizes = list(n.args[1])
        off = len(sizes) - x.type.rank
        tok = [d + off for d in lay.token_dims()]
        for d in tok:
            if sizes[d] != -1 and not dims_equal(sizes[d], n.type.shape[d]):
                raise _Decline("expand along a token dim")
        if off:
            raise _Decline("expand adding leading dims")
        rest = tuple(sz for k, sz in enumerate(sizes) if k not in tok)
        return [self.b.call("expand", pv, (-1,) + rest)], [lay]

    def _permute(self, n: Node):
        x = n.args[0]
        pv, lay = self.packed[x]
        perm = [p % x.type.rank for p in n.args[1]]
        if lay.merged is not None:
            new = Layout(merged=perm.index(lay.merged))
        else:
            new = Layout(perm.index(lay.b), perm.index(lay.s))
        src_feats = [d for d in range(x.type.rank) if d not in lay.token_dims()]
        dst_feats = [d for d in perm if d not in lay.token_dims()]
        fperm = [0] + [1 + src_feats.index(d) for d in dst_feats]
        out = pv if fperm == list(range(len(fperm))) else self.b.call("permute", pv, tuple(fperm))
        return [out], [new]

    def _gemm(self, n: Node):
        a = n.args[0] if n.op == "mm" else n.args[1]
        if a not in self.packed or any(v in self.packed for v in n.inputs if v is not a):
            raise _Decline("a GEMM whose weight is token-wise")
        pv, lay = self.packed[a]
        if lay.merged != 0:
            raise _Decline("a GEMM over a non-merged token layout")
        args = (pv,) + tuple(self.padded(v) for v in n.args[1:]) if n.op == "mm" else \
            (self.padded(n.args[0]), pv) + tuple(self.padded(v) for v in n.args[2:])
        return [self.b.call(n.op, *args, overload=n.overload, **n.kw)], [Layout(merged=0)]

    def _slice(self, n: Node):
        x = n.args[0]
        pv, lay = self.packed[x]
        d = n.args[1] % x.type.rank
        fd = self._feature_dim(lay, d)
        out = self.b.call(n.op, pv, fd, *n.args[2:], overload=n.overload)
        if n.op == "select":
            return [out], [self._reduced_layout(lay, [d])]
        return [out], [lay]

    def _split(self, n: Node):
        x = n.args[0]
        pv, lay = self.packed[x]
        d = (n.args[2] if len(n.args) > 2 else n.attr("dim", 0)) % x.type.rank
        outs = self.b.call(n.op, pv, n.args[1], self._feature_dim(lay, d), overload=n.overload)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return list(outs), [lay] * len(outs)

    def _cat(self, n: Node):
        xs = n.args[0]
        lay = self._out_layout(n)
        r = n.type.rank
        d = (n.args[1] if len(n.args) > 1 else 0) % r
        parts = tuple(self.operand_for(v, r, lay) for v in xs)
        return [self.b.call("cat", parts, self._feature_dim(lay, d), overload=n.overload)], [lay]

    def _attention(self, n: Node):
        cls = self.attn.get(n)
        if cls is None:
            raise _Decline(f"{n.op} whose mask is not a padding mask")
        q, k, v = n.args[:3]
        if not all(x in self.packed for x in (q, k, v)):
            raise _Decline("attention on values that are not token-wise")
        packed = []
        for x in (q, k, v):
            pv, lay = self.packed[x]
            if lay.merged is not None or (lay.b, lay.s) != (0, 2):
                raise _Decline("attention operands not in [B, H, S, D] token layout")
            packed.append(pv)  # [T, H, D]
        if n.op == "sdpa":
            scale = n.attr("scale")
            scale = scale if scale is not None else 1.0 / float(q.type.shape[-1]) ** 0.5
            causal = "bottom_right" if (n.attr("is_causal") or cls.causal != "none") else "none"
            groups = _div(q.type.shape[1], k.type.shape[1])
            window, slopes, softcap = cls.window, None, None
        else:
            if n.attr("slopes") is not None or len(n.args) > 4 and n.args[4] is not None:
                raise _Decline("ALiBi attention (positions of packed tokens differ with holes)")
            scale, groups = n.attr("scale"), n.attr("groups", 1)
            causal = "bottom_right" if (n.attr("causal", "none") != "none" or cls.causal != "none") else "none"
            window = n.attr("window") if n.attr("window") is not None else cls.window
            slopes, softcap = None, n.attr("softcap")
        cu = self.idx()[1]
        # NOTE: a window counts positions in the padded row (a mask may have holes, and
        # the dense model's window counts those too): the packed tokens' columns.
        positions = self.idx()[2] if window is not None else None
        out = self.b.call("attention_varlen", *packed, cu, cu, slopes, positions, scale=scale,
                          max_seqlen_q=self.S, max_seqlen_k=self.S, causal=causal, window=window, groups=groups,
                          **({"softcap": softcap} if softcap else {}))
        return [out], [Layout(0, 2)]

    # --- driver -----------------------------------------------------------------------
    def run(self) -> Graph:
        for n in self.g.nodes:
            if n.op == "input":
                self.b.inputs.append(n)
                self.b.append(n)
                continue
            if n.op == "constant":
                self.b.append(n)
                continue
            try:
                res = self.try_pack(n)
            except _Decline as e:
                log.debug("padding elimination: %s %s runs padded: %s", n.op, [str(v.type) for v in n.inputs], e)
                res = None
            if res is not None:
                outs, lays = res
                for i, (o, lay) in enumerate(zip(outs, lays)):
                    self.packed[n.out(i)] = (o, lay)
                continue
            if n not in self.attn and any(v in self.packed for v in n.inputs):
                # NOTE: an op that mixes tokens (a pooler's h[:, 0], a mean over the sequence) would
                # read zeros at padded positions where the eager model has values; only a
                # padding-masked attention (which never lets a valid query see them) may. Reads
                # of fixed positions are guarded at run time (padding_index's valid_positions).
                reads = self._positions_read(n)
                if reads is None:
                    self.mixing.append(n)
                else:
                    self.positions |= reads
            m = self.b.append(n.with_args(map_values(n.args, self.padded), map_values(n.kwargs, self.padded)))
            if m is not n:
                for i in range(len(n.types)):
                    self.env[n.out(i)] = m.out(i)
        outputs = tuple(self.padded(v) for v in self.g.outputs)

        g = replace(self.g, nodes=tuple(self.b.nodes), inputs=tuple(self.b.inputs), outputs=outputs,
                    constants=self.b.constants,
                    sym_bounds=self.g.sym_bounds + ((self.T.expr, dim_mul(self.B, self.S)),))
        return eliminate_dead(g)


def _blocks(src: list, dst: list):
    """Pair up runs of dims with equal products: [([src dims], [dst dims]), ...]."""
    out, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        ins, outs = [], []
        pi: Dim = 1
        po: Dim = 1
        if i < len(src):
            ins.append(i)
            pi = src[i]
            i += 1
        if j < len(dst):
            outs.append(j)
            po = dst[j]
            j += 1
        while not dims_equal(pi, po):
            if _smaller(pi, po) and i < len(src):
                ins.append(i)
                pi = dim_mul(pi, src[i])
                i += 1
            elif j < len(dst):
                outs.append(j)
                po = dim_mul(po, dst[j])
                j += 1
            elif i < len(src):
                ins.append(i)
                pi = dim_mul(pi, src[i])
                i += 1
            else:
                return None
        # trailing size-1 dims join the current block
        while i < len(src) and src[i] == 1 and (j >= len(dst) or dst[j] != 1):
            ins.append(i)
            i += 1
        while j < len(dst) and dst[j] == 1 and (i >= len(src) or src[i] != 1):
            outs.append(j)
            j += 1
        out.append((ins, outs))
    return out


def _smaller(a, b) -> bool:
    return _le(a, b) and not dims_equal(a, b)


def _prod(dims):
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def _div(a, b) -> int:
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return a // b
    raise _Decline("head counts that do not divide")


def _fresh_symbol(graph: Graph) -> str:
    used = set(graph.sym_inputs) | {s for s, _ in graph.sym_bounds}
    for n in graph.nodes:
        for t in n.types:
            used |= t.symbols
    i = 0
    while f"t{i}" in used:
        i += 1
    return f"t{i}"


def _scores(n: Node) -> tuple:
    """(Sq, Sk) of an attention node's scores."""
    return n.args[0].type.shape[-2], n.args[1].type.shape[-2]


def _attention_masks(graph: Graph, pads: set):
    """Every attention-like node and the class of its mask (None: not provable)."""
    out = {}
    for n in graph.compute_nodes:
        if n.op == "sdpa":
            m = n.attr("attn_mask")
            if m is None:
                out[n] = None
                continue
            out[n] = classify(m, "bool" if m.type.dtype == torch.bool else "additive", graph, pads,
                              _scores(n))
        elif n.op == "attention":
            m = n.args[3] if len(n.args) > 3 else n.attr("mask")
            kind = n.attr("mask_kind", "none")
            out[n] = classify(m, kind, graph, pads, _scores(n)) if m is not None else None
        elif get_op(n.op).category == Category.ATTENTION:
            out[n] = None  # attention braze has not specialised: its mask is unknown
    return out


def find_padding_mask(graph: Graph) -> tuple[Optional[Value], dict, str]:
    """The padding mask input, the attention nodes' mask classes, or why not."""
    candidates = [n.out() for n in graph.inputs if n.type.rank == 2 and not n.type.dtype.is_floating_point]
    if not candidates:
        return None, {}, "no [batch, seq] integer or bool input to use as a padding mask"
    attn = _attention_masks(graph, set(candidates))
    if not attn:
        return None, {}, "no attention in the graph: padding changes nothing it computes"
    sources = {c.padding for c in attn.values() if c is not None and c.padding is not None}
    if len(sources) != 1:
        bad = [n.op for n, c in attn.items() if c is None]
        why = f"attention masks not provably padding masks ({', '.join(bad)})" if bad else \
            "no attention mask is derived from a padding input"
        return None, attn, why
    if any(c is None or c.padding is None for c in attn.values()):
        return None, attn, "an attention whose mask is not a padding mask of the same input"
    return sources.pop(), attn, ""


def eliminate_padding(graph: Graph, ctx=None) -> Graph:
    ctx = PassContext.of(ctx)
    if "eliminate_padding" in ctx.option("disable", ()):
        return graph
    mask, attn, why = find_padding_mask(graph)
    if mask is None:
        ctx.decline("eliminate_padding", RULE, why, graph)
        return graph
    packer = _Packer(graph, mask, attn)
    out = packer.run()
    why = ""
    if packer.mixing:
        n = packer.mixing[0]
        why = f"{n.op} ({n.name}) reads token values in the padded layout; it would see zeros at padding " \
              "positions where the eager model computes values"
    elif packer.positions and graph.writes:
        why = f"the graph reads sequence positions {sorted(packer.positions)[:8]} in the padded layout (guarded " \
              "at run time, the graph rerun unpacked) and writes its inputs in place (a rerun would write twice)"
    if why:
        ctx.decline("eliminate_padding", RULE, why, graph)
        return graph
    if packer.positions:
        out = _guard_positions(out, tuple(sorted(packer.positions)))
    if not any(n.op == "attention_varlen" for n in out.compute_nodes):
        ctx.decline("eliminate_padding", RULE, "no attention could be made variable-length", graph)
        return graph
    return out


def _guard_positions(graph: Graph, positions: tuple) -> Graph:
    """``graph`` with its ``padding_index`` raising :class:`~braze.ir.padding.PaddedPositionRead`
    when one of ``positions`` is padding in some row (the runtime then runs the graph unpacked)."""
    def rule(n, b):
        if n.op != "padding_index":
            return None
        return b.call("padding_index", *n.args, **dict(n.kwargs, valid_positions=positions))

    return rewrite(graph, rule)
