"""The pointwise template: one 2-D tiled kernel over the outputs' shape.

The iteration domain is the first output's shape, seen as ``R`` rows (all
dims but the last, one linear index ``r``) by ``C`` columns (the last dim,
``c``). A program computes a ``BLOCK_R x BLOCK_C`` tile: column indices come
straight from ``tl.arange`` so that loads of operands whose last stride is 1
(Triton specialises strides equal to 1) are contiguous and vectorised. Every
output is written contiguously in its own shape (same element count as the
domain; a reshape of the domain is read through the index map).
"""
from __future__ import annotations

from typing import Mapping

from braze.autotune.space import Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.triton import exprs
from braze.compiler.codegen.triton.emit import Emitter, operand_names
from braze.compiler.codegen.triton.indexing import (Unsupported, atom_extents, domain_index, eq, prod,
                                                     render_size)
from braze.compiler.codegen.triton.layout import map_reshape
from braze.compiler.codegen.triton.kernel import (Generated, alloc_code, bind_symbols_code, bucket, dtype_name,
                                                  kernel_def, launch_call, next_pow2, operand_signature)
from braze.ir import Graph


def _default(problem: Mapping, device: DeviceInfo) -> dict:
    R, C = int(problem["R"]), int(problem["C"])
    bc = min(next_pow2(C), 1024)
    tile = 4096 if device.kind == "cuda" else 1024
    # NOTE: keep at least ~2 waves of programs on the GPU for small problems.
    sms = max(device.sm_count, 1)
    while tile > 512 and (R * C) // tile < 2 * sms and device.kind == "cuda":
        tile //= 2
    br = max(1, min(next_pow2(R), tile // bc))
    n = br * bc
    warps = 1 if n <= 128 else 2 if n <= 512 else 4 if n <= 2048 else 8
    return {"BLOCK_R": br, "BLOCK_C": bc, "num_warps": warps}


SPACE = Space(
    knobs=(
        Knob("BLOCK_R", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
        Knob("BLOCK_C", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)),
        Knob("num_warps", (1, 2, 4, 8, 16)),
    ),
    constraints=(
        Constraint("tile fits in registers (BLOCK_R * BLOCK_C <= 16384)",
                   lambda c, p, d: c["BLOCK_R"] * c["BLOCK_C"] <= 16384),
        Constraint("no block wider than the rows/columns it covers",
                   lambda c, p, d: c["BLOCK_C"] <= next_pow2(int(p["C"])) and c["BLOCK_R"] <= next_pow2(int(p["R"]))),
        Constraint("every thread has an element (BLOCK_R * BLOCK_C >= 32 * num_warps)",
                   lambda c, p, d: c["BLOCK_R"] * c["BLOCK_C"] >= 32 * c["num_warps"] or c["num_warps"] == 1),
    ),
    default=_default,
)


def generate(graph: Graph) -> Generated:
    outs = graph.outputs
    if not outs:
        raise Unsupported("group has no outputs")
    dom = outs[0].type.shape
    numel = prod(dom)
    for o in outs:
        if not eq(prod(o.type.shape), numel):
            raise Unsupported(f"pointwise outputs of different sizes: {o.type} vs {outs[0].type}")
    R = prod(dom[:-1]) if len(dom) > 1 else 1
    C = dom[-1] if dom else 1
    name = graph.name if graph.name.startswith("pointwise") else f"pointwise_{graph.name}"
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)

    em = Emitter(graph, operand_names(graph), {"r": "r", "c": "c"}, {"r": "rmask", "c": "cmask"})
    em.line("pid = tl.program_id(0)")
    em.line("num_c = (C + BLOCK_C - 1) // BLOCK_C")
    em.line("r = (pid // num_c) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]")
    em.line("c = (pid % num_c) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]")
    em.line("if INDEX64:")
    em.line("    r = r.to(tl.int64)")
    em.line("    c = c.to(tl.int64)")
    em.line("rmask = r < R")
    em.line("cmask = c < C")
    with atom_extents({"r": R, "c": C}):
        idx = domain_index(dom)
        for j, o in enumerate(outs):
            oi = idx if o.type.shape == dom else map_reshape(idx, o.type.shape)
            tv = em.pull(o, oi)
            val = exprs.cast(tv, o.type.dtype) if tv.dtype != o.type.dtype else tv.code
            em.line(f"tl.store(out{j}_ptr + r * C + c, {val}, mask=rmask & cmask)")

    sig = operand_signature(graph)
    sig.size("R", R)
    sig.size("C", C)
    sig.constexpr("INDEX64")
    sig.constexpr("BLOCK_R")
    sig.constexpr("BLOCK_C")
    kernels = kernel_def(name, sig) + "\n".join(em.lines) + "\n"

    ins = ", ".join(f"in{i}" for i in range(len(graph.inputs)))
    outs_s = ", ".join(f"out{j}" for j in range(len(outs)))
    lines = [f"def launch({ins}, *, BLOCK_R, BLOCK_C, num_warps):"]
    lines += bind_symbols_code(graph)
    lines += alloc_code(graph)
    lines.append(f"    R = {render_size(R)}")
    lines.append(f"    C = {render_size(C)}")
    ret = outs_s if len(outs) > 1 else "out0"
    lines.append("    if R * C == 0:")
    lines.append(f"        return {ret}")
    lines.append(f"    INDEX64 = _index64({ins}, {outs_s})")
    lines.append("    grid = (((R + BLOCK_R - 1) // BLOCK_R) * ((C + BLOCK_C - 1) // BLOCK_C),)")
    launch = "\n".join(lines) + "\n" + launch_call(name, sig, "grid", extra=", num_warps=num_warps")
    launch += f"    return {ret}\n"

    def problem(env):
        return {"R": bucket(R, env), "C": bucket(C, env), "dtype": dtype_name(outs[0].type.dtype)}

    return Generated("pointwise", name, kernels, launch, SPACE, problem, set(em.helpers))
