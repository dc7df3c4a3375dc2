"""The decode step's attention as braze runs it, over its config space (a kernel study).

Llama-1B shape (32 query heads, 8 K/V heads, head dim 64, bf16), one query a sequence, a
static cache of 2048 rows of which only a prefix is valid, the validity given as the
boolean mask Hugging Face passes (``[B, 1, 1, 2048]``). Every config is checked against a
float64 reference over the valid keys, then timed the way the selection times a
candidate (``autotune/measure.time_callable``: CUDA graphs of many calls, L2 flushed
before each, the flush subtracted), beside SDPA given the same mask.

    python bench/decode_attention.py [--batches 1,8] [--valid 562,1536] [--json out.json]
    python bench/decode_attention.py --smoke    # the named configs on the CPU interpreter, a short cache

Prints one line per (batch, valid keys, config) and a table of the best configs last.
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch

import repo_root  # noqa: F401 - the repository root first on sys.path

HQ, HKV, D, CACHE = 32, 8, 64, 2048
# the sweep, as data: keys a step, chunks, the fused merge, pipelining, TMA, warps
GRID = {"BLOCK_N": (32, 64, 128), "SPLITS": (1, 2, 4, 8, 16, 32, 64), "FUSE_COMBINE": (False, True),
        "num_stages": (2, 3), "TMA": (False, True), "num_warps": (4,)}


def configs(problem, dev, grid: bool = True):
    from braze.compiler.codegen.triton_attention.space import ATTENTION_SPACE, DECODE_VARIANTS, default_config

    base = default_config(problem, dev)
    named = [("default", base)] + [(n, s.default_config(problem, dev)) for n, s in DECODE_VARIANTS.items()]
    out, seen = [], set()
    swept = [("grid", dict(base, **dict(zip(GRID, v)))) for v in itertools.product(*GRID.values())] if grid else []
    for name, cfg in named + swept:
        cfg = dict(cfg)
        if cfg["SPLITS"] == 1:
            cfg.pop("FUSE_COMBINE", None)
        elif "FUSE_COMBINE" not in cfg:
            cfg["FUSE_COMBINE"] = False
        key = tuple(sorted(cfg.items()))
        if key in seen or not ATTENTION_SPACE.valid(cfg, problem, dev):
            continue
        seen.add(key)
        out.append((name, cfg))
    return out


def main() -> None:
    from braze.autotune.measure import MeasureSpec, time_callable
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton_attention.launch import attention_dense
    from braze.ir.attention import attention_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--valid", default="562,1536")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    device, cache = ("cpu", 256) if args.smoke else ("cuda", CACHE)
    if args.smoke:
        args.batches, args.valid = "1", "40"
    dev = device_info(device)
    spec = MeasureSpec(reps=10)
    l2 = 0 if args.smoke else torch.cuda.get_device_properties(0).L2_cache_size
    rows, best = [], []
    torch.manual_seed(0)
    for B in map(int, args.batches.split(",")):
        q = torch.randn(B, HQ, 1, D, device=device, dtype=torch.bfloat16)
        k = torch.randn(B, HKV, cache, D, device=device, dtype=torch.bfloat16)
        v = torch.randn(B, HKV, cache, D, device=device, dtype=torch.bfloat16)
        problem = {"B": B, "Hq": HQ, "Hkv": HKV, "groups": HQ // HKV, "Sq": 1, "Sk": cache, "D": D, "Dv": D,
                   "dtype": "bf16", "causal": "none", "window": 0, "mask": "bool", "alibi": False, "varlen": False}
        for valid in map(int, args.valid.split(",")):
            mask = torch.zeros(B, 1, 1, cache, dtype=torch.bool, device=device)
            mask[..., :valid] = True
            n = valid
            want = attention_reference(q.double(), k[:, :, :n].double(), v[:, :, :n].double(), scale=D ** -0.5,
                                       groups=HQ // HKV)
            kv_bytes = 2 * B * HKV * valid * D * 2

            def sdpa():
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

            results = []
            for name, cfg in [("sdpa", None)] + configs(problem, dev, grid=not args.smoke):
                fn = sdpa if cfg is None else (lambda c=cfg: attention_dense(q, k, v, mask, config=c, scale=D ** -0.5,
                                                                            mask_kind="bool", groups=HQ // HKV))
                row = {"batch": B, "valid": valid, "name": name, "config": cfg}
                try:
                    err = ((fn().double() - want).norm() / want.norm()).item()
                    if err > 1e-2:
                        raise AssertionError(f"relative error {err:.3g}")
                    ms, _ = time_callable(fn, device, spec, l2)
                    row.update(us=ms * 1e3, TBps=kv_bytes / (ms * 1e-3) / 1e12, err=err)
                    results.append(row)
                except Exception as e:  # noqa: BLE001 - a study: report, go on
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
            results.sort(key=lambda r: r["us"])
            named = {r["name"]: r for r in results if r["name"] != "grid"}
            best.append((B, valid, results[:5], named))
    print("\n| batch | valid | who | us | config |\n|---|---|---|---|---|")
    for B, valid, top, named in best:
        for r in list(named.values()) + [r for r in top if r["name"] == "grid"]:
            c = r["config"] or {}
            short = " ".join(f"{k}={c[k]}" for k in ("BLOCK_N", "SPLITS", "FUSE_COMBINE", "num_stages", "TMA",
                                                      "num_warps") if k in c)
            print(f"| {B} | {valid} | {r['name']} | {r['us']:.2f} | {short} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev.name, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
