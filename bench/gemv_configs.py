"""Which GEMV configuration reads bf16 / int8 / int4 weights fastest (decode, one row).

A kernel study behind the GEMM template's GEMV defaults, not a user-facing figure: the
Llama-1B decode projections (Q/K/V 3072 x 2048, o_proj 2048 x 2048, gate/up 16384 x 2048
as one GEMM, down 2048 x 8192) in bf16 (the template's two GEMV forms, GEMV=1 the
``[BLOCK_N, BLOCK_K]`` tile reduced each K block, GEMV=2 the runs form, beside
``F.linear`` on cuBLAS), and quantized to int8 (per channel) and int4 (group 128), each
run by the template's kernel over a small grid of GEMV configurations and by the
standalone ``triton_quant`` kernel with its default. Timed as the selection times a
candidate (``autotune/measure.time_callable``: CUDA graphs of many calls, L2 flushed before
each, the flush subtracted) after a check against the dequantized float32 product.
Prints one line per (format, shape, kernel, config): microseconds and the weight
bytes' TB/s. ``--wide`` sweeps a larger grid (``WIDE``: rows a program, K block, warps,
pipelining, split-K), its kernels built first in ``--jobs`` processes.

    python bench/gemv_configs.py [--json out.json] [--wide] [--formats bf16,int8,int4]
    python bench/gemv_configs.py --smoke     # tiny shapes (CPU interpreter)
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing

import torch

try:
    import repo_root  # noqa: F401 - the repository root first on sys.path
except ImportError:   # a spawned build worker (prebuild): the root is on its path already
    pass

SHAPES = {"gate_up": (16384, 2048), "down": (2048, 8192), "qkv": (3072, 2048), "o": (2048, 2048)}
GRID = {"bf16": {"GEMV": (1, 2), "BLOCK_N": (4, 8), "BLOCK_K": (512, 1024), "num_warps": (4,)},
        "int8": {"GEMV": (1,), "BLOCK_N": (4, 8), "BLOCK_K": (512, 1024), "num_warps": (4, 8)},
        "int4": {"GEMV": (1,), "BLOCK_N": (4, 8), "BLOCK_K": (512, 1024, 2048), "num_warps": (4, 8)}}
WIDE = {"GEMV": (1, 2), "BLOCK_N": (4, 8, 16), "BLOCK_K": (512, 1024, 2048), "num_warps": (4, 8),
        "num_stages": (1, 3), "SPLIT_K": (1, 2, 4)}


def template_kernel(n, k, dtype, bits=None):
    """The GEMM template's kernel for ``x[1, k] @ w[n, k]^T`` and its weight operands: a float
    ``nn.Linear`` weight, or (``bits``) the weight quantized (int4: group 128)."""
    from braze.compiler.codegen.triton import kernel_for
    from braze.compiler.quantize import quantize_weight
    from braze.ir import Builder
    from tests.codegen.triton_helpers import fused_node

    b = Builder()
    x = b.input("x", (1, k), dtype)
    w = torch.randn(n, k, dtype=dtype)
    if bits is None:
        wi = b.input("w", (n, k), dtype)
        return kernel_for(fused_node(b, [b.call("mm", x, b.call("permute", wi, (1, 0)))], "gemm")), [w]
    ops = [t for t in quantize_weight(w, bits, 128) if t is not None]
    ins = [b.input(nm, tuple(t.shape), t.dtype) for nm, t in zip("qsz", ops)]
    y = b.call("quant_linear", x, *ins, *([None] if bits == 8 else []), None, bits=bits,
               group_size=128 if bits == 4 else 0)
    return kernel_for(fused_node(b, [y], "gemm")), ops


def _build(job) -> str:
    """In a worker process: compile and run one config once (Triton's on-disk cache keeps it)."""
    n, k, bits, cfg = job
    try:
        kern, ops = template_kernel(n, k, torch.bfloat16, bits)
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        x = torch.randn(1, k, dtype=torch.bfloat16, device=dev)
        kern.compile(cfg)(x, *[o.to(dev) for o in ops])
        return ""
    except Exception as e:  # noqa: BLE001 - reported again when the main process runs it
        return f"{type(e).__name__}: {e}"[:120]


def prebuild(n, k, bits, cfgs, jobs: int) -> None:
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        errs = [e for e in pool.map(_build, [(n, k, bits, c) for c in cfgs]) if e]
    print(f"# built {len(cfgs)} configs for {n}x{k} bits={bits} ({len(errs)} failed)", flush=True)


def main() -> None:
    from braze.autotune.measure import MeasureSpec, time_callable
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton_quant import candidates as tq
    from braze.ir.quant import quant_linear_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--wide", action="store_true", help="the WIDE grid (float and quantized weights)")
    ap.add_argument("--formats", default="bf16,int8,int4")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--jobs", type=int, default=None,
                    help="processes that build the kernels first (default: 12 on CUDA, none with --smoke)")
    args = ap.parse_args()
    dev = "cpu" if args.smoke else "cuda"
    spec = MeasureSpec(reps=10)
    l2 = 0 if args.smoke else torch.cuda.get_device_properties(0).L2_cache_size
    formats = {"bf16": None, "int8": 8, "int4": 4}
    wanted = [formats[f] for f in args.formats.split(",")]
    dt = torch.bfloat16
    shapes = {"tiny": (64, 256)} if args.smoke else {n: SHAPES[n] for n in args.shapes.split(",")}
    info = device_info(dev)
    rows = []

    def measure(row, fn, want, nbytes):
        """Check ``fn()`` against ``want``, then time it (a study: a failure is reported, not raised)."""
        try:
            err = float((fn().float() - want).abs().max() / want.abs().max())
            if err > 2e-2:
                raise AssertionError(f"relative error {err:.3g}")
            if not args.smoke:
                row["us"] = time_callable(fn, dev, spec, l2)[0] * 1e3
                row["TBps"] = nbytes / row["us"] / 1e6
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:200]
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, (n, k) in shapes.items():
        x = torch.randn(1, k, dtype=dt, device=dev)
        for bits in wanted:
            fmt = "bf16" if bits is None else f"int{bits}"
            kern, ops = template_kernel(n, k, dt, bits)
            ops = [o.to(dev) for o in ops]
            if bits is None:
                want = x.float() @ ops[0].float().t()
                measure({"format": fmt, "shape": name, "kernel": "cuBLAS"},
                        lambda: torch.nn.functional.linear(x, ops[0]), want, n * k * 2)
            else:
                q, s, z = (ops + [None])[:3]
                want = quant_linear_reference(x.float(), q, s.float(), None if z is None else z.float(), None,
                                              bits=bits, group_size=128 if bits == 4 else 0)
            nbytes = sum(o.numel() * o.element_size() for o in ops)
            problem = kern.problem({})
            default = kern.space.default_config(problem, info)
            grid = WIDE if args.wide else GRID[fmt]
            configs = [dict(default, **dict(zip(grid, v))) for v in itertools.product(*grid.values())]
            configs = [c for c in configs if c["SPLIT_K"] == 1 or (k // c["SPLIT_K"]) % c["BLOCK_K"] == 0]
            todo = [default] + [c for c in configs if c != default]
            jobs = args.jobs if args.jobs is not None else 1 if args.smoke else 12
            if jobs > 1:
                prebuild(n, k, bits, [c for c in todo if not kern.space.violations(c, problem, info)], jobs)
            for cfg in todo:
                why = kern.space.violations(cfg, problem, info)
                if why and args.smoke and cfg is not default:
                    continue
                row = {"format": fmt, "shape": name, "kernel": "template" + (" default" if cfg is default else ""),
                       "config": {c: cfg[c] for c in ("GEMV", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages",
                                                      "SPLIT_K")}}
                if why:
                    row["error"] = "; ".join(why)
                    rows.append(row)
                    continue
                fn = kern.compile(cfg)
                measure(row, lambda: fn(x, *ops), want, nbytes)
            if bits is not None:
                cfg = tq.SPACE.default_config({"M": 1, "N": n, "K": k, "bits": bits, "group": 128,
                                               "dtype": "bfloat16"}, info)
                measure({"format": fmt, "shape": name, "kernel": "triton_quant default", "config": cfg},
                        lambda: tq.quant_linear(x, q, s, z, None, bits=bits, group_size=128, config=cfg), want, nbytes)
    print("\n| format | shape | kernel | config | us | TB/s | error |\n|---|---|---|---|---|---|---|")
    for r in rows:
        cfg = r.get("config")
        c = "" if not cfg else (f"G{cfg.get('GEMV', '-')} N{cfg['BLOCK_N']} K{cfg['BLOCK_K']} w{cfg['num_warps']}"
                                f" s{cfg.get('num_stages', '-')} sk{cfg.get('SPLIT_K', 1)}")
        print(f"| {r['format']} | {r['shape']} | {r['kernel']} | {c} | {r.get('us', float('nan')):.1f} | "
              f"{r.get('TBps', float('nan')):.2f} | {r.get('error', '')[:60]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
