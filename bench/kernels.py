#!/usr/bin/env python
"""Benchmark braze's generated Triton kernels against eager PyTorch and torch.compile.

    python bench/kernels.py                 # everything (GPU); results in $OUT/kernels.json
    python bench/kernels.py --only rmsnorm,silu,rotary --ms 16,2048 --models 8b
    python bench/kernels.py --dry-run       # CPU, TRITON_INTERPRET=1, tiny shapes: build + check only

Each braze kernel is built through braze (Builder + fuse_groups + the Triton
generator), checked against a float32 reference, tuned by a small search over
configs of its Space (the chosen config is printed), then timed next to
eager PyTorch and torch.compile (default; and mode max-autotune-no-cudagraphs
for GEMM subgraphs) on the same subgraph and the same random inputs.
The headline of every row is the plain call (issue 18): the case's own
function compiled by ``braze.jit`` with default options, beside eager and
``torch.compile`` of the same function (the ``--peers`` modes), each called as a
user calls it (``fast(*args)``) and timed by CUDA-synchronised wall clock under
``inference_mode`` and under ``no_grad`` (``bench/plain_call.py``); that table is
printed last. The kernel-only figures sit beside it: the braze kernel built
directly and tuned here, and every contender timed the same way: by default ``--timer graph``,
``triton.testing.do_bench_cudagraph`` (median of CUDA graph replays: the GPU
time of the kernels, what a TB/s target is about; the Python launch of a
kernel costs 20-180 us depending on the host CPU and would otherwise be
timed for the small cases); ``--timer launch`` uses ``triton.testing.do_bench``
(plain launches; L2 cleared before every run). braze is also timed with plain
launches in every run (``braze_launch_ms``).

Cases: add + RMSNorm 8192x4096 bf16, SiLU(gate) * up 8192x14336 bf16,
rotary embedding of q and k (HF Llama, B4 S2048 32/8 heads D128), and GEMMs
with epilogues at Llama-3-8B (hidden 4096, MLP 14336) and Llama-3.2-1B
(2048, 8192) layer shapes for M in {1, 16, 128, 2048, 8192}:
``dual`` = silu(x @ Wg^T) * (x @ Wu^T) as one GEMM on [Wg; Wu],
``down`` = y @ Wd^T + residual, ``oproj`` = o @ Wo^T + residual.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:     # plain_call.py, when imported as a module (the tests)
    sys.path.append(str(ROOT / "bench"))

from braze.ir import Builder  # noqa: E402
from braze.ir.fused import fuse_groups  # noqa: E402
from braze.ir.types import dim_mul  # noqa: E402

BF16 = torch.bfloat16
MODELS = {"8b": (4096, 14336), "1b": (2048, 8192)}
BIG = 2**63 - 1


# --------------------------------------------------------------------------- cases
@dataclass
class Part:
    """One braze kernel of a case: its fused node and its operands (in node order)."""

    node: object
    inputs: list


@dataclass
class Case:
    op: str
    shape: str
    parts: list                       # [Part]; a case may launch several kernels (rotary: q and k)
    torch_fn: Callable                # eager subgraph: (*args) -> outputs (flattened like the parts' outputs)
    args: list                        # torch_fn's arguments
    bytes: int
    flops: int = 0
    gemm: bool = False
    tol: float = 2e-2


def _fused(b: Builder, outs, kind: str):
    g = b.graph(list(outs))
    nodes = [n for n in g.nodes if n.op not in ("input", "constant")]
    fg = fuse_groups(g, [(nodes, kind)])
    return next(n for n in fg.nodes if n.op == "fused")


def _inputs(node, feed: dict) -> list:
    return [feed[v.node.name] for v in node.inputs]


def rand(*shape, dev, dtype=BF16, scale=1.0):
    return (torch.randn(*shape, device=dev, dtype=torch.float32) * scale).to(dtype)


def case_add_rmsnorm(M: int, N: int, dev: str) -> Case:
    eps = 1e-5
    b = Builder()
    x = b.input("x", ("s0", N), BF16, dev)
    res = b.input("res", ("s0", N), BF16, dev)
    w = b.input("w", (N,), BF16, dev)
    h = b.call("add", x, res, overload="Tensor")
    hf = b.call("_to_copy", h, dtype=torch.float32)
    var = b.call("mean", b.call("pow", hf, 2, overload="Tensor_Scalar"), [-1], True, overload="dim")
    y = b.call("mul", hf, b.call("rsqrt", b.call("add", var, eps, overload="Tensor")), overload="Tensor")
    out = b.call("mul", w, b.call("_to_copy", y, dtype=BF16), overload="Tensor")
    node = _fused(b, [h, out], "reduction")
    feed = {"x": rand(M, N, dev=dev), "res": rand(M, N, dev=dev), "w": rand(N, dev=dev)}

    def fn(x, res, w):
        h = x + res
        hf = h.float()
        y = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
        return h, w * y.to(x.dtype)

    return Case("add+rmsnorm", f"{M}x{N} bf16", [Part(node, _inputs(node, feed))], fn,
                [feed["x"], feed["res"], feed["w"]], 4 * M * N * 2 + N * 2)


def case_silu_mul(M: int, N: int, dev: str) -> Case:
    b = Builder()
    g = b.input("g", ("s0", N), BF16, dev)
    u = b.input("u", ("s0", N), BF16, dev)
    node = _fused(b, [b.call("mul", b.call("silu", g), u, overload="Tensor")], "pointwise")
    feed = {"g": rand(M, N, dev=dev), "u": rand(M, N, dev=dev)}
    return Case("silu(gate)*up", f"{M}x{N} bf16", [Part(node, _inputs(node, feed))], lambda g, u: F.silu(g) * u,
                [feed["g"], feed["u"]], 3 * M * N * 2)


def _rotary_node(B: int, H: int, D: int, dev: str):
    b = Builder()
    q = b.input("q", (B, "s0", H * D), BF16, dev)
    cos = b.input("cos", (B, "s0", D), BF16, dev)
    sin = b.input("sin", (B, "s0", D), BF16, dev)
    s0 = q.type.shape[1]
    qh = b.call("permute", b.call("reshape", q, (B, s0, H, D)), (0, 2, 1, 3))
    c4, s4 = b.call("reshape", cos, (B, 1, s0, D)), b.call("reshape", sin, (B, 1, s0, D))
    x1, x2 = b.call("slice", qh, 3, 0, D // 2), b.call("slice", qh, 3, D // 2, BIG)
    rot = b.call("cat", (b.call("neg", x2), x1), -1)
    out = b.call("add", b.call("mul", qh, c4, overload="Tensor"), b.call("mul", rot, s4, overload="Tensor"),
                 overload="Tensor")
    return _fused(b, [out], "pointwise")


def case_rotary(B: int, S: int, Hq: int, Hkv: int, D: int, dev: str) -> Case:
    q, k = rand(B, S, Hq * D, dev=dev), rand(B, S, Hkv * D, dev=dev)
    pos = torch.arange(S, device=dev, dtype=torch.float32)
    inv = 1.0 / (500000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
    emb = torch.cat([pos[:, None] * inv[None, :]] * 2, -1)
    cos, sin = emb.cos()[None].expand(B, S, D).to(BF16).contiguous(), emb.sin()[None].expand(B, S, D).to(BF16).contiguous()
    nq, nk = _rotary_node(B, Hq, D, dev), _rotary_node(B, Hkv, D, dev)
    feed_q, feed_k = {"q": q, "cos": cos, "sin": sin}, {"q": k, "cos": cos, "sin": sin}

    def rotate_half(x):
        return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)

    def fn(q, k, cos, sin):  # as HF Llama: view heads, transpose, apply_rotary_pos_emb
        qh = q.view(B, S, Hq, D).transpose(1, 2)
        kh = k.view(B, S, Hkv, D).transpose(1, 2)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        return qh * c + rotate_half(qh) * s, kh * c + rotate_half(kh) * s

    nbytes = 2 * (B * S * Hq * D * 2) + 2 * (B * S * Hkv * D * 2) + 2 * (B * S * D * 2)
    return Case("rotary q+k", f"B{B} S{S} H{Hq}/{Hkv} D{D} bf16",
                [Part(nq, _inputs(nq, feed_q)), Part(nk, _inputs(nk, feed_k))], fn, [q, k, cos, sin], nbytes)


def case_gemm(kind: str, model: str, M: int, dev: str) -> Case:
    H, I = MODELS[model]
    b = Builder()
    if kind == "dual":
        x = b.input("x", ("s0", H), BF16, dev)
        w = b.input("w", (2 * I, H), BF16, dev)
        mm = b.call("mm", x, b.call("permute", w, (1, 0)))
        y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, I)), b.call("slice", mm, 1, I, BIG),
                   overload="Tensor")
        node = _fused(b, [y], "gemm")
        feed = {"x": rand(M, H, dev=dev), "w": rand(2 * I, H, dev=dev, scale=H ** -0.5)}

        def fn(x, w):
            h = x @ w.t()
            return F.silu(h[:, :I]) * h[:, I:]

        args, (N, K), out_n, extra = [feed["x"], feed["w"]], (2 * I, H), I, 0
    else:
        K, N = (I, H) if kind == "down" else (H, H)
        x = b.input("x", ("s0", K), BF16, dev)
        w = b.input("w", (N, K), BF16, dev)
        res = b.input("res", ("s0", N), BF16, dev)
        y = b.call("add", b.call("mm", x, b.call("permute", w, (1, 0))), res, overload="Tensor")
        node = _fused(b, [y], "gemm")
        feed = {"x": rand(M, K, dev=dev), "w": rand(N, K, dev=dev, scale=K ** -0.5), "res": rand(M, N, dev=dev)}

        def fn(x, w, res):
            return x @ w.t() + res

        args, out_n, extra = [feed["x"], feed["w"], feed["res"]], N, M * N * 2
    nbytes = M * K * 2 + N * K * 2 + M * out_n * 2 + extra
    return Case(f"gemm {kind} ({model})", f"M{M} N{N} K{K}", [Part(node, _inputs(node, feed))], fn, args, nbytes,
                2 * M * N * K, gemm=True, tol=3e-2)


# --------------------------------------------------------------------------- tuning a braze kernel
GEMM_CANDIDATES = [
    # (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, SPLIT_K, TMA, PERSISTENT)
    (128, 256, 64, 8, 8, 3, 1, 1, 0), (128, 128, 64, 8, 8, 4, 1, 1, 0), (128, 128, 64, 8, 4, 4, 1, 1, 0),
    (128, 256, 64, 8, 8, 3, 1, 1, 1), (128, 128, 64, 8, 8, 4, 1, 1, 1), (128, 128, 64, 8, 4, 4, 1, 1, 1),
    (256, 128, 64, 8, 8, 3, 1, 1, 0), (128, 256, 64, 8, 8, 3, 1, 0, 0), (128, 128, 64, 8, 8, 4, 1, 0, 0),
    (64, 256, 64, 8, 4, 4, 1, 1, 0), (128, 64, 64, 8, 4, 4, 1, 1, 0), (64, 128, 64, 8, 4, 4, 1, 1, 0),
    (64, 128, 64, 8, 4, 4, 1, 0, 0), (64, 64, 128, 8, 4, 4, 1, 1, 0), (64, 128, 64, 1, 4, 4, 2, 1, 0),
    (16, 64, 128, 1, 4, 5, 1, 0, 0), (16, 64, 128, 1, 4, 5, 2, 0, 0), (16, 64, 128, 1, 4, 5, 4, 0, 0),
    (16, 32, 256, 1, 4, 4, 1, 0, 0), (16, 128, 128, 1, 4, 4, 1, 0, 0), (16, 64, 256, 1, 4, 3, 1, 0, 0),
    (16, 64, 128, 1, 4, 5, 8, 0, 0), (16, 32, 128, 1, 4, 5, 4, 0, 0),
    (32, 64, 128, 1, 4, 4, 1, 0, 0), (32, 64, 128, 1, 4, 4, 4, 0, 0), (64, 64, 64, 1, 4, 4, 2, 1, 0),
]


def candidates(kernel, problem: dict, device, limit: int) -> list:
    """The template default first, then a few known-good configs valid for this problem."""
    space = kernel.space
    out = [space.default_config(problem, device)]

    def add(cfg):
        if cfg not in out and space.valid(cfg, problem, device):
            out.append(cfg)

    kind = kernel.gen.kind
    if kind == "gemm":
        M = int(problem["M"])
        rows = (16,) if M <= 16 else (16, 32, 64) if M <= 64 else (64, 128) if M <= 256 else (64, 128, 256)
        for bm, bn, bk, gm, w, st, sk, tma, pers in GEMM_CANDIDATES:
            if bm not in rows or (M > 256 and sk > 1):
                continue
            if tma and device.kind == "cuda" and device.capability < (9, 0):
                continue
            add({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm, "num_warps": w, "num_stages": st,
                 "SPLIT_K": sk, "TMA": tma, "PERSISTENT": pers, "GEMV": 0})
    elif kind == "reduction":
        base = out[0]
        for br in (1, 2, 4):
            for w in (4, 8, 16):
                add(dict(base, BLOCK_R=br, num_warps=w))
    else:
        for br, bc in ((1, 1024), (1, 2048), (1, 4096), (2, 1024), (4, 512), (2, 2048), (8, 128), (16, 128),
                       (32, 128), (4, 1024)):
            for w in (4, 8):
                add({"BLOCK_R": br, "BLOCK_C": bc, "num_warps": w})
    return out[:limit]


def check(outs, ref, tol: float) -> float:
    """Largest error relative to each reference output's magnitude; raises if above ``tol``."""
    worst = 0.0
    for o, r in zip(outs, ref):
        o, r = o.float(), r.float()
        scale = max(float(r.abs().max()), 1e-6)
        err = float((o - r).abs().max()) / scale
        if not err <= tol:
            raise AssertionError(f"error {err:.3g} (relative to max |ref| {scale:.3g}) above {tol}")
        worst = max(worst, err)
    return worst


