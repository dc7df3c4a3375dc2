"""Build TVM CUDA kernels on any machine (no GPU needed) and export them for
a GPU machine that has no TVM: "compile here, run there".

    python -m tools.tvm_cuda_export --out .tvmcuda [--arch sm_90]

writes into ``--out``:

- one shared library per kernel and config (host code for x86-64 plus the
  kernel's CUDA source; ``runtime_loader`` compiles that source with NVRTC
  on the GPU machine when it loads the library),
- ``lib/libtvm_runtime.so`` and ``lib/libtvm_runtime_cuda.so`` copied from
  the installed apache-tvm wheel,
- ``manifest.json``: for each kernel its file, operands (shapes, dtypes),
  outputs (the buffer the kernel writes and the view handed back), symbols
  and where to read them, the config, and the group's IR.

By default the benchmark suite of ``bench/tvm_cuda.py`` is exported
(:data:`SUITE`): the memory-bound groups add + RMSNorm, SiLU(g) * u and
rotary embedding, each in a few configs of its CUDA Space, so the GPU side
can pick the fastest without TVM. ``export(entries, out)`` exports any
fused groups.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from braze.ir import Builder, Graph, Node
from braze.ir.fused import fuse_groups
from braze.ir.printer import print_graph

bf16, f32 = torch.bfloat16, torch.float32


# --- the benchmark suite ---------------------------------------------------------

def add_rmsnorm(b, x, res, w):
    """HF Llama's residual add + RMSNorm: y = x + res; w * (y.f32 * rsqrt(mean(y.f32^2) + eps)).bf16"""
    y = b.call("add", x, res)
    yf = b.call("_to_copy", y, dtype=f32)
    m = b.call("mean", b.call("pow", yf, 2, overload="Tensor_Scalar"), [-1], True, overload="dim")
    n = b.call("_to_copy", b.call("mul", yf, b.call("rsqrt", b.call("add", m, 1e-6))), dtype=x.type.dtype)
    return [y, b.call("mul", w, n)]


def silu_mul(b, g, u):
    return b.call("mul", b.call("silu", g), u)


