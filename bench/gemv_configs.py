"""Which GEMV configuration reads bf16 / int8 / int4 weights fastest (decode, one row).

A kernel study behind the GEMM template's GEMV defaults, not a user-facing figure: the
Llama-1B decode projections (Q/K/V 3072 x 2048, o_proj 2048 x 2048, gate/up 16384 x 2048
as one GEMM, down 2048 x 8192) in bf16 (the template's two GEMV forms, GEMV=1 the
``[BLOCK_N, BLOCK_K]`` tile reduced each K block, GEMV=2 the runs form, beside
``F.linear`` on cuBLAS), and quantized to int8 (per channel) and int4 (group 128), each
run by the template's kernel over a small grid of GEMV configurations and by the
standalone ``triton_quant`` kernel with its default. Timed with ``triton.testing.do_bench``
(L2 cleared between runs) after a check against the dequantized float32 product.
Prints one line per (format, shape, kernel, config): microseconds and the weight
bytes' TB/s.

    python bench/gemv_configs.py [--json out.json]
    python bench/gemv_configs.py --smoke     # tiny shapes (CPU interpreter)
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch

import repo_root  # noqa: F401 - the repository root first on sys.path

SHAPES = {"qkv": (3072, 2048), "o": (2048, 2048), "gate_up": (16384, 2048), "down": (2048, 8192)}
GRID = {"bf16": {"GEMV": (1, 2), "BLOCK_N": (4, 8), "BLOCK_K": (512, 1024), "num_warps": (4,)},
        "int8": {"GEMV": (1,), "BLOCK_N": (4, 8), "BLOCK_K": (512, 1024), "num_warps": (4, 8)},
        "int4": {"GEMV": (1,), "BLOCK_N": (4, 8), "BLOCK_K": (512, 1024, 2048), "num_warps": (4, 8)}}


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


def main() -> None:
    import triton

    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton_quant import candidates as tq
    from braze.ir.quant import quant_linear_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = "cpu" if args.smoke else "cuda"
    dt = torch.bfloat16
    shapes = {"tiny": (64, 256)} if args.smoke else SHAPES
    info = device_info(dev)
    rows = []

    def measure(row, fn, want, nbytes):
        """Check ``fn()`` against ``want``, then time it (a study: a failure is reported, not raised)."""
        try:
            err = float((fn().float() - want).abs().max() / want.abs().max())
            if err > 2e-2:
                raise AssertionError(f"relative error {err:.3g}")
            if not args.smoke:
                row["us"] = triton.testing.do_bench(fn, warmup=10, rep=40) * 1e3
                row["TBps"] = nbytes / row["us"] / 1e6
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:200]
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, (n, k) in shapes.items():
        x = torch.randn(1, k, dtype=dt, device=dev)
        for bits in (None, 8, 4):
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
            configs = [dict(default, GEMV=g, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw)
                       for g, bn, bk, nw in itertools.product(*GRID[fmt].values())]
            for cfg in [default] + [c for c in configs if c != default]:
                why = kern.space.violations(cfg, problem, info)
                if why and args.smoke and cfg is not default:
                    continue
                row = {"format": fmt, "shape": name, "kernel": "template" + (" default" if cfg is default else ""),
                       "config": {c: cfg[c] for c in ("GEMV", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")}}
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
        c = "" if not cfg else f"G{cfg.get('GEMV', '-')} N{cfg['BLOCK_N']} K{cfg['BLOCK_K']} w{cfg['num_warps']}"
        print(f"| {r['format']} | {r['shape']} | {r['kernel']} | {c} | {r.get('us', float('nan')):.1f} | "
              f"{r.get('TBps', float('nan')):.2f} | {r.get('error', '')[:60]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
