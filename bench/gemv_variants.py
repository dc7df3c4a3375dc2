"""Which Triton GEMV form reads the weights fastest (decode: M = 1..8 rows).

A kernel study behind the GEMM template's GEMV mode, not a user-facing
figure: ``out[M, N] = x[M, K] @ w[N, K]^T`` on the Llama-1B decode shapes,
each form over a small grid of tiles, against ``F.linear`` (cuBLAS), timed
with ``triton.testing.do_bench`` (L2 flushed between runs) and checked
against a float32 reference first. Forms:

- ``nk_reduce``: weight tile ``[BN, BK]`` (K contiguous), reduce over K each iteration;
- ``nk_defer``: same tile, products accumulated ``[BM, BN, BK]``, one reduction after the loop;
- ``kn_reduce``: weight tile ``[BK, BN]`` as the GEMM template indexes ``B = w^T``, reduce over axis 1.

Run on the GPU machine: ``python bench/gemv_variants.py`` (prints a table; ``--json`` path optional).
"""
from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl


FORMS = {"nk_reduce": 0, "nk_defer": 1, "kn_reduce": 2}


@triton.jit
def gemv(X, W, O, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, FORM: tl.constexpr):
    """FORM 0: weight tile [BN, BK] reduced each step; 1: same tile, products kept [BM, BN, BK]
    and reduced once; 2: weight tile [BK, BN] (the GEMM template's B = w^T indexing)."""
    pid = tl.program_id(0)
    rm = tl.arange(0, BM)
    rn = pid * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    mm = rm < M
    nn = rn % N
    if FORM == 1:
        acc3 = tl.zeros((BM, BN, BK), tl.float32)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        x = tl.load(X + rm[:, None] * K + (k0 + rk)[None, :], mask=mm[:, None], other=0.0).to(tl.float32)
        if FORM == 2:
            b = tl.load(W + nn[None, :] * K + (k0 + rk)[:, None]).to(tl.float32)      # [BK, BN]
            acc += tl.sum(x[:, :, None] * b[None, :, :], axis=1)
        else:
            w = tl.load(W + nn[:, None] * K + (k0 + rk)[None, :]).to(tl.float32)      # [BN, BK]
            if FORM == 1:
                acc3 += x[:, None, :] * w[None, :, :]
            else:
                acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    if FORM == 1:
        acc = tl.sum(acc3, axis=2)
    tl.store(O + rm[:, None] * N + rn[None, :], acc.to(O.dtype.element_ty), mask=mm[:, None] & (rn < N)[None, :])


SHAPES = {"qkv": (3072, 2048), "o": (2048, 2048), "gate_up": (16384, 2048), "down": (2048, 8192),
          "lm_head": (128256, 2048)}


def _copy_bandwidth(dev: str) -> float:
    """Bytes per second of a 256 MB device-to-device copy (the bytes roofline)."""
    from triton.testing import do_bench

    src = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    return 2 * src.numel() / (do_bench(lambda: dst.copy_(src)) * 1e-3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from triton.testing import do_bench

    dev = "cuda"
    bw = _copy_bandwidth(dev)
    rows = []
    for m in [int(r) for r in args.rows.split(",")]:
        for name, (n, k) in SHAPES.items():
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(m, k, device=dev, generator=g).to(torch.bfloat16)
            w = (torch.randn(n, k, device=dev, generator=g) / k ** 0.5).to(torch.bfloat16)
            ref = x.float() @ w.float().t()
            floor_ms = (n * k * 2 + m * k * 2 + m * n * 2) / bw * 1e3
            cands = {"cublas": lambda: torch.nn.functional.linear(x, w)}
            bm = max(1, triton.next_power_of_2(m))
            for form, code in FORMS.items():
                for bn in (8, 16, 32, 64):
                    for bk in (128, 256, 512):
                        if form == "nk_defer" and bm * bn * bk > 64 * 32 * 4:
                            continue
                        if form != "nk_defer" and bm * bn * bk > 256 * 32 * 4:
                            continue
                        for warps in (4, 8):
                            out = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
                            grid = (triton.cdiv(n, bn),)
                            fn = (lambda out=out, grid=grid, bn=bn, bk=bk, warps=warps, code=code:
                                  gemv[grid](x, w, out, m, n, k, BM=bm, BN=bn, BK=bk, FORM=code, num_warps=warps))
                            cands[f"{form} bn{bn} bk{bk} w{warps}"] = (fn, out)
            best = {}
            for label, c in cands.items():
                fn, out = (c, None) if callable(c) else c
                try:
                    res = fn()
                    got = (res if out is None else out).float()
                    err = ((got - ref).abs().max() / ref.abs().max()).item()
                    if err > 2e-2:
                        raise AssertionError(f"wrong: rel err {err:.3g}")
                    ms = do_bench(fn, warmup=10, rep=40)
                except Exception as e:  # noqa: BLE001 - a form that fails is reported
                    print(f"{name} m{m} {label}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                form = label.split()[0]
                if form not in best or ms < best[form][1]:
                    best[form] = (label, ms)
            for form, (label, ms) in best.items():
                rows.append({"M": m, "shape": name, "N": n, "K": k, "form": form, "best": label, "us": ms * 1e3,
                             "roofline_frac": floor_ms / ms})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "copy_TBps": bw / 1e12, "triton": triton.__version__,
                       "rows": rows}, f, indent=1)
    print(f"device {torch.cuda.get_device_name()}, copy {bw / 1e12:.2f} TB/s, triton {triton.__version__}")
    print("| M | shape | form | best config | us | roofline |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['M']} | {r['shape']} | {r['form']} | {r['best']} | {r['us']:.1f} | {r['roofline_frac']:.2f} |")


if __name__ == "__main__":
    main()
