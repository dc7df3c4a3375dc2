"""The row-reduction template: reductions over the last dim of one row domain.

The domain is the reductions' input shape ``[rows..., N]``: ``R`` rows by
``N`` columns. A program owns ``BLOCK_R`` rows. Reductions are ordered in
*stages* (a reduction whose operand depends on another one comes after it,
e.g. LayerNorm's variance after its mean when written as two reductions).

- Single pass (``BLOCK_N >= N``): each row is one ``BLOCK_R x BLOCK_N`` tile
  in registers; every value is computed once, reductions are exact
  two-pass in registers (variance around the mean, max-subtracted softmax).
- Looped (``BLOCK_N < N``): one loop over the row per stage with per-lane
  accumulators (sum, max, Welford mean/M2/count, online softmax max/sum),
  combined across lanes at the end of the loop; then a last loop writes the
  row-shaped outputs that need the last stage. Operands are re-read in each
  loop (from L2 when the row fits); an output is written in the first loop
  that has what it needs.

Accumulation is in fp32 (fp64 for fp64). Outputs are row-shaped (the
domain's element count) or reduced (one value per row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from braze.autotune.space import Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.triton import exprs, scatter
from braze.compiler.codegen.triton.emit import Emitter, operand_names
from braze.compiler.codegen.triton.exprs import TV
from braze.compiler.codegen.triton.indexing import (ZERO, Index, Unsupported, atom_extents, domain_index, eq,
                                                     prod, render_size, size)
from braze.compiler.codegen.triton.layout import map_reshape
from braze.compiler.codegen.triton.kernel import (Generated, bind_symbols_code, bucket, dtype_name,
                                                  kernel_def, launch_call, next_pow2, operand_signature)
from braze.ir import Graph, Node, Value

KINDS = {"sum": "sum", "mean": "mean", "amax": "max", "amin": "min", "var": "var", "std": "std",
         "var_mean": "var_mean", "std_mean": "std_mean", "_softmax": "softmax", "_log_softmax": "log_softmax"}


@dataclass
class Red:
    node: Node
    kind: str
    x: Value
    keepdim: bool
    correction: float = 0.0
    stage: int = 0


def bind_schema(node: Node) -> dict:
    """Arguments of an ATen op by parameter name (from its schema)."""
    packet = getattr(torch.ops.aten, node.op)
    names = [node.overload] if node.overload else list(packet.overloads())
    for ovl in names:
        schema = getattr(packet, ovl)._schema
        params = [a for a in schema.arguments if not a.kwarg_only]
        if len(node.args) > len(params):
            continue
        known = {a.name for a in schema.arguments}
        if any(k not in known for k, _ in node.kwargs):
            continue
        out = {a.name: a.default_value if a.has_default_value() else None for a in schema.arguments}
        out.update(zip((a.name for a in params), node.args))
        out.update(node.kwargs)
        return out
    raise Unsupported(f"cannot bind the arguments of {node.op}")


def parse(node: Node) -> Red:
    kind = KINDS[node.op]
    a = bind_schema(node)
    x = a["self"]
    rank = x.type.rank
    if not x.type.dtype.is_floating_point:
        raise Unsupported(f"{node.op} of {x.type.dtype}: only floating-point reductions")
    if kind in ("softmax", "log_softmax"):
        dims = [a["dim"]]
        keep = True
    else:
        dims = a.get("dim")
        keep = bool(a.get("keepdim") or False)
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(rank))
        elif isinstance(dims, int):
            dims = [dims]
    dims = sorted({d % rank for d in dims}) if rank else []
    if rank == 0 or dims != [rank - 1]:
        raise Unsupported(f"{node.op} over dims {dims} of a rank-{rank} tensor: only the last dim is reduced")
    if node.op in ("sum", "mean") and a.get("dtype") is not None and not a["dtype"].is_floating_point:
        raise Unsupported(f"{node.op} to an integer dtype")
    corr = 0.0
    if kind in ("var", "std", "var_mean", "std_mean"):
        if "correction" in a and (a.get("correction") is not None or "unbiased" not in a):
            corr = 1.0 if a.get("correction") is None else float(a["correction"])
        else:
            corr = 1.0 if a.get("unbiased", True) else 0.0
    return Red(node, kind, x, keep, corr)


def _upstream_reds(v: Value, reds: Mapping[Node, Red], seen: Optional[set] = None) -> set:
    seen = set() if seen is None else seen
    out = set()
    stack = [v.node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in reds:
            out.add(n)
            continue
        stack.extend(u.node for u in n.inputs)
    return out


def _default(problem: Mapping, device: DeviceInfo) -> dict:
    R, N = int(problem["R"]), int(problem["N"])
    if N <= 16384:
        bn = max(16, next_pow2(N))
        br = max(1, min(next_pow2(R), 2048 // bn))
    else:
        bn, br = 4096, 1
    tile = br * bn
    warps = 1 if tile <= 128 else 2 if tile <= 512 else 4 if tile <= 2048 else 8 if tile <= 8192 else 16
    return {"BLOCK_R": br, "BLOCK_N": bn, "num_warps": warps}


SPACE = Space(
    knobs=(
        Knob("BLOCK_R", (1, 2, 4, 8, 16, 32, 64)),
        Knob("BLOCK_N", (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)),
        Knob("num_warps", (1, 2, 4, 8, 16, 32)),
    ),
    constraints=(
        Constraint("at most 64 elements of a tile per thread",
                   lambda c, p, d: c["BLOCK_R"] * c["BLOCK_N"] <= 64 * 32 * c["num_warps"]),
        Constraint("no block wider than a row, or taller than the rows",
                   lambda c, p, d: c["BLOCK_N"] <= max(16, next_pow2(int(p["N"])))
                   and c["BLOCK_R"] <= next_pow2(int(p["R"]))),
        Constraint("every thread has an element",
                   lambda c, p, d: c["BLOCK_R"] * c["BLOCK_N"] >= 32 * c["num_warps"] or c["num_warps"] == 1),
    ),
    default=_default,
)


class Template:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.reds: dict[Node, Red] = {}
        for n in graph.nodes:
            if n.op in KINDS:
                self.reds[n] = parse(n)
        if not self.reds:
            raise Unsupported("reduction group without a reduction")
        first = next(iter(self.reds.values()))
        self.dom = first.x.type.shape
        for r in self.reds.values():
            if len(r.x.type.shape) != len(self.dom) or not all(eq(a, b) for a, b in zip(r.x.type.shape, self.dom)):
                raise Unsupported(f"reductions over different shapes: {r.x.type} vs {first.x.type}")
        # stages in topological order (graph.nodes is topological)
        for n in graph.nodes:
            if n in self.reds:
                ups = _upstream_reds(self.reds[n].x, self.reds)
                self.reds[n].stage = 1 + max((self.reds[u].stage for u in ups), default=-1)
        self.last = max(r.stage for r in self.reds.values())
        self.R = prod(self.dom[:-1])
        self.N = size(self.dom[-1])
        self.idx = domain_index(self.dom)
        self.row = self.idx.linear(0, len(self.dom) - 1)
        self.red_idx = Index.of(tuple(self.dom[:-1]) + (1,), ((0, len(self.dom) - 1, self.row),
                                                               (len(self.dom) - 1, len(self.dom), ZERO))) \
            if len(self.dom) > 1 else Index.of((1,), ((0, 1, ZERO),))
        self.results: dict[Node, dict] = {}
        # outputs: row-shaped or reduced; a scatter output (unpack) is row-shaped, stored at its rows' destinations
        self.scatters = scatter.scatters(graph)
        for s in self.scatters.values():
            scatter.check_rows(s, self.R, self.N)
        self.row_outs, self.red_outs = [], []
        for j in range(len(graph.outputs)):
            o = self.value(j)
            n_el = prod(o.type.shape)
            if eq(n_el, self.R * self.N):
                self.row_outs.append(j)
            elif eq(n_el, self.R) and j not in self.scatters:
                self.red_outs.append(j)
            else:
                raise Unsupported(f"output {o.type} is neither row-shaped nor reduced for domain {list(self.dom)}")

    def value(self, j: int) -> Value:
        """What the kernel computes for output ``j``."""
        return scatter.domain_value(self.graph, j, self.scatters)

    # ------------------------------------------------------------------ what reductions hand to the emitter
    def hook(self, em: Emitter, v: Value, idx: Index, cond) -> TV:
        red = self.reds[v.node]
        res = self.results.get(v.node)
        if res is None:
            raise Unsupported(f"{v.node.op} is read before it is computed (stage order)")
        ir = v.type.dtype
        if red.kind in ("softmax", "log_softmax"):
            if idx.key() != self.idx.key():
                raise Unsupported(f"{v.node.op} output read at another index than the row domain")
            x = em.pull(red.x, self.idx, cond)
            xa = exprs.cast(x, res["acc"])
            if red.kind == "softmax":
                if res.get("tile_scope") is em:
                    return em.tmp(f"{res['e']} / {res['s']}", res["acc"], ir, frozenset({"r", "c"}))
                return em.tmp(f"tl.exp({xa} - {res['m']}) / {res['s']}", res["acc"], ir, frozenset({"r", "c"}) | x.axes)
            return em.tmp(f"{xa} - {res['m']} - tl.log({res['s']})", res["acc"], ir, frozenset({"r", "c"}) | x.axes)
        rank = v.type.rank
        rows = idx.linear(0, rank - 1 if red.keepdim else rank)
        if rows != self.row:
            raise Unsupported(f"{v.node.op} result read at another row than its own")
        name = {"sum": "sum", "mean": "mean", "max": "max", "min": "min", "var": "var", "std": "std"}.get(red.kind)
        if red.kind in ("var_mean", "std_mean"):
            name = ("var" if red.kind == "var_mean" else "std") if v.index == 0 else "mean"
        return TV(res[name], res["acc"], ir, frozenset({"r"}), False)

    # ------------------------------------------------------------------ code
    def acc_dtype(self, red: Red) -> torch.dtype:
        return torch.float64 if red.x.type.dtype == torch.float64 else torch.float32

    def single(self, em: Emitter) -> None:
        for stage in range(self.last + 1):
            for n, red in self.reds.items():
                if red.stage != stage:
                    continue
                acc = self.acc_dtype(red)
                x = em.pull(red.x, self.idx)
                xa = exprs.cast(x, acc)
                p = em.fresh("red")
                res = {"acc": acc}
                k = red.kind
                if k in ("sum", "mean", "var", "std", "var_mean", "std_mean"):
                    em.line(f"{p}_sum = tl.reduce(tl.where(mask, {xa}, 0.0), 1, _add, keep_dims=True)")
                    res["sum"] = f"{p}_sum"
                    if k != "sum":
                        em.line(f"{p}_mean = {p}_sum / N")
                        res["mean"] = f"{p}_mean"
                    if k in ("var", "std", "var_mean", "std_mean"):
                        em.line(f"{p}_d = tl.where(mask, {xa} - {p}_mean, 0.0)")
                        em.line(f"{p}_var = tl.reduce({p}_d * {p}_d, 1, _add, keep_dims=True) / (N - {red.correction!r})")
                        res["var"] = f"{p}_var"
                        if k.startswith("std"):
                            em.line(f"{p}_std = tl.sqrt({p}_var)")
                            res["std"] = f"{p}_std"
                elif k in ("max", "min"):
                    ident = 'float("-inf")' if k == "max" else 'float("inf")'
                    em.line(f"{p}_{k} = tl.reduce(tl.where(mask, {xa}, {ident}), 1, _{k}, keep_dims=True)")
                    res[k] = f"{p}_{k}"
                else:  # softmax, log_softmax
                    em.line(f"{p}_m = tl.reduce(tl.where(mask, {xa}, float(\"-inf\")), 1, _max, keep_dims=True)")
                    em.line(f"{p}_e = tl.where(mask, tl.exp({xa} - {p}_m), 0.0)")
                    em.line(f"{p}_s = tl.reduce({p}_e, 1, _add, keep_dims=True)")
                    res.update(m=f"{p}_m", e=f"{p}_e", s=f"{p}_s", tile_scope=em)
                self.results[n] = res
        for j in self.row_outs:
            self.store_row(em, j)
        for j in self.red_outs:
            self.store_reduced(em, j)

    def loop_head(self, em: Emitter) -> Emitter:
        em.line("for c0 in range(0, N, BLOCK_N):")
        body = em.scope(em.indent + "    ")
        body.line("c = c0 + tl.arange(0, BLOCK_N)[None, :]")
        body.line("if INDEX64:")
        body.line("    c = c.to(tl.int64)")
        body.line("cmask = c < N")
        body.line("mask = rmask & cmask")
        return body

    def looped(self, em: Emitter) -> None:
        placed = set()
        for stage in range(self.last + 2):
            reds = [(n, r) for n, r in self.reds.items() if r.stage == stage]
            outs = [j for j in self.row_outs if j not in placed and self.need(j) <= stage]
            if not reds and not outs:
                continue
            pending = []
            for n, red in reds:
                acc = self.acc_dtype(red)
                tl_acc = exprs.TL[acc]
                p = em.fresh("red")
                shape = "[BLOCK_R, BLOCK_N]"
                if red.kind in ("sum", "mean"):
                    em.line(f"{p}_acc = tl.full({shape}, 0, {tl_acc})")
                elif red.kind in ("max", "min"):
                    ident = 'float("-inf")' if red.kind == "max" else 'float("inf")'
                    em.line(f"{p}_acc = tl.full({shape}, {ident}, {tl_acc})")
                elif red.kind in ("var", "std", "var_mean", "std_mean"):
                    em.line(f"{p}_mean_acc = tl.full({shape}, 0, {tl_acc})")
                    em.line(f"{p}_m2_acc = tl.full({shape}, 0, {tl_acc})")
                    em.line(f"{p}_n_acc = tl.full({shape}, 0, {tl_acc})")
                else:
                    em.line(f"{p}_m_acc = tl.full({shape}, float(\"-inf\"), {tl_acc})")
                    em.line(f"{p}_s_acc = tl.full({shape}, 0, {tl_acc})")
                pending.append((n, red, p, acc))
            body = self.loop_head(em)
            for n, red, p, acc in pending:
                x = body.pull(red.x, self.idx)
                xa = body.tmp(f"tl.where(mask, {exprs.cast(x, acc)}, 0.0)", acc, red.x.type.dtype,
                              frozenset({"r", "c"}))
                k = red.kind
                if k in ("sum", "mean"):
                    body.line(f"{p}_acc += {xa.code}")
                elif k in ("max", "min"):
                    ident = 'float("-inf")' if k == "max" else 'float("inf")'
                    fn = "tl.maximum" if k == "max" else "tl.minimum"
                    body.line(f"{p}_acc = {fn}({p}_acc, tl.where(mask, {xa.code}, {ident}))")
                elif k in ("var", "std", "var_mean", "std_mean"):
                    body.line(f"{p}_n_new = {p}_n_acc + tl.where(mask, 1.0, 0.0)")
                    body.line(f"{p}_delta = {xa.code} - {p}_mean_acc")
                    body.line(f"{p}_mean_acc += tl.where(mask, {p}_delta / tl.maximum({p}_n_new, 1.0), 0.0)")
                    body.line(f"{p}_m2_acc += tl.where(mask, {p}_delta * ({xa.code} - {p}_mean_acc), 0.0)")
                    body.line(f"{p}_n_acc = {p}_n_new")
                else:
                    body.line(f"{p}_x = tl.where(mask, {xa.code}, float(\"-inf\"))")
                    body.line(f"{p}_m_new = tl.maximum({p}_m_acc, {p}_x)")
                    body.line(f"{p}_m_safe = tl.where({p}_m_new == float(\"-inf\"), 0.0, {p}_m_new)")
                    body.line(f"{p}_s_acc = {p}_s_acc * tl.exp({p}_m_acc - {p}_m_safe) + tl.exp({p}_x - {p}_m_safe)")
                    body.line(f"{p}_m_acc = {p}_m_new")
            for j in outs:
                self.store_row(body, j)
                placed.add(j)
            for n, red, p, acc in pending:
                res = {"acc": acc}
                k = red.kind
                if k in ("sum", "mean"):
                    em.line(f"{p}_sum = tl.reduce({p}_acc, 1, _add, keep_dims=True)")
                    res["sum"] = f"{p}_sum"
                    if k == "mean":
                        em.line(f"{p}_mean = {p}_sum / N")
                        res["mean"] = f"{p}_mean"
                elif k in ("max", "min"):
                    em.line(f"{p}_{k} = tl.reduce({p}_acc, 1, _{k}, keep_dims=True)")
                    res[k] = f"{p}_{k}"
                elif k in ("var", "std", "var_mean", "std_mean"):
                    em.helper("_welford_combine")
                    em.line(f"{p}_mean, {p}_m2, {p}_n = tl.reduce(({p}_mean_acc, {p}_m2_acc, {p}_n_acc), 1, "
                            f"_welford_combine, keep_dims=True)")
                    em.line(f"{p}_var = {p}_m2 / (N - {red.correction!r})")
                    res.update(mean=f"{p}_mean", var=f"{p}_var")
                    if k.startswith("std"):
                        em.line(f"{p}_std = tl.sqrt({p}_var)")
                        res["std"] = f"{p}_std"
                else:
                    em.helper("_softmax_combine")
                    em.line(f"{p}_m, {p}_s = tl.reduce(({p}_m_acc, {p}_s_acc), 1, _softmax_combine, keep_dims=True)")
                    em.line(f"{p}_m = tl.where({p}_m == float(\"-inf\"), 0.0, {p}_m)")
                    res.update(m=f"{p}_m", s=f"{p}_s")
                self.results[n] = res
        for j in self.red_outs:
            self.store_reduced(em, j)

    def need(self, j: int) -> int:
        ups = _upstream_reds(self.value(j), self.reds)
        return 1 + max((self.reds[u].stage for u in ups), default=-1)

    def store_row(self, em: Emitter, j: int) -> None:
        o = self.value(j)
        idx = self.idx if o.type.shape == self.dom else map_reshape(self.idx, o.type.shape)
        tv = em.pull(o, idx)
        val = exprs.cast(tv, o.type.dtype) if tv.dtype != o.type.dtype else tv.code
        row = f"dst{j}" if j in self.scatters else "r"
        em.line(f"tl.store(out{j}_ptr + {row} * N + c, {val}, mask=mask)")

    def store_reduced(self, em: Emitter, j: int) -> None:
        o = self.graph.outputs[j]
        idx = map_reshape(self.red_idx, o.type.shape)
        tv = em.pull(o, idx)
        val = exprs.cast(tv, o.type.dtype) if tv.dtype != o.type.dtype else tv.code
        em.line(f"tl.store(out{j}_ptr + r, {val}, mask=rmask)")


def generate(graph: Graph) -> Generated:
    t = Template(graph)
    name = graph.name if graph.name.startswith("reduction") else f"reduction_{graph.name}"
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    sig = operand_signature(graph)
    sig.size("R", t.R)
    sig.size("N", t.N)
    sig.constexpr("INDEX64")
    sig.constexpr("BLOCK_R")
    sig.constexpr("BLOCK_N")
    helpers: set = {"_add", "_max", "_min"}
    sources = []
    with atom_extents({"r": t.R, "c": t.N}):
        for mode in ("single", "looped"):
            t.results = {}
            em = Emitter(graph, operand_names(graph), {"r": "r", "c": "c"}, {"r": "rmask", "c": "cmask"})
            em.special = {n: t.hook for n in t.reds}
            em.line("pid = tl.program_id(0)")
            em.line("r = pid * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]")
            em.line("if INDEX64:")
            em.line("    r = r.to(tl.int64)")
            em.line("rmask = r < R")
            for sc in t.scatters.values():
                scatter.dst_rows(em, sc)
            if mode == "single":
                em.line("c = tl.arange(0, BLOCK_N)[None, :]")
                em.line("if INDEX64:")
                em.line("    c = c.to(tl.int64)")
                em.line("cmask = c < N")
                em.line("mask = rmask & cmask")
                t.single(em)
            else:
                t.looped(em)
            helpers |= em.helpers
            sources.append(kernel_def(f"{name}_{mode}", sig) + "\n".join(em.lines) + "\n")

    ins = ", ".join(f"in{i}" for i in range(len(graph.inputs)))
    outs_s = ", ".join(f"out{j}" for j in range(len(graph.outputs)))
    ret = scatter.returned(graph, t.scatters)
    lines = [f"def launch({ins}, *, BLOCK_R, BLOCK_N, num_warps):"]
    lines += bind_symbols_code(graph)
    lines += scatter.alloc_lines(graph, t.scatters)
    lines.append(f"    R = {render_size(t.R)}")
    lines.append(f"    N = {render_size(t.N)}")
    lines.append("    if R == 0:")
    lines.append(f"        return {ret}")
    lines.append("    if N == 0:")
    lines.append(f"        raise ValueError('{name}: reduction over an empty dimension')")
    lines.append(f"    INDEX64 = _index64({ins}, {outs_s})")
    lines.append("    grid = (((R + BLOCK_R - 1) // BLOCK_R),)")
    lines.append("    if BLOCK_N >= N:  # the whole row in one block")
    lines.append(launch_call(f"{name}_single", sig, "grid", "        ", ", num_warps=num_warps").rstrip())
    lines.append("    else:  # looped over the row")
    lines.append(launch_call(f"{name}_looped", sig, "grid", "        ", ", num_warps=num_warps").rstrip())
    lines.append(f"    return {ret}")
    launch = scatter.host_code(t.scatters) + "\n".join(lines) + "\n"
    R, N, dt = t.R, t.N, graph.outputs[0].type.dtype

    def problem(env):
        return {"R": bucket(R, env), "N": bucket(N, env), "dtype": dtype_name(dt)}

    return Generated("reduction", name, "\n\n".join(sources), launch, SPACE, problem, helpers)


__all__ = ["generate", "SPACE", "Template"]