def rotary(b, q, cos, sin):
    """q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q[..., d/2:], q[..., :d/2])."""
    d = q.type.shape[-1]
    x1 = b.call("slice", q, -1, 0, d // 2, overload="Tensor")
    x2 = b.call("slice", q, -1, d // 2, d, overload="Tensor")
    rot = b.call("cat", [b.call("neg", x2), x1], -1)
    s = cos.type.shape
    c = b.call("reshape", cos, (1, 1) + tuple(s))
    sn = b.call("reshape", sin, (1, 1) + tuple(s))
    return b.call("add", b.call("mul", q, c), b.call("mul", rot, sn))


@dataclass(frozen=True)
class Case:
    """One benchmark group: how to build it, its kind, operand shapes and dtypes, configs to export."""

    name: str
    build: Callable
    kind: str
    operands: tuple          # ((shape, dtype), ...)
    configs: tuple = ()      # extra configs besides the Space default
    bytes_moved: int = 0     # bytes read + written once (for TB/s)


def _nbytes(shapes_dtypes) -> int:
    n = 0
    for shape, dtype in shapes_dtypes:
        k = 1
        for d in shape:
            k *= d
        n += k * torch.empty((), dtype=dtype).element_size()
    return n


SUITE: tuple[Case, ...] = (
    Case("add_rmsnorm", add_rmsnorm, "reduction", (((8192, 4096), bf16), ((8192, 4096), bf16), ((4096,), bf16)),
         ({"threads": 256, "vec": 4, "stage": True}, {"threads": 1024, "vec": 4, "stage": True},
          {"threads": 512, "vec": 2, "stage": False}),
         _nbytes([((8192, 4096), bf16)] * 4 + [((4096,), bf16)])),
    Case("silu_mul", silu_mul, "pointwise", (((8192, 14336), bf16), ((8192, 14336), bf16)),
         ({"threads": 128, "vec": 4, "unroll": 4}, {"threads": 512, "vec": 4, "unroll": 1},
          {"threads": 256, "vec": 2, "unroll": 4}),
         _nbytes([((8192, 14336), bf16)] * 3)),
    Case("rotary", rotary, "pointwise", (((4, 32, 2048, 128), bf16), ((2048, 128), bf16), ((2048, 128), bf16)),
         ({"threads": 128, "vec": 4, "unroll": 4}, {"threads": 512, "vec": 4, "unroll": 1},
          {"threads": 256, "vec": 2, "unroll": 2}),
         _nbytes([((4, 32, 2048, 128), bf16)] * 2 + [((2048, 128), bf16)] * 2)),
)


def linear_gelu_residual(b, x, w, bias, res):
    y = b.call("addmm", bias, x, b.call("permute", w, (1, 0)))
    return b.call("add", b.call("gelu", y), res)


def softmax_rows(b, x):
    return b.call("_softmax", b.call("mul", x, 0.125), -1, False)


def layer_norm(b, x, w, bias):
    v, m = b.call("var_mean", x, [-1], correction=0, keepdim=True, overload="correction")
    r = b.call("rsqrt", b.call("add", v, 1e-5))
    return b.call("add", b.call("mul", b.call("mul", b.call("sub", x, m), r), w), bias)


# Groups exported only to be checked on the GPU against braze's interpreter
# (other kinds, odd sizes, symbolic dims): names start with "check_".
CHECKS: tuple[Case, ...] = (
    Case("check_gemm", linear_gelu_residual, "gemm",
         (((1000, 512), bf16), ((768, 512), bf16), ((768,), bf16), ((1000, 768), bf16))),
    Case("check_softmax_sym", softmax_rows, "reduction", ((("s0", 4096), f32),)),
    Case("check_layernorm_odd", layer_norm, "reduction", (((37, 1000), f32), ((1000,), f32), ((1000,), f32))),
)


def fused_node(build: Callable, kind: str, operands: Sequence[tuple]) -> Node:
    """The fused node made of every compute node ``build(b, *inputs)`` adds
    (its operands are in first-use order, see :func:`builder_order`)."""
    b = Builder()
    xs = [b.input(f"x{i}", shape, dtype, "cuda") for i, (shape, dtype) in enumerate(operands)]
    outs = build(b, *xs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    g = b.graph(outs)
    g2 = fuse_groups(g, [(list(g.compute_nodes), kind)])
    return [n for n in g2.nodes if n.op == "fused"][0]


def builder_order(node: Node) -> list[int]:
    """For each operand of the fused node (first-use order), its position among the builder's inputs."""
    return [int(v.node.name[1:]) for v in node.args]


# --- export -------------------------------------------------------------------------

def _dims(dims) -> list:
    return [d if isinstance(d, int) else str(d) for d in dims]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def export(entries: Sequence[tuple[str, Node, dict]], out: str, arch: str = "sm_90") -> dict:
    """Export ``(name, fused node, config)`` entries into folder ``out``; returns the manifest."""
    import tvm

    from braze.compiler.codegen.tvm import build as B
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    os.makedirs(out, exist_ok=True)
    kernels = []
    for name, node, config in entries:
        k = TVMKernel(node, node.attr("kind"), "cuda")
        cfg = dict(config)
        t0 = time.perf_counter()
        low = k.lowered(cfg)
        mod = k.schedule_module(low, cfg)
        ex = tvm.compile(mod, target=B.cuda_target(arch))
        fname = f"{name}.so"
        ex.export_library(os.path.join(out, fname))
        sub: Graph = node.attr("graph")
        kernels.append({
            "name": name, "file": fname, "function": "main", "kind": k.kind, "config": cfg,
            "operands": [{"shape": _dims(n.type.shape), "dtype": _dtype_name(n.type.dtype)} for n in sub.inputs],
            "outputs": [{"alloc": _dims(s.alloc_dims), "view": _dims(s.view_dims), "dtype": _dtype_name(s.dtype)}
                        for s in low.outputs],
            "builder_order": builder_order(node),
            "syms": list(low.sym_names),
            "sym_sources": {s: list(v) for s, v in k._sym_sources.items()},
            "ir": print_graph(sub),
            "build_s": round(time.perf_counter() - t0, 3),
        })
    libdir = os.path.join(out, "lib")
    os.makedirs(libdir, exist_ok=True)
    src = os.path.join(os.path.dirname(tvm.__file__), "lib")
    for lib in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        shutil.copy2(os.path.join(src, lib), os.path.join(libdir, lib))
    manifest = {"arch": arch, "tvm": tvm.__version__, "kernels": kernels}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def suite_entries(cases: Sequence[Case] = SUITE, extra: bool = True) -> list[tuple[str, Node, dict]]:
    """Every case with its Space default (for a 4096 problem where dims are
    symbolic) and, with ``extra``, the case's other configs."""
    from braze.compiler.codegen.tvm.kernel import TVMKernel, _cuda_info

    entries = []
    for case in cases:
        node = fused_node(case.build, case.kind, case.operands)
        k = TVMKernel(node, case.kind, "cuda")
        env = {s: 4096 for v in node.args for s in v.type.symbols}
        default = k.space.default_config(k.problem(env), _cuda_info())
        cfgs = [default] + ([c for c in case.configs if c != default] if extra else [])
        for cfg in cfgs:
            tag = "_".join(f"{a}{int(v) if isinstance(v, bool) else v}" for a, v in sorted(cfg.items()))
            entries.append((f"{case.name}.{tag}", node, cfg))
    return entries


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=".tvmcuda", help="folder to write (default .tvmcuda)")
    p.add_argument("--arch", default="sm_90", help="CUDA architecture (default sm_90, the H100)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    m = export(suite_entries() + suite_entries(CHECKS, extra=False), args.out, args.arch)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)
                if os.path.isfile(os.path.join(args.out, f)))
    total += sum(os.path.getsize(os.path.join(args.out, "lib", f)) for f in os.listdir(os.path.join(args.out, "lib")))
    print(f"exported {len(m['kernels'])} kernels for {args.arch} into {args.out} "
          f"({total / 1e6:.1f} MB with the runtime libraries) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
