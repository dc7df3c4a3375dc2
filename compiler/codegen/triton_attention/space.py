"""Search spaces of the attention template, as data.

Knobs: BLOCK_M (query rows per program), BLOCK_N (keys per inner step),
num_warps, num_stages (software pipelining of the K/V loads), PACK_GQA (the
query heads sharing one K/V head in one program), TMA (K/V through tensor
descriptors, Hopper), SPLITS (split-KV chunks, merged by the combine
kernel; decode), FUSE_COMBINE (the last chunk merges instead: no combine
launch) and MASK_SKIP (with a mask operand: summary kernels read the
mask once, then each row block visits only the key blocks the mask leaves
visible and skips the mask load where it adds nothing; on by default). The
problem is the dict of ``problem()`` in ``candidates.py``: B, Hq, Hkv,
groups, Sq, Sk (pow2 buckets), D, Dv, dtype, causal, window, mask, alibi.

The defaults are the untuned configs: a table for Hopper (H100/H200,
measured with ``bench/attention.py``), a generic one for other CUDA GPUs,
and small blocks for the CPU interpreter (tests).
"""
from __future__ import annotations

import math

from braze.autotune.space import Config, Constraint, DeviceInfo, Knob, Problem, Space

DECODE_MAX_SQ = 16  # queries per sequence up to which the decode form (pack + split-KV) is the default


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _elt(problem: Problem) -> int:
    return 4 if problem.get("dtype") == "f32" else 2


def _rows(config: Config, problem: Problem) -> int:
    return problem["Sq"] * (problem["groups"] if config.get("PACK_GQA") else 1)


def smem_bytes(config: Config, problem: Problem) -> int:
    """Shared memory of one program: the Q tile plus num_stages K and V tiles (and mask
    tiles, pipelined as well, when there is a mask operand)."""
    bd, bdv, e = _pow2(problem["D"]), _pow2(problem["Dv"]), _elt(problem)
    stages = max(1, config["num_stages"])
    mask_tile = config["BLOCK_M"] if _has_mask(problem) else 0
    return (config["BLOCK_M"] * bd + stages * config["BLOCK_N"] * (bd + bdv + mask_tile)) * e


def regs_per_thread(config: Config, problem: Problem) -> float:
    """Live fp32 values per thread: accumulator, scores and the Q tile (packed 16-bit pairs)."""
    bm, bn = config["BLOCK_M"], config["BLOCK_N"]
    bd, bdv = _pow2(problem["D"]), _pow2(problem["Dv"])
    return (bm * bdv + bm * bn + bm * bd * _elt(problem) / 4) / (32 * config["num_warps"])


