"""CPU (LLVM) schedules of lowered groups, with their search spaces.

Every template declares its :class:`Space` here, next to the schedule that
reads it; defaults are chosen from the problem (sizes, dtype) and the
device, so a kernel runs well untuned. Problems (``problem_of`` in
``kernel.py``) carry ``numel``/``last`` (pointwise), ``rows``/``N``
(reduction) or ``M``/``N``/``K`` (gemm), each a power-of-two bucket, and
``dtype``.

Structure of the schedules:

- pointwise: the outer dims fused into one parallel loop, the last dim
  split into vector-width chunks (``flat``: all dims fused first, for short
  or odd last dims); ``unroll`` unrolls that many vectors.
- reduction: one parallel loop over rows; each row's reductions and staged
  values are computed inside it (``compute_at``), so a row is read from
  memory once and stays in L1/L2; reductions are vectorised by ``rfactor``
  over ``vec`` lanes; the outputs of the row are written by vector loops.
- gemm: a BLIS-like nest. Panels of ``nr`` columns run in parallel; each
  panel of B is packed once into ``[K, nr]`` (contiguous, zero-padded) and
  reused by all rows; the ``mr x nr`` accumulator tile is computed with
  ``k`` outermost, ``mr`` rows unrolled and ``nr`` lanes vectorised, so it
  lives in vector registers; the epilogue writes the tile while it is hot.
"""
from __future__ import annotations

from typing import Any

import tvm
from tvm import s_tir

from braze.autotune.space import Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.tvm.lower import Lowered, Nest


def vector_bytes() -> int:
    """Widest vector register of this CPU in bytes (64 with AVX-512)."""
    from braze.compiler.codegen.tvm.build import cpu_features  # lazy: imports tvm on first use

    f = cpu_features()
    if "avx512f" in f:
        return 64
    if "avx2" in f or "avx" in f:
        return 32
    return 16


