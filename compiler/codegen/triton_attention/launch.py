"""Host side of the attention template: checks, layouts, grids, launches.

:func:`attention_dense` runs the ``attention`` op (q ``[B, Hq, Sq, D]``,
k/v ``[B, Hkv, Sk, D]``, any strides), :func:`attention_varlen` the packed
``attention_varlen`` op (q ``[Tq, Hq, D]``, k/v ``[Tk, Hkv, D]``). A config
(see ``space.py``) names BLOCK_M, BLOCK_N, num_warps, num_stages, PACK_GQA
and SPLITS; SPLITS > 1 runs split-KV and the combine kernel, or with
FUSE_COMBINE the merge inside the last chunk's program (:func:`_counts`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from braze.autotune import compile_only
from braze.compiler.codegen import pdl
from braze.compiler.codegen.kernel_modules import KernelModule, interpreting
from braze.compiler.codegen.triton_attention import template as _template_mod
from braze.compiler.codegen.calls import ACTIVE

log = logging.getLogger("braze.codegen.attention")

LOG2E = 1.4426950408889634
CAUSAL_CODES = {"none": 0, "top_left": 1, "bottom_right": 2}
MASK_CODES = {"none": 0, "bool": 1, "additive": 2}
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
MAX_GRID_YZ = 65535


_TEMPLATE = KernelModule(_template_mod, "attention_fwd_kernel")


def _template(interp: Optional[bool] = None):
    """The template module as ``TRITON_INTERPRET`` (or ``interp``) wants it."""
    return _TEMPLATE.get(interp)


def pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def check_device(*ts: torch.Tensor) -> None:
    for t in ts:
        if t.device.type == "cuda":
            continue
        if t.device.type == "cpu" and (interpreting() or compile_only.active()):
            continue
        raise ValueError(f"braze triton attention: tensor on {t.device} (needs CUDA, or CPU with TRITON_INTERPRET=1)")


def _check_common(q, k, v, groups: int, scale: float, window: Optional[int], hq: int, hkv: int) -> None:
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"braze triton attention: dtypes q {q.dtype}, k {k.dtype}, v {v.dtype}; "
                         f"expected one of {DTYPES}, all equal")
    if q.shape[-1] != k.shape[-1] or q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"braze triton attention: head dims q {q.shape[-1]}, k {k.shape[-1]}, v {v.shape[-1]} "
                         f"(q and k must agree, at most {MAX_HEAD_DIM})")
    if groups < 1 or hq != groups * hkv:
        raise ValueError(f"braze triton attention: {hq} query heads != groups {groups} x {hkv} K/V heads")
    if not scale > 0:
        raise ValueError(f"braze triton attention: scale {scale} must be positive")
    if window is not None and window < 1:
        raise ValueError(f"braze triton attention: window {window} must be >= 1")


def _mask4(mask: torch.Tensor, mask_kind: str, shape: tuple) -> torch.Tensor:
    """The mask as a 4-d broadcast view of ``shape`` (stride 0 where broadcast), bool as uint8."""
    if mask.dim() > 4:
        raise ValueError(f"braze triton attention: mask of rank {mask.dim()} (at most 4)")
    m = mask[(None,) * (4 - mask.dim())]
    try:
        m = m.expand(*shape)
    except RuntimeError:
        raise ValueError(f"braze triton attention: mask {tuple(mask.shape)} does not broadcast to {shape}") from None
    if mask_kind == "bool":
        if m.dtype != torch.bool:
            raise ValueError(f"braze triton attention: mask_kind 'bool' with a {m.dtype} mask")
        m = m.view(torch.uint8)
    elif not m.dtype.is_floating_point:
        raise ValueError(f"braze triton attention: mask_kind 'additive' with a {m.dtype} mask")
    return m


def _dot_prec(dtype: torch.dtype) -> str:
    # NOTE: float32 inputs get IEEE products (tf32 would miss the 1e-5 tolerance).
    return "ieee" if dtype == torch.float32 else "tf32"


def _dot_f32(dtype: torch.dtype) -> bool:
    # NOTE: triton 3.8's interpreter multiplies bf16 blocks as raw integers; upcast there only.
    return interpreting() and dtype == torch.bfloat16


# (config, specialisation) -> the config that replaced it after the GPU compiler refused it.
_FALLBACK: dict = {}


def safe_config(config: Mapping) -> dict:
    """A conservative variant of ``config``: smaller K/V tiles, two stages, no TMA."""
    return dict(config, BLOCK_N=min(int(config["BLOCK_N"]), 64), num_stages=min(int(config["num_stages"]), 2),
                TMA=False)


def _with_fallback(fn, config: Mapping, spec_key: tuple, *args, **kwargs):
    """Run ``fn(..., config=config)``; if the GPU compiler refuses that config (shared
    memory, a ptxas failure), run and remember :func:`safe_config` instead."""
    from triton.runtime.errors import OutOfResources, PTXASError

    key = (tuple(sorted(config.items())), spec_key)
    cfg = _FALLBACK.get(key, config)
    try:
        return fn(*args, config=cfg, **kwargs)
    except (OutOfResources, PTXASError) as e:
        safe = safe_config(cfg)
        if safe == dict(cfg):
            raise
        log.warning("braze attention: config %s refused by the GPU compiler (%s); using %s",
                    dict(cfg), type(e).__name__, safe)
        _FALLBACK[key] = safe
        return fn(*args, config=safe, **kwargs)


@dataclass
class _DensePlan:
    """Everything about one launch that depends only on shapes, strides, dtypes,
    attributes and config (built once; a call then allocates and launches)."""

    out_shape: tuple
    dtype: torch.dtype
    device: torch.device
    trivial: str                  # "" | "empty" (no rows) | "zeros" (no keys)
    grid: tuple = ()
    ints: tuple = ()              # every integer argument of the kernel, in order
    consts: dict = field(default_factory=dict)
    scale2: float = 0.0
    cap2: float = 0.0             # softcap * log2(e) (0: no soft cap)
    splits: int = 1
    ws_shape: tuple = ()
    lse_shape: tuple = ()
    combine_grid: tuple = ()
    combine_ints: tuple = ()
    combine_consts: dict = field(default_factory=dict)
    fuse_combine: bool = False    # the last chunk merges (no combine launch)
    tma_blocks: Optional[tuple] = None
    summary: Optional["_SummaryPlan"] = None   # the mask's block summary (MASK_SKIP)
    slopes_cast: bool = False
    config: dict = field(default_factory=dict)
    interp: bool = False          # NOTE: TRITON_INTERPRET as read when planned (tensors keep their device)
    pdl: bool = False             # programmatic dependent launch (compiler/codegen/pdl.py), as read when planned


_PLANS: dict = {}
MAX_PLANS = 1024


def attention_dense(q, k, v, mask=None, slopes=None, *, scale: float, causal: str = "none",
                    window: Optional[int] = None, groups: int = 1, mask_kind: str = "none",
                    softcap: Optional[float] = None, config: Mapping) -> torch.Tensor:
    """The ``attention`` op through the Triton template (see ``braze.ir.attention``).

    Launch plans are cached per (shapes, strides, dtypes, attributes, config); a
    config the GPU compiler refuses falls back to :func:`safe_config` (logged once)."""
    key = (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, k.dtype, v.dtype, q.device,
           None if mask is None else (mask.shape, mask.stride(), mask.dtype),
           None if slopes is None else (slopes.shape, slopes.dtype, slopes.is_contiguous(), slopes.device),
           scale, causal, window, groups, mask_kind, softcap, tuple(config.items()))
    plan = _PLANS.get(key)
    if plan is None:
        check_device(q, k, v)
        plan = _plan_dense(q, k, v, mask, slopes, scale, causal, window, groups, mask_kind, dict(config), softcap)
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    try:
        return _run_dense(plan, q, k, v, mask, slopes)
    except _compiler_refusals() as e:
        safe = safe_config(plan.config)
        if safe == plan.config:
            raise
        log.warning("braze attention: config %s refused by the GPU compiler (%s); using %s",
                    plan.config, type(e).__name__, safe)
        plan = _plan_dense(q, k, v, mask, slopes, scale, causal, window, groups, mask_kind, safe, softcap)
        _PLANS[key] = plan
        return _run_dense(plan, q, k, v, mask, slopes)


def _compiler_refusals() -> tuple:
    from triton.runtime.errors import OutOfResources, PTXASError

    return (OutOfResources, PTXASError)


def _plan_dense(q, k, v, mask, slopes, scale, causal, window, groups, mask_kind, config: dict,
                softcap: Optional[float] = None) -> _DensePlan:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"braze triton attention: q, k, v must be [B, H, S, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, Hq, Sq, D = q.shape
    Bk, Hkv, Sk, _ = k.shape
    Dv = v.shape[-1]
    if Bk != B or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"braze triton attention: k {tuple(k.shape)} and v {tuple(v.shape)} do not fit "
                         f"q {tuple(q.shape)}")
    _check_common(q, k, v, groups, scale, window, Hq, Hkv)
    if softcap is not None and not softcap > 0:
        raise ValueError(f"braze triton attention: softcap {softcap!r} (a positive number or None)")
    if causal not in CAUSAL_CODES or mask_kind not in MASK_CODES or (mask is None) != (mask_kind == "none"):
        raise ValueError(f"braze triton attention: causal={causal!r}, mask_kind={mask_kind!r}, "
                         f"mask {'given' if mask is not None else 'absent'}")
    base = dict(out_shape=(B, Hq, Sq, Dv), dtype=q.dtype, device=q.device, config=config, interp=interpreting(),
                pdl=pdl.enabled())
    if B * Hq * Sq == 0:
        return _DensePlan(trivial="empty", **base)
    if Sk == 0:
        return _DensePlan(trivial="zeros", **base)
    m = _mask4(mask, mask_kind, (B, Hq, Sq, Sk)) if mask is not None else None
    if slopes is not None and slopes.numel() != Hq:
        raise ValueError(f"braze triton attention: {slopes.numel()} ALiBi slopes for {Hq} heads")

    bm, bn = int(config["BLOCK_M"]), int(config["BLOCK_N"])
    pack = bool(config.get("PACK_GQA", False)) and groups > 1
    rows = Sq * groups if pack else Sq
    n_prog = B * (Hkv if pack else Hq)
    if n_prog > MAX_GRID_YZ:
        raise ValueError(f"braze triton attention: {n_prog} (batch x heads) programs exceed the grid limit")
    splits = max(1, int(config.get("SPLITS", 1)))
    chunk = triton_cdiv(triton_cdiv(Sk, splits), bn) * bn
    splits = triton_cdiv(Sk, chunk)
    o_strides = _contiguous_strides((B, Hq, Sq, Dv))
    if splits > 1:
        ws_strides = _contiguous_strides((splits, B, Hq, Sq, Dv))
        lse_strides = _contiguous_strides((splits, B, Hq, Sq))
        ko_strides = ws_strides[1:] + ws_strides[:1]
        l_strides = lse_strides[1:] + lse_strides[:1]
    else:
        ko_strides, l_strides = o_strides + (0,), (0, 0, 0, 0)
    m_strides = m.stride() if m is not None else (0, 0, 0, 0)
    bd, bdv = pow2(D), pow2(Dv)
    use_tma = bool(config.get("TMA", False)) and tma_ok(k, bd) and tma_ok(v, bdv)
    summary = _summary_plan(m, mask_kind, config, B, Sq, Sk, bm, bn, groups if pack else 1)
    ints = (*q.stride(), *k.stride(), *v.stride(), *ko_strides, *m_strides, *l_strides,
            Hq, groups, Sq, Sk, int(window or 0), summary.ssum if summary else 0)
    consts = dict(HEAD_D=D, HEAD_DV=Dv, BLOCK_D=bd, BLOCK_DV=bdv, BLOCK_M=bm, BLOCK_N=bn,
                  CAUSAL=CAUSAL_CODES[causal], HAS_WINDOW=window is not None, MASK_KIND=MASK_CODES[mask_kind],
                  HAS_ALIBI=slopes is not None, VARLEN=False, PACK_GQA=pack, SPLIT=splits > 1,
                  DOT_PREC=_dot_prec(q.dtype), DOT_F32=_dot_f32(q.dtype), USE_TMA=use_tma,
                  HAS_SUMMARY=summary is not None, HAS_SOFTCAP=bool(softcap), num_warps=int(config["num_warps"]),
                  num_stages=int(config["num_stages"]))
    # NOTE: soft-capped scores in log2 units: softcap * log2(e) * tanh(qk * scale / softcap)
    scale2 = float(scale) / float(softcap) if softcap else float(scale) * LOG2E
    plan = _DensePlan(trivial="", grid=(triton_cdiv(rows, bm), n_prog, splits), ints=ints, consts=consts,
                      summary=summary, scale2=scale2, cap2=float(softcap) * LOG2E if softcap else 0.0, splits=splits,
                      tma_blocks=([1, 1, bn, bd], [1, 1, bn, bdv]) if use_tma else None,
                      slopes_cast=slopes is not None and (slopes.dtype != torch.float32 or not slopes.is_contiguous()
                                                          or slopes.device != q.device), **base)
    if splits > 1:
        plan.ws_shape, plan.lse_shape = (splits, B, Hq, Sq, Dv), (splits, B, Hq, Sq)
        plan.combine_grid = (B * Hq * Sq,)
        plan.combine_ints = (Hq, Sq, splits, ws_strides[0], lse_strides[0], *o_strides)
        plan.combine_consts = dict(HEAD_DV=Dv, BLOCK_DV=bdv, SPLITS_P2=pow2(splits, 2),
                                   num_warps=4 if Dv >= 128 else 2)
        plan.fuse_combine = bool(config.get("FUSE_COMBINE", False))
    return plan


# Additive mask values at or below this are "masked" for block skipping (HF writes
# finfo(dtype).min, older models -inf): exp2 of such a score next to a visible one is 0.
VISIBLE_ABOVE = -1e30


@dataclass
class _SummaryPlan:
    """The two launches that summarise a mask operand per block: ``mask_tile_flags_kernel``
    over every (key block, query block, batch) tile, then ``mask_block_summary_kernel`` per
    query block; the attention kernel reads ``[bs, query blocks, 4]`` at batch stride ``ssum``."""

    shape: tuple
    flags_shape: tuple
    row_vis_shape: tuple
    flags_grid: tuple
    grid: tuple
    flags_ints: tuple
    flags_consts: dict
    ints: tuple
    consts: dict
    ssum: int

    def run(self, tpl, mask: torch.Tensor) -> torch.Tensor:
        """The summary of ``mask`` (bool masks viewed as uint8)."""
        dev = mask.device
        flags = torch.empty(self.flags_shape, dtype=torch.int8, device=dev)
        row_vis = torch.zeros(self.row_vis_shape, dtype=torch.int32, device=dev)
        out = torch.empty(self.shape, dtype=torch.int32, device=dev)
        tpl.mask_tile_flags_kernel[self.flags_grid](mask, flags, row_vis, *self.flags_ints, **self.flags_consts)
        tpl.mask_block_summary_kernel[self.grid](flags, row_vis, out, *self.ints, **self.consts)
        return out


def _summary_plan(m, mask_kind: str, config: Mapping, B: int, Sq: int, Sk: int, bm: int, bn: int,
                  groups: int) -> Optional[_SummaryPlan]:
    """The summary launches for a mask operand (``MASK_SKIP``, on by default); None without
    a mask, or when packed GQA rows do not cut into whole tokens (BLOCK_M not a multiple
    of the group)."""
    if m is None or not config.get("MASK_SKIP", True) or bm % groups:
        return None
    tb = bm // groups                      # query tokens per row block
    smb, smh, smq, smk = m.stride()
    bs = B if smb else 1
    hm = m.shape[1] if smh else 1
    n_qb, n_kb = triton_cdiv(Sq, tb), triton_cdiv(Sk, bn)
    ssum = n_qb * 4 if smb else 0
    sfb, srb, srh = n_qb * n_kb, hm * Sq, Sq
    rows = pow2(tb)
    return _SummaryPlan(
        shape=(bs, n_qb, 4), flags_shape=(bs, n_qb, n_kb), row_vis_shape=(bs, hm, Sq),
        flags_grid=(n_kb, n_qb, bs), grid=(n_qb, bs),
        flags_ints=(smb, smh, smq, smk, hm, Sq, Sk, sfb, srb, srh),
        flags_consts=dict(TOK_BLOCK=tb, ROWS=rows, BLOCK_N=bn, MASK_KIND=MASK_CODES[mask_kind],
                          VISIBLE_ABOVE=VISIBLE_ABOVE, num_warps=4 if rows * bn >= 4096 else 2),
        ints=(hm, Sq, n_kb, sfb, srb, srh, ssum),
        consts=dict(TOK_BLOCK=tb, ROWS=rows, KB_P2=pow2(n_kb), num_warps=4 if n_kb > 256 else 1),
        ssum=ssum)


def mask_summary(mask: torch.Tensor, mask_kind: str, shape: tuple, block_m: int, block_n: int,
                 groups: int = 1) -> torch.Tensor:
    """The block summary the attention kernel reads for ``mask`` broadcast to ``shape``
    ``(B, Hq, Sq, Sk)`` with row blocks of ``block_m`` (``block_m // groups`` tokens when
    GQA rows are packed): int32 ``[B or 1, row blocks, 4]`` (for tests and inspection)."""
    m = _mask4(mask, mask_kind, shape)
    B, _, Sq, Sk = shape
    plan = _summary_plan(m, mask_kind, {}, B, Sq, Sk, block_m, block_n, groups)
    if plan is None:
        raise ValueError(f"braze triton attention: no mask summary for BLOCK_M {block_m} and {groups} packed heads")
    check_device(m)
    return plan.run(_template(), mask.view(torch.uint8) if mask.dtype == torch.bool else mask)


def _run_dense(plan: _DensePlan, q, k, v, mask, slopes) -> torch.Tensor:
    out = torch.empty(plan.out_shape, dtype=plan.dtype, device=plan.device)
    if plan.trivial:
        return out.zero_() if plan.trivial == "zeros" else out
    tpl = _template(plan.interp)
    summary = _shared_summary(plan.summary, tpl, mask) if plan.summary is not None else q
    if mask is not None and mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)  # same storage and strides as the planned broadcast view
    if plan.slopes_cast:
        slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    if plan.tma_blocks is not None:
        desc_k, desc_v = _descriptor(k, plan.tma_blocks[0]), _descriptor(v, plan.tma_blocks[1])
    else:
        desc_k = desc_v = None
    if plan.splits > 1:
        o_t = torch.empty(plan.ws_shape, dtype=torch.float32, device=plan.device)
        lse = torch.empty(plan.lse_shape, dtype=torch.float32, device=plan.device)
    else:
        o_t, lse = out, q  # q: placeholder pointer, never read
    counts = _counts(plan.device, plan.grid[0] * plan.grid[1]) if plan.fuse_combine else None
    if counts is not None:
        fused = dict(zip(("sfb", "sfh", "sfs", "sfd"), out.stride()), FINAL=out, COUNT=counts, FUSE_COMBINE=True)
    else:
        fused = _NO_FUSED_COMBINE
    tpl.attention_fwd_kernel[plan.grid](
        q, k, v, o_t, q if mask is None else mask, q if slopes is None else slopes, lse, q, q, q, desc_k, desc_v,
        summary, plan.scale2, plan.cap2, *plan.ints, **plan.consts, HAS_POS=False, **fused,
        PDL=plan.pdl, launch_pdl=plan.pdl)
    if plan.splits > 1 and counts is None:
        tpl.attention_combine_kernel[plan.combine_grid](o_t, lse, out, *plan.combine_ints, **plan.combine_consts,
                                                        PDL=plan.pdl, launch_pdl=plan.pdl)
    return out


_NO_FUSED_COMBINE = dict(FINAL=None, COUNT=None, sfb=0, sfh=0, sfs=0, sfd=0, FUSE_COMBINE=False)

# device -> int32 zeros: the chunk counts of FUSE_COMBINE launches. Every launch leaves its
# counts at zero again, and the launches of one device run one after another on its stream,
# so one buffer serves them all. NOTE: two FUSE_COMBINE launches in flight at once on two
# streams of one device would share counts; braze launches a program's kernels on the
# caller's current stream, one after another.
_COUNTS: dict = {}
# Every count buffer ever made: a CUDA graph captured with a smaller one keeps its address,
# so a buffer replaced by a larger one must never be freed (a few KB each).
_ALL_COUNTS: list = []


def _counts(device: torch.device, n: int) -> Optional[torch.Tensor]:
    """At least ``n`` zeroed int32 counts on ``device``; None while a CUDA graph is being
    captured and no buffer is large enough (memory allocated in a capture belongs to
    that graph's pool, not to a buffer outliving it): that launch merges with the
    combine kernel instead."""
    buf = _COUNTS.get(device)
    if buf is None or buf.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        buf = _COUNTS[device] = torch.zeros(max(n, 1024, 2 * (buf.numel() if buf is not None else 0)),
                                            dtype=torch.int32, device=device)
        _ALL_COUNTS.append(buf)
    return buf


# The last summary computed: (program call, mask tensor, summary plan, summary). Every
# layer of a decoder reads the same mask in one call; its summary is computed once.
_LAST_SUMMARY: list = [None]


def _shared_summary(splan: "_SummaryPlan", tpl, mask: torch.Tensor) -> torch.Tensor:
    """``splan.run(tpl, mask)``, reused within one program call for the same mask tensor.

    NOTE: keyed by the program call in progress (``codegen.calls.ACTIVE``; nothing is kept
    outside one) and the mask object itself, held until the next summary: a tensor
    alive in the entry cannot be another one."""
    call = ACTIVE[0]
    last = _LAST_SUMMARY[0]
    if call and last is not None and last[0] == call and last[1] is mask and last[2] == splan:
        return last[3]
    out = splan.run(tpl, mask.view(torch.uint8) if mask.dtype == torch.bool else mask)
    _LAST_SUMMARY[0] = (call, mask, splan, out) if call else None
    return out


def _contiguous_strides(shape: tuple) -> tuple:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes=None, positions=None, *,
                     max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None, scale: float,
                     causal: str = "none", window: Optional[int] = None, groups: int = 1,
                     softcap: Optional[float] = None, config: Mapping) -> torch.Tensor:
    """The ``attention_varlen`` op (see ``ir/attention_varlen.py``) through the Triton template."""
    spec_key = ("varlen", q.dtype, q.shape[-1], v.shape[-1], causal, window is None, groups, slopes is None,
                positions is None, softcap is None)
    return _with_fallback(_attention_varlen, config, spec_key, q, k, v, cu_seqlens_q, cu_seqlens_k, slopes,
                          positions, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, scale=scale, causal=causal,
                          window=window, groups=groups, softcap=softcap)


def _attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes=None, positions=None, *,
                      max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None, scale: float,
                      causal: str = "none", window: Optional[int] = None, groups: int = 1,
                      softcap: Optional[float] = None, config: Mapping) -> torch.Tensor:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"braze triton attention_varlen: q, k, v must be [T, H, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    Tq, Hq, D = q.shape
    Tk, Hkv, _ = k.shape
    Dv = v.shape[-1]
    if v.shape[:2] != k.shape[:2]:
        raise ValueError(f"braze triton attention_varlen: k {tuple(k.shape)} and v {tuple(v.shape)} differ")
    _check_common(q, k, v, groups, scale, window, Hq, Hkv)
    if causal not in CAUSAL_CODES:
        raise ValueError(f"braze triton attention_varlen: causal={causal!r}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"braze triton attention_varlen: softcap {softcap!r} (a positive number or None)")
    if cu_seqlens_q.dim() != 1 or cu_seqlens_q.shape != cu_seqlens_k.shape or cu_seqlens_q.numel() < 1:
        raise ValueError(f"braze triton attention_varlen: cu_seqlens {tuple(cu_seqlens_q.shape)} and "
                         f"{tuple(cu_seqlens_k.shape)} must be [B + 1]")
    check_device(q, k, v, cu_seqlens_q, cu_seqlens_k)
    if positions is not None:
        if positions.dim() != 1 or positions.shape[0] < max(Tq, Tk) or positions.is_floating_point():
            raise ValueError(f"braze triton attention_varlen: positions {tuple(positions.shape)} "
                             f"{positions.dtype} must be integers, one per packed token ({max(Tq, Tk)})")
        check_device(q, positions)
        positions = positions.contiguous()
    B = cu_seqlens_q.numel() - 1
    # NOTE: zeros, not empty: rows past cu_seqlens_q[B] (token buckets) belong to no
    # sequence, no program writes them, and the op gives zeros there. Finding the
    # first such row would be a host sync; the memset costs about 1% of a BERT layer.
    out = torch.zeros(Tq, Hq, Dv, dtype=q.dtype, device=q.device)
    if B == 0 or Tq == 0:
        return out
    cq = cu_seqlens_q.to(torch.int32).contiguous()
    ck = cu_seqlens_k.to(torch.int32).contiguous()
    if max_seqlen_q is None:  # NOTE: a host sync; the pass should pass the bound
        max_seqlen_q = int((cq[1:] - cq[:-1]).max())
    sl = slopes.to(device=q.device, dtype=torch.float32).contiguous() if slopes is not None else None
    bm, bn = int(config["BLOCK_M"]), int(config["BLOCK_N"])
    pack = bool(config.get("PACK_GQA", False)) and groups > 1
    rows = max_seqlen_q * groups if pack else max_seqlen_q
    n_prog = B * (Hkv if pack else Hq)
    if n_prog > MAX_GRID_YZ:
        raise ValueError(f"braze triton attention_varlen: {n_prog} (batch x heads) programs exceed the grid limit")
    grid = (max(1, triton_cdiv(rows, bm)), n_prog, 1)
    tpl = _template()
    # [T, H, D] is [B=1, H, T, D] with batch stride 0 and the token offset from cu_seqlens.
    qs, ks, vs, os_ = q.stride(), k.stride(), v.stride(), out.stride()
    tpl.attention_fwd_kernel[grid](
        q, k, v, out, q, sl if sl is not None else q, q, cq, ck, q if positions is None else positions, None, None, q,
        float(scale) / float(softcap) if softcap else float(scale) * LOG2E, float(softcap) * LOG2E if softcap else 0.0,
        0, qs[1], qs[0], qs[2], 0, ks[1], ks[0], ks[2], 0, vs[1], vs[0], vs[2], 0, os_[1], os_[0], os_[2], 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        Hq, groups, max_seqlen_q, int(max_seqlen_k or 0), int(window or 0), 0,
        HEAD_D=D, HEAD_DV=Dv, BLOCK_D=pow2(D), BLOCK_DV=pow2(Dv), BLOCK_M=bm, BLOCK_N=bn,
        CAUSAL=CAUSAL_CODES[causal], HAS_WINDOW=window is not None, MASK_KIND=0,
        HAS_ALIBI=sl is not None, VARLEN=True, PACK_GQA=pack, SPLIT=False, DOT_PREC=_dot_prec(q.dtype),
        DOT_F32=_dot_f32(q.dtype), USE_TMA=False, HAS_SUMMARY=False, HAS_SOFTCAP=bool(softcap),
        HAS_POS=positions is not None and window is not None, num_warps=int(config["num_warps"]),
        num_stages=int(config["num_stages"]), **_NO_FUSED_COMBINE)
    return out


def tma_ok(t: torch.Tensor, block_d: int) -> bool:
    """Whether K or V can be read through a tensor descriptor: Hopper or newer (or the
    interpreter), last dim contiguous, 16-byte aligned base and strides."""
    if t.device.type == "cuda" and torch.cuda.get_device_capability(t.device)[0] < 9:
        return False
    e = t.element_size()
    return (t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all((s * e) % 16 == 0 for s in t.stride()[:-1])
            and block_d * e >= 16)


def _descriptor(t: torch.Tensor, block: list):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), block)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