def flatten(x) -> list:
    return list(x) if isinstance(x, (tuple, list)) else [x]


@dataclass
class Tuned:
    fns: list
    configs: list
    tried: list = field(default_factory=list)


def tune(case: Case, device, ref: list, timer, limit: int, log) -> Tuned:
    from braze.compiler.codegen.triton import kernel_for
    from braze.ir.interpreter import bind_symbols

    fns, configs, tried = [], [], []
    ref_at = 0
    for part in case.parts:
        k = kernel_for(part.node)
        env = bind_symbols(part.node.attr("graph"), part.inputs, check=False)
        problem = k.problem(env)
        n_out = len(part.node.types)
        part_ref = ref[ref_at:ref_at + n_out]
        ref_at += n_out
        best = None
        for cfg in candidates(k, problem, device, limit):
            try:
                fn = k.compile(cfg)
                check(flatten(fn(*part.inputs)), part_ref, case.tol)
                t = timer(lambda: fn(*part.inputs), quick=True)
            except Exception as e:  # noqa: BLE001 - a config that fails to compile or check is skipped
                tried.append({"kernel": k.name, "config": cfg, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                log(f"    {k.name} {cfg}: {type(e).__name__}: {str(e)[:120]}")
                continue
            path = getattr(k.module(), "_LAST_PATH", [None])[0]   # GEMMs: "tma" or "pointer" loads
            tried.append({"kernel": k.name, "config": cfg, "ms": t, "path": path})
            if best is None or (t is not None and t < best[0]):
                best = (t if t is not None else 0.0, dict(cfg, path=path) if path else cfg, fn)
        if best is None:
            raise RuntimeError(f"no config of {k.name} compiled and checked")
        log(f"    {k.name}: chosen {best[1]}" + (f" ({best[0] * 1e3:.1f} us)" if best[0] else ""))
        fns.append((best[2], part.inputs))
        configs.append(best[1])
    return Tuned(fns, configs, tried)


# --------------------------------------------------------------------------- main
def make_timer(dry: bool, kind: str = "graph"):
    if dry:
        return lambda fn, quick=False: None
    from triton.testing import do_bench, do_bench_cudagraph

    def launch_timer(fn, quick=False):
        return do_bench(fn, warmup=10 if quick else 25, rep=20 if quick else 100, return_mode="median")

    def graph_timer(fn, quick=False):
        return do_bench_cudagraph(fn, rep=20 if quick else 100, return_mode="median")
    return graph_timer if kind == "graph" else launch_timer


def peers(case: Case, timer, modes: list, log) -> dict:
    out = {"eager": timer(lambda: case.torch_fn(*case.args))}
    for mode in modes:
        if mode == "max-autotune-no-cudagraphs" and not case.gemm:
            continue
        torch._dynamo.reset()
        try:
            cfn = torch.compile(case.torch_fn, mode=None if mode == "default" else mode, dynamic=False)
            cfn(*case.args)
            out[mode] = timer(lambda: cfn(*case.args))
        except Exception as e:  # noqa: BLE001
            log(f"    torch.compile {mode} failed: {type(e).__name__}: {str(e)[:200]}")
            out[mode] = None
    return out


def plain_call(case: Case, ref: list, modes: list, dry: bool, log) -> dict:
    """The user's call: ``braze.jit`` of the case's function with default options
    (checked against the float32 reference), eager and torch.compile of the same
    function, each timed under both grad modes; ``{"times": ..., "error": ...}``."""
    import braze
    from plain_call import time_contenders

    torch._dynamo.reset()
    fast = braze.jit(case.torch_fn)
    with torch.inference_mode():
        err = check(flatten(fast(*case.args)), ref, case.tol)
    out: dict = {"error": err}
    if dry:
        return out
    contenders = {"braze": fast, "eager": case.torch_fn}
    for mode in modes:
        if mode == "max-autotune-no-cudagraphs" and not case.gemm:
            continue
        contenders["torch.compile" + ("" if mode == "default" else f" {mode}")] = torch.compile(
            case.torch_fn, mode=None if mode == "default" else mode)
    out["times"] = time_contenders(contenders, tuple(case.args), log=log)
    return out


def build_cases(args, dev: str) -> list:
    only = set(args.only.split(",")) if args.only else None
    want = (lambda name: only is None or name in only)
    cases = []
    if args.dry_run:
        if want("rmsnorm"):
            cases.append((("add+rmsnorm", "6x96"), lambda: case_add_rmsnorm(6, 96, dev)))
        if want("silu"):
            cases.append((("silu(gate)*up", "5x80"), lambda: case_silu_mul(5, 80, dev)))
        if want("rotary"):
            cases.append((("rotary q+k", "tiny"), lambda: case_rotary(2, 6, 4, 2, 16, dev)))
        for kind in ("dual", "down", "oproj"):
            if want(kind) or want("gemm"):
                cases.append(((f"gemm {kind} (tiny)", ""), lambda kind=kind: case_gemm_small(kind, dev)))
        return cases
    if want("rmsnorm"):
        cases.append((("add+rmsnorm", "8192x4096"), lambda: case_add_rmsnorm(8192, 4096, dev)))
    if want("silu"):
        cases.append((("silu(gate)*up", "8192x14336"), lambda: case_silu_mul(8192, 14336, dev)))
    if want("rotary"):
        cases.append((("rotary q+k", "B4 S2048"), lambda: case_rotary(4, 2048, 32, 8, 128, dev)))
    ms = [int(m) for m in args.ms.split(",")]
    for model in args.models.split(","):
        for kind in args.gemms.split(","):
            if not (want(kind) or want("gemm")):
                continue
            for m in ms:
                cases.append(((f"gemm {kind} ({model})", f"M{m}"), lambda kind=kind, model=model, m=m: case_gemm(kind, model, m, dev)))
    return cases


def case_gemm_small(kind: str, dev: str) -> Case:
    """A GEMM case at interpreter-friendly sizes (dry run)."""
    MODELS["tiny"] = (48, 40)
    return case_gemm(kind, "tiny", 10, dev)


def reference(case: Case) -> list:
    """The subgraph in float32 (no TF32) on upcast inputs."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        up = [a.float() if a.is_floating_point() else a for a in case.args]
        return flatten(case.torch_fn(*up))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def main(argv: Optional[list] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny shapes, no timing")
    ap.add_argument("--only", default="", help="comma list of: rmsnorm,silu,rotary,gemm,dual,down,oproj")
    ap.add_argument("--models", default="8b,1b", help="GEMM layer shapes: 8b (Llama-3-8B), 1b (Llama-3.2-1B)")
    ap.add_argument("--ms", default="1,16,128,2048,8192", help="GEMM M values")
    ap.add_argument("--gemms", default="dual,down", help="GEMM subgraphs: dual, down, oproj")
    ap.add_argument("--peers", default="default,max-autotune-no-cudagraphs", help="torch.compile modes to compare")
    ap.add_argument("--timer", choices=("graph", "launch"), default="graph",
                    help="graph: CUDA graph replays (GPU time); launch: plain launches")
    ap.add_argument("--configs", type=int, default=8, help="configs tried per braze kernel")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"), help="folder for kernels.json")
    ap.add_argument("--tag", default="", help="write kernels-<tag>.json (several runs side by side)")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="start no new case after this many seconds (the rest is listed as skipped)")
    args = ap.parse_args(argv)

    from braze.autotune.space import device_info
    from plain_call import raise_dynamo_limits
    import triton

    dev = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("bench/kernels.py needs a CUDA GPU (or --dry-run)")
    device = device_info(dev)
    torch.manual_seed(0)
    raise_dynamo_limits()
    timer = make_timer(args.dry_run, args.timer)
    launch_timer = make_timer(args.dry_run, "launch")
    modes = [] if args.dry_run else [m for m in args.peers.split(",") if m]
    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    result = {"device": device.name, "device_key": device.key, "torch": torch.__version__,
              "triton": triton.__version__, "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "dry_run": args.dry_run, "timer": args.timer, "rows": []}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"device {device.name}, torch {torch.__version__}, triton {triton.__version__}")
    out_file = out_dir / (f"kernels-{args.tag}.json" if args.tag else "kernels.json")
    for label, make in build_cases(args, dev):
        row: dict = {"op": label[0], "shape": label[1]}
        if time.time() - t_start > args.budget_s:
            row.update(ok=False, failure=f"skipped: --budget-s {args.budget_s:.0f} s used up")
            result["rows"].append(row)
            continue
        try:
            case = make()
            row.update(op=case.op, shape=case.shape, bytes=case.bytes, flops=case.flops)
            log(f"{case.op} {case.shape}")
            ref = reference(case)
            eager_err = check(flatten(case.torch_fn(*case.args)), ref, 1.0)
            tuned = tune(case, device, ref, timer, args.configs, log)
            outs = []
            for fn, xs in tuned.fns:
                outs += flatten(fn(*xs))
            row["error"] = check(outs, ref, case.tol)
            row["eager_error"] = eager_err
            row["configs"] = tuned.configs
            row["tried"] = tuned.tried

            def braze_all():
                for fn, xs in tuned.fns:
                    fn(*xs)

            row["braze_ms"] = timer(braze_all)
            row["braze_launch_ms"] = launch_timer(braze_all)
            row.update({f"{k}_ms": v for k, v in peers(case, timer, modes, log).items()})
            try:
                row["plain"] = plain_call(case, ref, modes, args.dry_run, log)
            except Exception as e:  # noqa: BLE001 - the kernel-only figures above stay
                row["plain"] = {"failure": f"{type(e).__name__}: {e}"}
                log(f"  plain call FAILED: {row['plain']['failure']}")
            if row["braze_ms"]:
                row["braze_tbps"] = case.bytes / row["braze_ms"] / 1e9
                if case.flops:
                    row["braze_tflops"] = case.flops / row["braze_ms"] / 1e9
            row["ok"] = True
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others
            row["ok"] = False
            row["failure"] = f"{type(e).__name__}: {e}"
            log(f"  FAILED: {row['failure']}")
            traceback.print_exc()
        result["rows"].append(row)
        out_file.write_text(json.dumps(result, indent=1, default=str))
    out_file.write_text(json.dumps(result, indent=1, default=str))
    print_table(result["rows"], modes)
    print_plain_table(result["rows"])
    log(f"wrote {out_file}")
    return result


def _ms(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-"


def print_table(rows: list, modes: list) -> None:
    head = ["op", "shape", "braze ms", "eager ms", "compile ms", "max-at ms", "braze TB/s", "TFLOP/s",
            "x eager", "x compile", "x max-at", "config"]
    lines = [head]
    for r in rows:
        if not r.get("ok"):
            status = "SKIPPED" if r.get("failure", "").startswith("skipped") else "FAILED"
            lines.append([r.get("op", "?"), r.get("shape", ""), status, r.get("failure", "")[:60]] + [""] * 8)
            continue
        b = r.get("braze_ms")

        def ratio(k):
            v = r.get(k)
            return f"{v / b:.2f}" if isinstance(v, float) and b else "-"
        cfgs = "; ".join(",".join(f"{k}={v}" for k, v in c.items()) for c in r.get("configs", []))
        lines.append([r["op"], r["shape"], _ms(b), _ms(r.get("eager_ms")), _ms(r.get("default_ms")),
                      _ms(r.get("max-autotune-no-cudagraphs_ms")),
                      f"{r['braze_tbps']:.2f}" if r.get("braze_tbps") else "-",
                      f"{r['braze_tflops']:.0f}" if r.get("braze_tflops") else "-",
                      ratio("eager_ms"), ratio("default_ms"), ratio("max-autotune-no-cudagraphs_ms"), cfgs])
    widths = [max(len(str(x[i])) for x in lines) for i in range(len(head) - 1)]
    print("\nratios are peer time / braze time (> 1: braze is faster)")
    for ln in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(ln, widths)) + "  " + str(ln[-1]))


def print_plain_table(rows: list) -> None:
    """The headline: the plain call of each contender, both grad modes, ratios peer / braze."""
    print("\nplain call (the user's fast(*args), default options, CUDA-synced wall clock; "
          "ratios peer ms / braze ms, > 1: braze faster)")
    for r in rows:
        plain = r.get("plain") or {}
        for mode, t in (plain.get("times") or {}).items():
            b = t.get("braze")
            cells = [f"{k} {v:.4f} ms" + (f" ({v / b:.2f}x)" if k != "braze" and v and b else "")
                     if v is not None else f"{k} FAILED" for k, v in t.items()]
            print(f"  {r['op']:<18} {r['shape']:<24} {mode:<15} " + ", ".join(cells))
        if plain.get("failure"):
            print(f"  {r['op']:<18} {r['shape']:<24} plain call FAILED: {plain['failure'][:120]}")
        elif plain and "times" not in plain:
            print(f"  {r['op']:<18} {r['shape']:<24} checked (error {plain.get('error', 0):.2e}), not timed")


if __name__ == "__main__":
    main()