def _lanes(problem) -> int:
    return max(4, vector_bytes() // (8 if problem.get("dtype") == "f64" else 4))


# --- spaces -----------------------------------------------------------------------

def _pw_default(problem, device: DeviceInfo) -> dict:
    lanes = 1 if problem.get("dtype") == "b8" else _lanes(problem)
    last = problem.get("last", 1)
    return {"vec": lanes, "unroll": 1, "parallel": problem.get("numel", 0) >= 1 << 15 and device.cores > 1,
            "flat": last < lanes or last % lanes != 0}


# Knobs and constraint shared by the row-wise kinds (pointwise, reduction).
_ROW_KNOBS = (Knob("vec", (1, 4, 8, 16, 32, 64)), Knob("unroll", (1, 2, 4)), Knob("parallel", (False, True)))
# NOTE: TVM's LLVM backend cannot build bool vectors ("IntImm can only take scalar, but
# boolx8 was supplied"): a group writing bool runs scalar loops.
_ROW_CONSTRAINTS = (Constraint("vec <= 4 vector registers", lambda c, p, d: c["vec"] <= 4 * _lanes(p)),
                    Constraint("bool outputs are not vectorised", lambda c, p, d: p.get("dtype") != "b8" or
                               c["vec"] == 1))

POINTWISE_SPACE = Space(_ROW_KNOBS + (Knob("flat", (False, True)),), _ROW_CONSTRAINTS, _pw_default)


def _red_default(problem, device: DeviceInfo) -> dict:
    lanes = _lanes(problem)
    return {"vec": lanes, "unroll": 1, "parallel": problem.get("rows", 1) >= 2 and device.cores > 1 and
            problem.get("rows", 1) * problem.get("N", 1) >= 1 << 13, "stage": True}


REDUCTION_SPACE = Space(_ROW_KNOBS + (Knob("stage", (True, False)),), _ROW_CONSTRAINTS, _red_default)


def _gemm_default(problem, device: DeviceInfo) -> dict:
    lanes = _lanes(problem)
    M, N, K = problem.get("M", 64), problem.get("N", 64), problem.get("K", 64)
    nr = 2 * lanes if N >= 2 * lanes else lanes
    mr = 6 if M >= 6 else (4 if M >= 4 else 1)
    # B blocks of nb panels: at most ~512 KB packed (L2), at least two blocks per core
    panels = max(1, -(-N // nr))
    nb = 1
    for c in (2, 4, 8, 16):
        if panels // c >= 2 * device.cores and c * nr * K * 4 <= 512 * 1024:
            nb = c
    # A blocks of mb rows (a multiple of 24, so of every mr) of at most ~256 KB
    mb = 0
    if M > 96:
        for c in (24, 48, 96, 192):
            if c * K * 4 <= 256 * 1024 and c % mr == 0:
                mb = c
    return {"layout": "nn", "mr": mr, "nr": nr, "tm": 3, "tn": 4, "nb": nb, "mb": mb, "pack": True,
            "prepack": bool(problem.get("b_const", 0)),
            "kunroll": 4, "parallel": device.cores > 1 and M * N >= 1 << 12}


def _regs_ok(c, p, d) -> bool:
    lanes = _lanes(p)
    nn = c["nr"] % lanes == 0 and c["mr"] * (c["nr"] // lanes) + c["nr"] // lanes + 1 <= 32
    nt = c["tm"] * c["tn"] + c["tm"] + c["tn"] <= 32 and c["nr"] % c["tn"] == 0
    return nn and (nt or c["layout"] == "nn")


GEMM_SPACE = Space(
    (Knob("layout", ("auto", "nn", "nt")), Knob("mr", (1, 2, 4, 6, 8, 12)), Knob("nr", (8, 16, 32, 48, 64)),
     Knob("tm", (1, 2, 3, 4, 6)), Knob("tn", (1, 2, 4, 8)), Knob("nb", (1, 2, 4, 8, 16)),
     Knob("mb", (0, 24, 48, 96, 192)), Knob("pack", (True, False)), Knob("prepack", (False, True)),
     Knob("kunroll", (1, 2, 4, 8)),
     Knob("parallel", (False, True))),
    (Constraint("nr is a whole number of vectors", lambda c, p, d: c["nr"] % _lanes(p) == 0),
     Constraint("accumulator tile fits the vector registers", _regs_ok),
     Constraint("row blocks are whole row tiles", lambda c, p, d: c["mb"] % c["mr"] == 0 and c["mb"] % c["tm"] == 0)),
    _gemm_default,
)

SPACES = {"pointwise": POINTWISE_SPACE, "reduction": REDUCTION_SPACE, "gemm": GEMM_SPACE}


# --- schedules ---------------------------------------------------------------------

def _block(sch: s_tir.Schedule, name: str):
    return sch.get_sblock(name)


def _vectorize_last(sch, block, vec: int, unroll: int = 1) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    if unroll > 1:
        _, u, v = sch.split(inner, [None, unroll, vec])
        sch.unroll(u)
    else:
        _, v = sch.split(inner, [None, vec])
    sch.vectorize(v)


def _schedule_pointwise(sch, nest: Nest, cfg: dict) -> None:
    b = _block(sch, nest.block_names[0])
    loops = sch.get_loops(b)
    if not loops:
        return
    vec, unroll = cfg["vec"], cfg["unroll"]
    if cfg["flat"] or len(loops) == 1:
        flat = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        parts = sch.split(flat, [None, unroll, vec] if unroll > 1 else [None, vec])
        if unroll > 1:
            sch.unroll(parts[1])
        sch.vectorize(parts[-1])
        if cfg["parallel"]:
            sch.parallel(parts[0])
        return
    outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    parts = sch.split(loops[-1], [None, unroll, vec] if unroll > 1 else [None, vec])
    if unroll > 1:
        sch.unroll(parts[1])
    sch.vectorize(parts[-1])
    if cfg["parallel"]:
        sch.parallel(outer)


def _vectorize_lanes(sch, block) -> None:
    """A ``*_lanes`` block (spatial lanes, reduction over vector steps, see
    ``lower._reduce_last``): steps outer, lanes vectorised inside, init hoisted."""
    loops = sch.get_loops(block)
    ki, ko = loops[-2], loops[-1]
    sch.reorder(ko, ki)
    sch.vectorize(ki)
    init = sch.decompose_reduction(block, ko)
    sch.vectorize(sch.get_loops(init)[-1])


def _schedule_rows(sch, nest: Nest, cfg: dict) -> None:
    b = _block(sch, nest.block_names[0])
    loops = sch.get_loops(b)
    vec = cfg["vec"]
    if nest.role == "rows":
        rows, inner = loops[:-1], loops[-1]
    else:  # reduced outputs: the anchor's loops are the rows
        rows, inner = loops, None
    r = None
    if rows:
        r = sch.fuse(*rows) if len(rows) > 1 else rows[0]
        for T in reversed(nest.inter):
            sch.compute_at(_block(sch, T.op.name), r, preserve_unit_loops=True)
        if cfg["parallel"]:
            # NOTE: before decompose_reduction, which parallel's dataflow check rejects
            sch.parallel(r)
    for T in nest.inter:
        blk = _block(sch, T.op.name)
        if T.op.name.endswith("_lanes"):
            _vectorize_lanes(sch, blk)
        elif T.op.name.endswith("_tail"):
            # NOTE: the tail loop is empty when N is a multiple of the lanes;
            # an init left inside it would never run
            sch.decompose_reduction(blk, sch.get_loops(blk)[-1])
        elif T not in nest.reductions:
            _vectorize_last(sch, blk, vec)
    if inner is not None:
        parts = sch.split(inner, [None, cfg["unroll"], vec] if cfg["unroll"] > 1 else [None, vec])
        if cfg["unroll"] > 1:
            sch.unroll(parts[1])
        sch.vectorize(parts[-1])


def _schedule_gemm_nt(sch, nest: Nest, cfg: dict) -> None:
    """Dot products along K (see ``lower._gemm_nt``): ``jc`` blocks of ``nb``
    column tiles (parallel) > ``ic`` blocks of ``mb`` rows > tiles of ``tm``
    rows x ``nr`` columns, the output tile; inside it, for each ``tn``
    columns, the ``tm x tn`` vectors of partial sums live in registers over
    K, then are summed across lanes; the epilogue writes the tile."""
    g = nest.gemm
    tm, nr, tn, nb, mb = cfg["tm"], cfg["nr"], cfg["tn"], cfg.get("nb", 1), cfg.get("mb", 0)
    b = _block(sch, nest.block_names[0])
    loops = sch.get_loops(b)
    batch, i, j = loops[:-2], loops[-2], loops[-1]
    jc, jr, ji = sch.split(j, [None, nb, nr])
    if mb:
        ic, ir, ii = sch.split(i, [None, mb // tm, tm])
        sch.reorder(*batch, jc, ic, jr, ir, ii, ji)
    else:
        ir, ii = sch.split(i, [None, tm])
        sch.reorder(*batch, jc, jr, ir, ii, ji)
    outer = sch.fuse(*batch, jc) if batch else jc
    C = _block(sch, g["C"].op.name)
    sch.compute_at(C, ir, preserve_unit_loops=True)
    parts = g["parts"]
    even = len(parts) == 1
    cl = sch.get_loops(C)
    if even:  # C sums the lanes itself
        ci, cj, ckl = cl[-3], cl[-2], cl[-1]
        jg, jt = sch.split(cj, [None, tn])
        sch.reorder(jg, ci, jt, ckl)
    else:
        ci, cj = cl[-2], cl[-1]
        jg, jt = sch.split(cj, [None, tn])
        sch.reorder(jg, ci, jt)
        for T in reversed(parts[1:]):
            sch.compute_at(_block(sch, T.op.name), jg, preserve_unit_loops=True)
    P = _block(sch, parts[0].op.name)
    sch.compute_at(P, jg, preserve_unit_loops=True)
    if cfg["parallel"]:
        sch.parallel(outer)  # before decompose_reduction (see _schedule_rows)
    pl = sch.get_loops(P)
    pi, pj, pv, pk = pl[-4], pl[-3], pl[-2], pl[-1]
    ku = cfg["kunroll"]
    if ku > 1:
        ko, kin = sch.split(pk, [None, ku])
        sch.reorder(ko, kin, pi, pj, pv)
        sch.unroll(kin)
    else:
        ko = pk
        sch.reorder(pk, pi, pj, pv)
    sch.unroll(pi)
    sch.unroll(pj)
    sch.vectorize(pv)
    init = sch.decompose_reduction(P, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    if not even:
        T = _block(sch, parts[2].op.name)
        sch.decompose_reduction(T, sch.get_loops(T)[-1])  # the K tail may be empty
    sch.vectorize(ji)


def _schedule_gemm(sch, nest: Nest, cfg: dict) -> None:
    """GotoBLAS-like: ``jc`` blocks of ``nb`` B panels (parallel, packed once
    per block) > ``ic`` blocks of ``mb`` rows > panels ``jr`` > row tiles
    ``ir`` > the ``mr x nr`` register tile (k outermost, rows unrolled,
    columns vectorised), then the epilogue of the tile."""
    g = nest.gemm
    mr, nr, nb, mb = cfg["mr"], cfg["nr"], cfg.get("nb", 1), cfg.get("mb", 0)
    b = _block(sch, nest.block_names[0])
    loops = sch.get_loops(b)
    batch = loops[:-2]
    i, j = loops[-2], loops[-1]
    jc, jr, ji = sch.split(j, [None, nb, nr])
    if mb:
        ic, ir, ii = sch.split(i, [None, mb // mr, mr])
        sch.reorder(*batch, jc, ic, jr, ir, ii, ji)
    else:
        ir, ii = sch.split(i, [None, mr])
        sch.reorder(*batch, jc, jr, ir, ii, ji)
    outer = sch.fuse(*batch, jc) if batch else jc
    C = _block(sch, g["C"].op.name)
    sch.compute_at(C, ir, preserve_unit_loops=True)
    if g["Bp"] is not None:
        P = _block(sch, g["Bp"].op.name)
        sch.compute_at(P, outer, preserve_unit_loops=True)
        pl = sch.get_loops(P)
        sch.vectorize(pl[-1])
    if cfg["parallel"]:
        sch.parallel(outer)  # before decompose_reduction (see _schedule_rows)
    cl = sch.get_loops(C)
    ci, cj, ck = cl[-3], cl[-2], cl[-1]
    ku = cfg["kunroll"]
    if ku > 1:
        ko, kin = sch.split(ck, [None, ku])
        sch.reorder(ko, kin, ci, cj)
        sch.unroll(kin)
    else:
        ko = ck
        sch.reorder(ck, ci, cj)
    sch.unroll(ci)
    sch.vectorize(cj)
    init = sch.decompose_reduction(C, ko)
    il = sch.get_loops(init)
    sch.vectorize(il[-1])
    sch.unroll(il[-2])
    sch.vectorize(ji)


def schedule_pack(func, parallel: bool = True) -> tvm.IRModule:
    """The prepacking function of a GEMM (``lower_gemm``): one panel per
    parallel iteration, its rows written as vectors."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    b = sch.get_sblock("packB")
    loops = sch.get_loops(b)
    outer = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
    sch.vectorize(loops[-1])
    if parallel:
        sch.parallel(outer)
    return sch.mod


def schedule(lowered: Lowered, cfg: dict[str, Any]) -> tvm.IRModule:
    """The scheduled module of ``lowered`` for one config of its kind's Space."""
    return lowered.schedule(cfg, _schedule_pointwise, _schedule_rows, _schedule_any_gemm)


def _schedule_any_gemm(sch, nest: Nest, cfg: dict) -> None:
    (_schedule_gemm_nt if nest.gemm.get("layout") == "nt" else _schedule_gemm)(sch, nest, cfg)