def _fits_smem(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return d.kind != "cuda" or smem_bytes(c, p) <= (d.smem_per_block or 48 * 1024)


def _fits_regs(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return d.kind != "cuda" or regs_per_thread(c, p) <= 160


def _pack_has_groups(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return not c["PACK_GQA"] or p["groups"] > 1


def _tma_on_device(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return not c["TMA"] or d.kind != "cuda" or d.capability[0] >= 9


def _split_for_decode(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return c["SPLITS"] == 1 or (p["Sq"] <= DECODE_MAX_SQ and c["SPLITS"] * c["BLOCK_N"] <= max(p["Sk"], 1))


def _has_mask(p: Problem) -> bool:
    return p.get("mask", "none") != "none"


def _skip_needs_mask(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return not c["MASK_SKIP"] or _has_mask(p)


def _block_m_fits_rows(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return c["BLOCK_M"] <= _pow2(_rows(c, p))


def _block_n_fits_keys(c: Config, p: Problem, d: DeviceInfo) -> bool:
    return c["BLOCK_N"] <= _pow2(p["Sk"])


def decode_splits(problem: Problem, device: DeviceInfo, block_m: int, block_n: int, pack: bool) -> int:
    """Split-KV chunks for a decode problem: programs for about half a wave over the
    SMs (what led on an H100: B8 x 8 K/V heads unsplit, B1 x 8 with 32k keys in 8
    chunks), each chunk at least ``min_blocks`` key blocks."""
    min_blocks = 4
    sms = device.sm_count or 1
    rows = problem["Sq"] * (problem["groups"] if pack else 1)
    base = problem["B"] * (problem["Hkv"] if pack else problem["Hq"]) * math.ceil(rows / block_m)
    n_blocks = math.ceil(problem["Sk"] / block_n)
    want = max(1, sms // (2 * max(base, 1)))
    cap = max(1, n_blocks // min_blocks)
    s = 1
    while s * 2 <= min(want, cap, 128):
        s *= 2
    return s


def default_config(problem: Problem, device: DeviceInfo) -> Config:
    d = max(problem["D"], problem["Dv"])
    groups = problem["groups"]
    decode = problem["Sq"] <= DECODE_MAX_SQ
    if device.kind != "cuda":  # the CPU interpreter: few, small programs
        pack = decode and groups > 1
        bm = min(32, _pow2(problem["Sq"] * (groups if pack else 1)))
        return {"BLOCK_M": bm, "BLOCK_N": min(32, _pow2(problem["Sk"])), "num_warps": 4, "num_stages": 1,
                "PACK_GQA": pack, "TMA": False, "SPLITS": 1, "MASK_SKIP": _has_mask(problem)}
    hopper = device.capability[0] >= 9
    if decode:
        # measured on an H100 (bench/attention.py, CUDA graphs): BLOCK_N 128 through TMA,
        # 4 warps, 3 stages, about half a wave of programs (B8 x 8 K/V heads: no split).
        pack = groups > 1
        bm = min(64, _pow2(problem["Sq"] * (groups if pack else 1)))
        bn = min(128 if d <= 128 else 32, _pow2(problem["Sk"]))
        cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4, "num_stages": 3 if hopper else 2, "PACK_GQA": pack,
               "TMA": hopper and d <= 128}
        cfg["SPLITS"] = decode_splits(problem, device, bm, bn, pack)
        if cfg["SPLITS"] > 1 and bn >= 128 and problem["Sk"] <= 2048:
            # NOTE: few programs (split-KV) over a short cache: key blocks of 64 through pointer
            # loads. On an H100 (bench/decode_attention.py, Llama-1B batch 1, cache 2048; results
            # decode-attention-h100-2026-12-07-s8): 13.1 / 14.0 us at 562 / 1536 valid keys
            # against 13.7 / 15.3 for 128 through TMA. Batch 8 (no split) keeps 128 + TMA, as
            # does a 32k cache (bench/attention.py's decode_b1_32k).
            cfg.update(BLOCK_N=64, TMA=False)
            cfg["SPLITS"] = decode_splits(problem, device, bm, 64, pack)
        cfg["MASK_SKIP"] = _has_mask(problem)
        if cfg["SPLITS"] > 1:   # NOTE: a conditional knob; VARLEN_SPACE, which never splits, has none
            cfg["FUSE_COMBINE"] = False
        return cfg
    if hopper:
        # measured on an H100 (bench/attention.py): 128 x 128 tiles, 8 warps, 3 stages for
        # D 128 (BLOCK_N 64 with a mask operand or ALiBi: their loads need shared memory
        # too), 128 x 64 for D 64 where GQA gains from packing the group's heads.
        extra = problem.get("mask", "none") != "none" or problem.get("alibi", False)
        if d <= 64 or (d <= 128 and extra):
            cfg = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}
        elif d <= 128:
            cfg = {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}
        else:
            cfg = {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2}
    else:
        cfg = {"BLOCK_M": 64, "BLOCK_N": 64 if d <= 128 else 32, "num_warps": 4 if d <= 128 else 8, "num_stages": 2}
    if problem.get("dtype") == "f32":
        cfg.update(BLOCK_M=min(cfg["BLOCK_M"], 64), BLOCK_N=32, num_stages=2)
    cfg["BLOCK_M"] = min(cfg["BLOCK_M"], _pow2(problem["Sq"]))
    cfg["BLOCK_N"] = min(cfg["BLOCK_N"], _pow2(problem["Sk"]))
    cfg.update(PACK_GQA=groups > 1 and d <= 64, TMA=False, SPLITS=1, MASK_SKIP=_has_mask(problem))
    return cfg


def fused_combine_default(problem: Problem, device: DeviceInfo) -> Config:
    """The default config, its split-KV chunks merged by the last chunk (where it splits)."""
    cfg = default_config(problem, device)
    if cfg["SPLITS"] > 1:
        cfg["FUSE_COMBINE"] = True
    return cfg


def fine_split_default(problem: Problem, device: DeviceInfo) -> Config:
    """The fused-combine decode config with key blocks of at most 64 and twice the chunks:
    more, shorter programs (a decode step's valid keys are often a few blocks of 128)."""
    cfg = fused_combine_default(problem, device)
    if cfg["SPLITS"] > 1:
        cfg["BLOCK_N"] = min(cfg["BLOCK_N"], 64)
        if cfg["SPLITS"] < 128 and 2 * cfg["SPLITS"] * cfg["BLOCK_N"] <= problem["Sk"]:
            cfg["SPLITS"] *= 2
    return cfg


_COMMON_KNOBS = (
    Knob("BLOCK_M", (16, 32, 64, 128, 256)),
    Knob("BLOCK_N", (16, 32, 64, 128)),
    Knob("num_warps", (2, 4, 8)),
    Knob("num_stages", (1, 2, 3, 4, 5)),
    Knob("PACK_GQA", (False, True)),
)
_TMA = Knob("TMA", (False, True))
_COMMON_CONSTRAINTS = (
    Constraint("shared memory: Q tile + num_stages K/V tiles", _fits_smem),
    Constraint("registers: accumulator + scores + Q per thread", _fits_regs),
    Constraint("PACK_GQA needs groups > 1", _pack_has_groups),
    Constraint("BLOCK_M <= rows (pow2)", _block_m_fits_rows),
    Constraint("BLOCK_N <= keys (pow2)", _block_n_fits_keys),
    Constraint("TMA needs Hopper or newer", _tma_on_device),
)

_SPLITS = (1, 2, 4, 8, 16, 32, 64, 128)
_DENSE_KNOBS = _COMMON_KNOBS + (_TMA, Knob("SPLITS", _SPLITS), Knob("MASK_SKIP", (False, True)),
                                Knob("FUSE_COMBINE", (False, True), when=("SPLITS", _SPLITS[1:])))
_DENSE_CONSTRAINTS = _COMMON_CONSTRAINTS + (
    Constraint("SPLITS > 1 only for decode (Sq <= 16), >= one block per split", _split_for_decode),
    Constraint("MASK_SKIP needs a mask operand", _skip_needs_mask))

ATTENTION_SPACE = Space(_DENSE_KNOBS, _DENSE_CONSTRAINTS, default=default_config)

# The same space from other starting points: the decode variants the quick selection times
# beside the default (``candidates.py``), by name.
DECODE_VARIANTS = {
    "fused_combine": Space(_DENSE_KNOBS, _DENSE_CONSTRAINTS, default=fused_combine_default),
    "fine_split": Space(_DENSE_KNOBS, _DENSE_CONSTRAINTS, default=fine_split_default),
}

VARLEN_SPACE = Space(
    _COMMON_KNOBS + (Knob("TMA", (False,)), Knob("SPLITS", (1,)), Knob("MASK_SKIP", (False,))),
    _COMMON_CONSTRAINTS,
    default=default_config,
)

__all__ = ["ATTENTION_SPACE", "DECODE_VARIANTS", "VARLEN_SPACE", "default_config", "decode_splits", "smem_bytes", "regs_per_thread"]
