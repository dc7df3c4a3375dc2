"""CUDA schedules of lowered groups, with their search spaces.

- pointwise: all dims fused, split into ``[blocks, threads, vec]``;
  ``vec`` elements per thread are vectorised (16-byte accesses for
  bf16 at vec=8).
- reduction: one thread block per row. Each reduction is a cross-thread
  reduction over ``threads`` (TVM lowers it to warp shuffles and shared
  memory); staged values live in shared memory (``stage``), so the row is
  read from global memory once; outputs are written by the block's threads
  with ``vec``-wide vector stores.
- gemm: classic tiled GEMM: a ``block_m x block_n`` output tile per thread
  block, ``thread_m x thread_n`` per thread in registers, A and B tiles of
  depth ``block_k`` staged in shared memory; the epilogue is applied on
  the register tile.

Each Space's default is a good config for memory-bound rows of thousands
of elements on an H100 (the constraints keep threads <= 1024 and the
shared-memory use within the device's limit).
"""
from __future__ import annotations

from typing import Any

import tvm

from braze.autotune.space import Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.tvm.lower import Lowered, Nest


def _elem_bytes(problem) -> int:
    return {"f32": 4, "f16": 2, "bf16": 2, "f64": 8}.get(problem.get("dtype"), 4)


# NOTE: values are computed in float32, and TVM's CUDA code generator cannot
# print 8-lane float32 constants, so vectors are at most 4 lanes; ``unroll``
# gives each thread more independent accesses instead.
_VEC_OK = Constraint("at most 4 float32 lanes (TVM's CUDA code)", lambda c, p, d: c["vec"] <= 4)


def _pw_default(problem, device: DeviceInfo) -> dict:
    vec = 4 if problem.get("last", 1) % 4 == 0 else 1
    return {"threads": 256, "vec": vec, "unroll": 2 if problem.get("numel", 0) >= 1 << 22 else 1}


POINTWISE_SPACE = Space(
    (Knob("threads", (64, 128, 256, 512, 1024)), Knob("vec", (1, 2, 4)), Knob("unroll", (1, 2, 4))),
    (_VEC_OK,),
    _pw_default,
)


def _red_default(problem, device: DeviceInfo) -> dict:
    n = problem.get("N", 1024)
    threads = 1024 if n >= 8192 else (512 if n >= 2048 else (256 if n >= 512 else 128))
    vec = 4
    while vec > 1 and n % (vec * 32):
        vec //= 2
    return {"threads": threads, "vec": vec, "stage": True}


def _smem_ok(c, p, d) -> bool:
    # a staged row is kept in shared memory in the compute dtype (4 bytes)
    return not c["stage"] or p.get("N", 0) * 4 <= (d.smem_per_block or 48 * 1024)


REDUCTION_SPACE = Space(
    (Knob("threads", (64, 128, 256, 512, 1024)), Knob("vec", (1, 2, 4)), Knob("stage", (True, False))),
    (_VEC_OK, Constraint("staged row fits shared memory", _smem_ok)),
    _red_default,
)


def _gemm_default(problem, device: DeviceInfo) -> dict:
    return {"block_m": 64, "block_n": 64, "thread_m": 4, "thread_n": 4, "block_k": 16}


