"""The ``attention`` op on the CPU, as one TVM kernel.

Semantics: ``braze.ir.attention`` (causal top_left / bottom_right, sliding
window, GQA groups, bool or additive mask broadcast to [B, Hq, Sq, Sk],
scale; rows without a visible key give zeros). ALiBi slopes are declined.

Structure: the output rows are split in blocks of ``bq`` queries; one
parallel loop runs over (batch, head, query block), and inside it, for that
block only: K of the head transposed into a ``[D, Sk]`` panel, the scores
``Q K^T`` (a register-blocked micro-GEMM vectorised over keys), the masked
row maximum, the probabilities, their row sum, and ``P V`` (vectorised over
the value dim), normalised on the way out. The score tile is ``bq x Sk``
floats, so it stays in L1/L2 for the sequence lengths CPUs serve.
Causal blocks are computed whole and masked (no block skipping).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import tvm
from tvm import s_tir, te, tirx

from braze.autotune.space import Config, Constraint, DeviceInfo, Knob, Space, device_info, pow2_bucket
from braze.compiler.codegen.tvm.kernel import TVMKernel, _sym_sources
from braze.compiler.codegen.tvm.lazy import Ctx, Lazy, convert, store
from braze.compiler.codegen.tvm.lower import Lowered, LowerOptions, Nest, OutSpec, _reduce_last, make_inputs
from braze.compiler.codegen.tvm.pointwise import broadcast_reader
from braze.compiler.codegen.tvm.schedule_cpu import _lanes, _vectorize_lanes
from braze.autotune.contract import structural_key
from braze.ir import Node
from braze.ir.types import DTYPE_NAMES, eval_dim
from braze.ir.attention import attention_reference


def _default(problem, device: DeviceInfo) -> dict:
    lanes = _lanes(problem)
    sq = problem.get("Sq", 128)
    bq = 16 if sq >= 16 else 8
    return {"bq": bq, "vec": lanes, "parallel": device.cores > 1}


ATTENTION_SPACE = Space(
    (Knob("bq", (4, 8, 16, 32, 64)), Knob("vec", (8, 16, 32)), Knob("parallel", (False, True))),
    (Constraint("query block x vector fits the registers", lambda c, p, d: c["bq"] * c["vec"] <= 32 * _lanes(p)),),
    _default,
)


def attention_args(node: Node):
    """(q, k, v, mask, slopes) Values of an attention node, wherever they were passed."""
    args, kw = node.args, node.kw
    q, k, v = args[0], args[1], args[2]
    mask = args[3] if len(args) > 3 else kw.get("mask")
    slopes = args[4] if len(args) > 4 else kw.get("slopes")
    return q, k, v, mask, slopes


def lower_attention(node: Node, strided: frozenset, bq: int, lanes: int) -> Lowered:
    kw = node.kw
    q_v, k_v, v_v, mask_v, _ = attention_args(node)
    types = [q_v.type, k_v.type, v_v.type] + ([mask_v.type] if mask_v is not None else [])
    ctx = Ctx("int64", "llvm")
    phs, lz, sparams, svars = make_inputs(ctx, types, strided)
    q, k, v = lz[0], lz[1], lz[2]
    mask = lz[3] if mask_v is not None else None
    mask_kind = kw.get("mask_kind", "none")
    causal, window = kw.get("causal", "none"), kw.get("window")
    groups, scale = int(kw.get("groups", 1)), float(kw["scale"])
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    Dv = v.shape[3]
    out_t = node.types[0]
    f32 = "float32" if q.dtype != torch.float64 else "float64"
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    G = ctx.idx(groups)
    nest = Nest("attention", tuple(out_t.shape), [], [])

    def kv_head(h):
        return tirx.floordiv(h, G) if groups > 1 else h

    KT = te.compute((B, Hkv, D, Sk), lambda b, h, d, j: convert(k((b, h, j, d)), k.dtype, acc_dtype), name="packK")
    rd = te.reduce_axis((ctx.idx(0), D), name="d")
    QK = te.compute((B, Hq, Sq, Sk), lambda b, h, i, j: te.sum(
        convert(q((b, h, i, rd)), q.dtype, acc_dtype) * KT(b, kv_head(h), rd, j), axis=rd), name="qk")
    mask_rd = broadcast_reader(mask, tuple(out_t.shape[:3]) + (k_v.type.shape[2],)) if mask is not None else None
    neg_inf = tirx.const(-math.inf, f32)

    def score(idx):
        b, h, i, j = idx
        s = QK(b, h, i, j) * tirx.const(scale, f32)
        conds = []
        if mask_kind == "additive":
            s = s + convert(mask_rd(idx), mask.dtype, acc_dtype)
        elif mask_kind == "bool":
            conds.append(convert(mask_rd(idx), mask.dtype, torch.bool))
        pos = i + (Sk - Sq) if causal == "bottom_right" else i
        if causal != "none":
            conds.append(j <= pos)
        if window is not None:
            conds.append(pos - j < ctx.idx(int(window)))
        if not conds:
            return s
        ok = conds[0]
        for c in conds[1:]:
            ok = tirx.And(ok, c)
        return tirx.Select(ok, s, neg_inf)

    from braze.compiler.codegen.tvm.fastmath import Math  # lazy: imports tvm on first use

    m = Math("llvm")
    S = Lazy((B, Hq, Sq, Sk), acc_dtype, score)
    Ms = _reduce_last(ctx, S, "max", "rowmax", None, lanes)

    def mc(b, h, i):
        mx = Ms[-1](b, h, i)
        return tirx.Select(tirx.EQ(mx, neg_inf), tirx.const(0.0, f32), mx)

    P = te.compute((B, Hq, Sq, Sk), lambda b, h, i, j: m.exp(score((b, h, i, j)) - mc(b, h, i)), name="probs")
    Ls = _reduce_last(ctx, Lazy((B, Hq, Sq, Sk), acc_dtype, lambda idx: P(*idx)), "sum", "rowsum", None, lanes)
    rj = te.reduce_axis((ctx.idx(0), Sk), name="j")
    O = te.compute((B, Hq, Sq, Dv), lambda b, h, i, e: te.sum(
        P(b, h, i, rj) * convert(v((b, kv_head(h), rj, e)), v.dtype, acc_dtype), axis=rj), name="pv")
    L = Ls[-1]

    def final(b, h, i, e):
        den = L(b, h, i)
        val = tirx.Select(den > tirx.const(0.0, f32), O(b, h, i, e) / den, tirx.const(0.0, f32))
        return store(convert(val, acc_dtype, out_t.dtype), out_t.dtype, "llvm")

    out = te.compute((B, Hq, Sq, Dv), final, name="out")
    nest.anchor, nest.block_names, nest.out_indices = [out], ["out"], [0]
    nest.inter = [KT, QK] + Ms + [P] + Ls + [O]
    nest.reductions = [QK] + Ms + Ls + [O]
    sym_names = sorted(ctx.syms)
    func = te.create_prim_func(phs + [out] + [ctx.syms[s] for s in sym_names] + svars)
    spec = OutSpec(0, tuple(out_t.shape), tuple(out_t.shape), out_t.dtype)
    return Lowered("attention", func, phs, [spec], [nest], sym_names, sparams,
                   LowerOptions(strided=strided, lanes=lanes))


def _register_tile(sch, block, vec: int) -> None:
    """A block whose last loops are (rows, columns, reduction) as a rows x vec
    register tile per column chunk, accumulated over the reduction."""
    i, j, r = sch.get_loops(block)[-3:]
    jo, jv = sch.split(j, [None, vec])
    sch.reorder(jo, r, i, jv)
    sch.vectorize(jv)
    init = sch.decompose_reduction(block, r)
    sch.vectorize(sch.get_loops(init)[-1])


def schedule_attention(low: Lowered, cfg: dict) -> tvm.IRModule:
    sch = s_tir.Schedule(tvm.IRModule({"main": low.func}))
    nest = low.nests[0]
    bq, vec = cfg["bq"], cfg["vec"]
    out = sch.get_sblock("out")
    b, h, i, e = sch.get_loops(out)
    io, ii = sch.split(i, [None, bq])
    sch.reorder(b, h, io, ii, e)
    r = sch.fuse(b, h, io)
    for T in reversed(nest.inter):
        sch.compute_at(sch.get_sblock(T.op.name), r, preserve_unit_loops=True)
    if cfg["parallel"]:
        sch.parallel(r)
    # K^T panel of the head: contiguous reads of K rows
    kt = sch.get_sblock("packK")
    kl = sch.get_loops(kt)
    sch.reorder(kl[-1], kl[-2])
    # scores: for each key chunk, a bq x vec register tile accumulated over d
    _register_tile(sch, sch.get_sblock("qk"), vec)
    for T in nest.inter:
        if T.op.name.endswith("_lanes"):
            _vectorize_lanes(sch, sch.get_sblock(T.op.name))
        elif T.op.name.endswith("_tail"):  # see schedule_cpu._schedule_rows
            blk = sch.get_sblock(T.op.name)
            sch.decompose_reduction(blk, sch.get_loops(blk)[-1])
    pr = sch.get_sblock("probs")
    _, pv_ = sch.split(sch.get_loops(pr)[-1], [None, vec])
    sch.vectorize(pv_)
    # P V: for each value chunk, a bq x vec register tile accumulated over keys
    _register_tile(sch, sch.get_sblock("pv"), vec)
    _, ov = sch.split(e, [None, vec])
    sch.vectorize(ov)
    return sch.mod


@dataclass
class TVMAttentionKernel(TVMKernel):
    """The CPU attention kernel of one ``attention`` node."""

    kind: str = "attention"

    def __post_init__(self):
        q, k, v, mask, _ = attention_args(self.node)
        self.sub = None
        self.name = self.name or f"tvm_attention_{self.node.kw.get('causal', 'none')}"
        if self.space is None:
            self.space = ATTENTION_SPACE
        self.input_types = [q.type, k.type, v.type] + ([mask.type] if mask is not None else [])
        self._sym_sources = _sym_sources(self.input_types)

    def key(self) -> str:
        return structural_key(self.node, "tvm-attn-1|cpu")

    def problem(self, env: Mapping[str, int]) -> dict:
        q, k = self.input_types[0], self.input_types[1]

        def dim(d):
            return d if isinstance(d, int) else pow2_bucket(eval_dim(d, env))
        return {"BH": dim(q.shape[0]) * dim(q.shape[1]), "Sq": dim(q.shape[2]), "Sk": dim(k.shape[2]),
                "D": dim(q.shape[3]), "dtype": DTYPE_NAMES.get(q.dtype, str(q.dtype))}

    @property
    def source(self) -> str:
        if "default" not in self._sources:
            env = {s: 128 for t in self.input_types for s in t.symbols}
            cfg = self.space.default_config(self.problem(env), device_info("cpu"))
            self._sources["default"] = self.scheduled(cfg).script()
        return self._sources["default"]

    def lowered(self, config: Config, strided: frozenset = frozenset()):
        return lower_attention(self.node, strided, int(config["bq"]), int(config["vec"]))

    def _reference(self):
        kw = {k: v for k, v in self.node.kw.items() if k not in ("mask", "slopes")}
        has_mask = attention_args(self.node)[3] is not None

        def run(q, k, v, *rest):
            return attention_reference(q, k, v, rest[0] if has_mask else None, **kw)
        return run

    def schedule_module(self, low, config: Config):
        return schedule_attention(low, config)
