"""The ``cache_write_heads_`` kernel: a pointwise group's heads split into the query
output and the new rows of the K and V caches (``ir/cache_write.py``).

The node's ``heads`` subgraph computes ``y [B, H, S, D]`` (the rotary embedding of
the query and key heads) and returns ``q = y[:, :split]`` and ``k = y[:, split:]``.
One program covers ``BLOCK_R`` rows ``(b, h, s)`` of ``y`` by ``BLOCK_D`` columns:
it computes ``y`` at those elements with the emitter (as the pointwise template
does), stores query heads to ``q`` (contiguous), and for key heads stores ``y``
to ``kc[b, h - split, index[s], :]`` and copies ``v[b, h - split, s, :]`` to
``vc[b, h - split, index[s], :]``: the value heads ride along the key heads
(``v`` has the key heads' shape). Caches, ``v`` and the index take any strides.
"""
from __future__ import annotations

from typing import Mapping

from braze.autotune.space import Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.triton import exprs
from braze.compiler.codegen.triton.emit import Emitter, operand_names
from braze.compiler.codegen.triton.indexing import Unsupported, atom_extents, domain_index, eq, render_size, size
from braze.compiler.codegen.triton.kernel import (Generated, Signature, bind_symbols_code, bucket, dtype_code,
                                                  dtype_name, kernel_def, launch_call, next_pow2, shape_code,
                                                  symbol_names)
from braze.ir import Graph


def _default(p: Mapping, d: DeviceInfo) -> dict:
    bd = next_pow2(int(p["D"]))
    br = max(1, min(4 if int(p["rows"]) <= 4096 else 16, 1024 // bd))
    n = br * bd
    return {"BLOCK_R": br, "BLOCK_D": bd, "num_warps": 1 if n <= 256 else 2 if n <= 1024 else 4}


SPACE = Space(
    knobs=(Knob("BLOCK_R", (1, 2, 4, 8, 16, 32)), Knob("BLOCK_D", (16, 32, 64, 128, 256, 512)),
           Knob("num_warps", (1, 2, 4, 8))),
    constraints=(Constraint("one block holds a row", lambda c, p, d: c["BLOCK_D"] >= int(p["D"])),
                 Constraint("no more rows per block than rows",
                            lambda c, p, d: c["BLOCK_R"] <= max(1, next_pow2(int(p["rows"]))))),
    default=_default,
)

# the caches, the index and v come first among the node's operands, then the heads' inputs
HEAD = ("kb", "vb", "idx", "v")


def generate(heads: Graph) -> Generated:
    if len(heads.outputs) != 2:
        raise Unsupported("a cache_write group returns the query heads and the key rows")
    q, k = heads.outputs
    y = q.node.args[0] if q.node.op == "slice" else None
    if y is None or k.node.op != "slice" or k.node.args[0] != y or y.type.rank != 4:
        raise Unsupported("the query heads and key rows are not two head slices of one [B, H, S, D] value")
    B, H, S, D = (size(d) for d in y.type.shape)
    split = size(q.type.shape[1])
    if not (eq(q.node.args[2], 0) and eq(split + size(k.type.shape[1]), H)):
        raise Unsupported("the head slices do not split the heads in two")
    if not D.is_Integer:
        raise Unsupported(f"head dim {D} is not static")
    rows = B * H * S
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in f"cache_write_{heads.name}")

    em = Emitter(heads, operand_names(heads), {"r": "r", "c": "c"}, {"r": "rmask", "c": "cmask"})
    for ln in ("r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]",
               "c = tl.arange(0, BLOCK_D)[None, :]",
               "if INDEX64:", "    r = r.to(tl.int64)",
               "rmask = r < ROWS", "cmask = c < D",
               "s = r % S", "h = (r // S) % H", "b = r // (S * H)",
               "is_q = h < SPLIT", "kh = h - SPLIT"):
        em.line(ln)
    with atom_extents({"r": rows, "c": D}):
        tv = em.pull(y, domain_index(y.type.shape))
    val = exprs.cast(tv, y.type.dtype) if tv.dtype != y.type.dtype else tv.code
    em.line(f"y = {val}")
    em.line("tl.store(q_ptr + ((b * SPLIT + h) * S + s) * D + c, y, mask=rmask & cmask & is_q)")
    em.line("kmask = rmask & cmask & (h >= SPLIT)")
    em.line("row = tl.load(idx_ptr + s * idx_s0, mask=rmask & (h >= SPLIT), other=0)")
    em.line("tl.store(kb_ptr + b * kb_s0 + kh * kb_s1 + row * kb_s2 + c * kb_s3, y, mask=kmask)")
    em.line("vv = tl.load(v_ptr + b * v_s0 + kh * v_s1 + s * v_s2 + c * v_s3, mask=kmask)")
    em.line("tl.store(vb_ptr + b * vb_s0 + kh * vb_s1 + row * vb_s2 + c * vb_s3, vv, mask=kmask)")

    sig = Signature()
    for a in HEAD:
        sig.add(f"{a}_ptr", a)
    for i in range(len(heads.inputs)):
        sig.add(f"in{i}_ptr", f"in{i}")
    sig.add("q_ptr", "q")
    for a, rank in zip(HEAD, (4, 4, 1, 4)):
        for d in range(rank):
            sig.add(f"{a}_s{d}", f"{a}.stride({d})")
    for i, n in enumerate(heads.inputs):
        for d in range(n.type.rank):
            sig.add(f"in{i}_s{d}", f"in{i}.stride({d})")
    for s in symbol_names(heads):
        sig.add(f"sym_{s}", f"sym_{s}")
    for c, e in (("ROWS", rows), ("H", H), ("S", S), ("D", D), ("SPLIT", split)):
        sig.size(c, e)
    for c in ("INDEX64", "BLOCK_R", "BLOCK_D"):
        sig.constexpr(c)
    kernels = kernel_def(name, sig) + "\n".join(em.lines) + "\n"

    ins = ", ".join(f"in{i}" for i in range(len(heads.inputs)))
    lines = [f"def launch(kb, vb, idx, v, {ins}, *, BLOCK_R, BLOCK_D, num_warps):"]
    lines += bind_symbols_code(heads)
    lines += [f"    ROWS = {render_size(rows)}", f"    H = {render_size(H)}", f"    S = {render_size(S)}",
              f"    D = {render_size(D)}", f"    SPLIT = {render_size(split)}",
              f"    q = torch.empty({shape_code(q.type.shape)}, dtype={dtype_code(q.type.dtype)}, device=kb.device)",
              "    if ROWS == 0:", "        return kb, vb, q",
              f"    INDEX64 = _index64(kb, vb, v, q, {ins})",
              "    grid = ((ROWS + BLOCK_R - 1) // BLOCK_R,)"]
    launch = "\n".join(lines) + "\n" + launch_call(name, sig, "grid", extra=", num_warps=num_warps")
    launch += "    return kb, vb, q\n"

    def problem(env):
        return {"rows": bucket(rows, env), "D": int(D), "dtype": dtype_name(y.type.dtype)}

    return Generated("cache_write", name, kernels, launch, SPACE, problem, set(em.helpers))
