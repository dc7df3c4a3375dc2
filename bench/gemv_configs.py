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
GRID = {8: {"BLOCK_N": (4, 8), "BLOCK_K": (512, 1024), "num_warps": (4, 8)},
        4: {"BLOCK_N": (2, 4, 8), "BLOCK_K": (512, 1024, 2048), "num_warps": (4, 8)}}


def bf16_kernel(n, k, dtype):
    """The GEMM template's kernel for ``x[1, k] @ w[n, k]^T`` (an ``nn.Linear``)."""
    from braze.compiler.codegen.triton import kernel_for
    from braze.ir import Builder
    from tests.codegen.triton_helpers import fused_node

    b = Builder()
    x, w = b.input("x", (1, k), dtype), b.input("w", (n, k), dtype)
    return kernel_for(fused_node(b, [b.call("mm", x, b.call("permute", w, (1, 0)))], "gemm"))


def template_kernel(n, k, bits, dtype):
    """The GEMM template's kernel for ``quant_linear(x[1, k], w[n, k])`` and its operands."""
    from braze.compiler.codegen.triton import kernel_for
    from braze.compiler.quantize import quantize_weight
    from braze.ir import Builder
    from tests.codegen.triton_helpers import fused_node

    q, s, z = quantize_weight(torch.randn(n, k, dtype=dtype), bits, 128)
    b = Builder()
    x = b.input("x", (1, k), dtype)
    qi = b.input("q", tuple(q.shape), q.dtype)
    si = b.input("s", tuple(s.shape), s.dtype)
    zi = b.input("z", tuple(z.shape), z.dtype) if z is not None else None
    y = b.call("quant_linear", x, qi, si, zi, None, bits=bits, group_size=128 if bits == 4 else 0)
    return kernel_for(fused_node(b, [y], "gemm")), [q, s] + ([z] if z is not None else [])


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

    def timed(fn):
        if args.smoke:
            fn()
            return float("nan")
        return triton.testing.do_bench(fn, warmup=10, rep=40) * 1e3

    for name, (n, k) in shapes.items():
        x = torch.randn(1, k, dtype=dt, device=dev)
        w = torch.randn(n, k, dtype=dt, device=dev)
        us = timed(lambda: torch.nn.functional.linear(x, w))
        rows.append({"format": "bf16", "shape": name, "kernel": "cuBLAS", "us": us, "TBps": n * k * 2 / us / 1e6})
        kern = bf16_kernel(n, k, dt)
        default = kern.space.default_config(kern.problem({}), info)
        want = x.float() @ w.float().t()
        for gemv, bn, bk in [(default["GEMV"], default["BLOCK_N"], default["BLOCK_K"])] + list(
                itertools.product((2,), (4, 8), (512, 1024))) + [(1, 8, 512)]:
            cfg = dict(default, GEMV=gemv, BLOCK_N=bn, BLOCK_K=bk)
            label = "template default" if cfg == default else f"template GEMV={gemv}"
            if args.smoke and (label != "template default" or kern.space.violations(cfg, kern.problem({}), info)):
                continue
            row = {"format": "bf16", "shape": name, "kernel": label,
                   "config": {c: cfg[c] for c in ("BLOCK_N", "BLOCK_K", "num_warps", "num_stages")}}
            try:
                fn = kern.compile(cfg)
                err = float((fn(x, w).float() - want).abs().max() / want.abs().max())
                if err > 2e-2:
                    raise AssertionError(f"relative error {err:.3g}")
                row["us"] = timed(lambda: fn(x, w))
                row["TBps"] = n * k * 2 / row["us"] / 1e6
            except Exception as e:  # noqa: BLE001 - a study: report and go on
                row["error"] = f"{type(e).__name__}: {e}"[:200]
            rows.append(row)
            print(json.dumps(row), flush=True)
        for bits in (8, 4):
            kern, ops = template_kernel(n, k, bits, dt)
            ops = [o.to(dev) for o in ops]
            q, s, z = ops[0], ops[1], ops[2] if bits == 4 else None
            want = quant_linear_reference(x.float(), q, s.float(), None if z is None else z.float(), None,
                                          bits=bits, group_size=128 if bits == 4 else 0)
            wbytes = q.numel() + s.numel() * 2 * (2 if bits == 4 else 1)
            default = kern.space.default_config(kern.problem({}), info)
            grid = GRID[bits]
            others = [dict(default, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw)
                      for bn, bk, nw in itertools.product(*grid.values())]
            configs = [("template default", default)] + [("template", c) for c in others if c != default]
            for label, cfg in configs:
                why = kern.space.violations(cfg, kern.problem({}), info)
                if why and label != "template default" and args.smoke:
                    continue
                row = {"format": f"int{bits}", "shape": name, "kernel": label,
                       "config": {c: cfg[c] for c in ("BLOCK_N", "BLOCK_K", "num_warps", "num_stages")}}
                if why:
                    row["error"] = "; ".join(why)
                else:
                    try:
                        fn = kern.compile(cfg)
                        got = fn(x, *ops)
                        err = float((got.float() - want).abs().max() / want.abs().max())
                        if err > 2e-2:
                            raise AssertionError(f"relative error {err:.3g}")
                        row["us"] = timed(lambda: fn(x, *ops))
                        row["TBps"] = wbytes / row["us"] / 1e6
                    except Exception as e:  # noqa: BLE001 - a study: report and go on
                        row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
            cfg = tq.SPACE.default_config({"M": 1, "N": n, "K": k, "bits": bits, "group": 128, "dtype": "bfloat16"},
                                          info)
            us = timed(lambda: tq.quant_linear(x, q, s, z, None, bits=bits, group_size=128, config=cfg))
            rows.append({"format": f"int{bits}", "shape": name, "kernel": "triton_quant default", "us": us,
                         "TBps": wbytes / us / 1e6, "config": cfg})
    print("\n| format | shape | kernel | config | us | TB/s | error |\n|---|---|---|---|---|---|---|")
    for r in rows:
        cfg = r.get("config")
        c = "" if not cfg else f"N{cfg['BLOCK_N']} K{cfg['BLOCK_K']} w{cfg['num_warps']}"
        print(f"| {r['format']} | {r['shape']} | {r['kernel']} | {c} | {r.get('us', float('nan')):.1f} | "
              f"{r.get('TBps', float('nan')):.2f} | {r.get('error', '')[:60]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