def _gemm_threads(c, p, d) -> bool:
    t = (c["block_m"] // c["thread_m"]) * (c["block_n"] // c["thread_n"])
    return 32 <= t <= 1024


def _gemm_smem(c, p, d) -> bool:
    return (c["block_m"] + c["block_n"]) * c["block_k"] * 4 <= (d.smem_per_block or 48 * 1024)


GEMM_SPACE = Space(
    (Knob("block_m", (32, 64, 128)), Knob("block_n", (32, 64, 128)), Knob("thread_m", (2, 4, 8)),
     Knob("thread_n", (2, 4, 8)), Knob("block_k", (8, 16, 32))),
    (Constraint("32..1024 threads per block", _gemm_threads), Constraint("A and B tiles fit shared memory", _gemm_smem)),
    _gemm_default,
)

SPACES = {"pointwise": POINTWISE_SPACE, "reduction": REDUCTION_SPACE, "gemm": GEMM_SPACE}


def _schedule_pointwise(sch, nest: Nest, cfg: dict) -> None:
    b = sch.get_sblock(nest.block_names[0])
    loops = sch.get_loops(b)
    flat = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    # each unrolled step is one coalesced sweep of threads x vec elements
    bx, u, tx, v = sch.split(flat, [None, cfg.get("unroll", 1), cfg["threads"], cfg["vec"]])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.unroll(u)
    if cfg["vec"] > 1:
        sch.vectorize(v)


def _thread_loop(sch, loop, threads: int, vec: int = 1):
    if vec > 1:
        _, tx, v = sch.split(loop, [None, threads, vec])
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(v)
    else:
        _, tx = sch.split(loop, [None, threads])
        sch.bind(tx, "threadIdx.x")


def _schedule_rows(sch, nest: Nest, cfg: dict) -> None:
    b = sch.get_sblock(nest.block_names[0])
    loops = sch.get_loops(b)
    threads, vec = cfg["threads"], cfg["vec"]
    rows, inner = (loops[:-1], loops[-1]) if nest.role == "rows" else (loops, None)
    if rows:
        r = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    else:
        r = sch.add_unit_loop(b)
    for T in reversed(nest.inter):
        sch.compute_at(sch.get_sblock(T.op.name), r, preserve_unit_loops=True)
    sch.bind(r, "blockIdx.x")
    for T in nest.inter:
        blk = sch.get_sblock(T.op.name)
        last = sch.get_loops(blk)[-1]
        if T in nest.reductions:
            # a cross-thread reduction: every thread of the block holds the row's result
            _thread_loop(sch, last, threads)
            sch.set_scope(blk, 0, "local")
        else:
            _thread_loop(sch, last, threads)
            sch.set_scope(blk, 0, "shared")
    if inner is not None:
        _thread_loop(sch, inner, threads, vec)
    else:
        u = sch.add_unit_loop(b)
        sch.bind(u, "threadIdx.x")


def _schedule_gemm(sch, nest: Nest, cfg: dict) -> None:
    g = nest.gemm
    bm, bn, tm, tn, bk = cfg["block_m"], cfg["block_n"], cfg["thread_m"], cfg["thread_n"], cfg["block_k"]
    b = sch.get_sblock(nest.block_names[0])
    loops = sch.get_loops(b)
    batch, i, j = loops[:-2], loops[-2], loops[-1]
    bi, ti, ii = sch.split(i, [None, bm // tm, tm])
    bj, tj, jj = sch.split(j, [None, bn // tn, tn])
    sch.reorder(*batch, bi, bj, ti, tj, ii, jj)
    if batch:
        sch.bind(sch.fuse(*batch), "blockIdx.z")
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    sch.bind(ti, "threadIdx.y")
    sch.bind(tj, "threadIdx.x")
    C = sch.get_sblock(g["C"].op.name)
    sch.compute_at(C, tj, preserve_unit_loops=True)
    sch.set_scope(C, 0, "local")
    cl = sch.get_loops(C)
    ci, cj, ck = cl[-3], cl[-2], cl[-1]
    ko, ki = sch.split(ck, [None, bk])
    sch.reorder(ko, ki, ci, cj)
    for idx in (0, 1):  # A and B tiles, fetched cooperatively by all threads
        sh = sch.cache_read(C, idx, "shared")
        sch.compute_at(sh, ko, preserve_unit_loops=True)
        fl = sch.fuse(*sch.get_loops(sh)[-2:])
        _, ty, tx = sch.split(fl, [None, bm // tm, bn // tn])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
    sch.unroll(ki)
    sch.decompose_reduction(C, ko)


def schedule(lowered: Lowered, cfg: dict[str, Any]) -> tvm.IRModule:
    """The scheduled module of ``lowered`` for one config of its kind's CUDA Space."""
    return lowered.schedule(cfg, _schedule_pointwise, _schedule_rows, _schedule_gemm)
