"""Attention kernels on the GPU: braze's Triton template vs SDPA, same run.

    python bench/attention.py [--quick] [--only prefill,gqa,decode,mask,hf]

For each shape: check against a float64 reference (a slice of heads) and
SDPA, search a small set of configs (valid in the template's space), print
the chosen config, and time braze (best config and template default) and
SDPA with ``triton.testing.do_bench`` (median). Prefill reports TFLOP/s
(4*B*H*Sq*Sk*D, halved when causal), decode TB/s of K/V read
(2*B*Hkv*Sk*D*bytes), timed from CUDA graph replays (the GPU time; the
Python launch of a decode-sized kernel costs more than the kernel) and
also with plain launches. Then an HF-eager style attention module (matmul,
additive causal mask, float32 softmax, matmul, GQA by repeat_kv) compiled by
braze vs torch.compile, when braze's attention pass turns it into an
``attention`` node (skipped with a note otherwise).

Writes ``$OUT/attention.json`` (or ``bench/results/attention.json``) and
prints a short table last.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import torch

from plain_call import format_row, raise_dynamo_limits, time_contenders
from braze.autotune.space import device_info
from braze.compiler.codegen.triton_attention.launch import attention_dense
from braze.compiler.codegen.triton_attention.space import ATTENTION_SPACE, default_config
from braze.ir.attention import attention_reference

PREFILL = [  # name, B, Hq, Hkv, S, D, causal, SDPA TFLOP/s in GPU.md
    ("prefill", 4, 32, 32, 4096, 128, "none", 662),
    ("prefill_causal", 4, 32, 32, 4096, 128, "bottom_right", 549),
    ("gqa_causal", 8, 32, 8, 2048, 64, "bottom_right", 359),
]
DECODE = [  # name, B, Hq, Hkv, Sk, D, SDPA TB/s in GPU.md
    ("decode_b8", 8, 32, 8, 4096, 128, 1.59),
    ("decode_b1_32k", 1, 32, 8, 32768, 128, 1.87),
]
TARGETS = {"prefill": 0.8, "prefill_causal": 0.8, "gqa_causal": 1.0}
DECODE_TARGET_TBS = 2.4


def bench_ms(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def graph_ms(fn) -> float:
    """Median time of ``fn`` replayed from a CUDA graph: the GPU time, without the
    Python launch cost (decode steps run from CUDA graphs)."""
    import triton.testing

    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")


def problem_of(B, Hq, Hkv, Sq, Sk, D, causal) -> dict:
    return {"B": B, "Hq": Hq, "Hkv": Hkv, "groups": Hq // Hkv, "Sq": Sq, "Sk": Sk, "D": D, "Dv": D,
            "dtype": "bf16", "causal": causal, "window": 0, "mask": "none", "alibi": False, "varlen": False}


def prefill_candidates(problem, dev) -> list[dict]:
    out = []
    # NOTE: (128, 128, 4 warps) is FlashAttention-2's D 64 tile; compiled for sm_90 on the CPU
    # (triton 3.9) it spills 72-96 bytes except unpacked through TMA (255 registers, no stack)
    for bm, bn, w, s in [(128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3),
                         (256, 64, 8, 2), (256, 64, 8, 3), (128, 128, 4, 2), (128, 128, 4, 3)]:
        for pack in ((False, True) if problem["groups"] > 1 else (False,)):
            for tma in (False, True):
                out.append({"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s, "PACK_GQA": pack,
                            "TMA": tma, "SPLITS": 1, "MASK_SKIP": problem["mask"] != "none"})
    return [c for c in out if ATTENTION_SPACE.valid(c, problem, dev)]


def decode_candidates(problem, dev) -> list[dict]:
    base = default_config(problem, dev)
    out = [base]
    for bn in (64, 128):
        for w in (4, 8):
            for st in (2, 3):
                for sp in (base["SPLITS"] // 2, base["SPLITS"], base["SPLITS"] * 2):
                    for tma in (False, True):
                        out.append(dict(base, BLOCK_N=bn, num_warps=w, num_stages=st, SPLITS=max(1, sp), TMA=tma))
    seen, res = set(), []
    for c in out:
        k = tuple(sorted(c.items()))
        if k not in seen and ATTENTION_SPACE.valid(c, problem, dev):
            seen.add(k)
            res.append(c)
    return res


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def search(run, configs, quick: bool, timer=bench_ms):
    """Time each config; a config that fails to compile or run is reported, not fatal."""
    if quick:
        configs = configs[:1]
    results = []
    for cfg in configs:
        try:
            ms = timer(lambda: run(cfg))
        except Exception as e:  # noqa: BLE001 - e.g. out of resources for one config
            print(f"   config {cfg} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        results.append((ms, cfg))
    results.sort(key=lambda r: r[0])
    return results


def run_prefill(spec, dev, quick):
    name, B, Hq, Hkv, S, D, causal, sdpa_ref = spec
    g = Hq // Hkv
    q = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
    scale = D ** -0.5
    attrs = dict(scale=scale, causal=causal, groups=g)
    problem = problem_of(B, Hq, Hkv, S, S, D, causal)
    default = default_config(problem, dev)

    def run(cfg):
        return attention_dense(q, k, v, config=cfg, **attrs)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal != "none", scale=scale,
                                                                 enable_gqa=g > 1)

    # correctness: float64 reference on the first two query heads of batch 0, and SDPA everywhere
    out = run(default)
    hs = slice(0, 2)
    ref = attention_reference(q[:1, hs].double(), k[:1, :1].double(), v[:1, :1].double(), scale=scale,
                              causal=causal, groups=2) if g > 1 else \
        attention_reference(q[:1, hs].double(), k[:1, hs].double(), v[:1, hs].double(), scale=scale, causal=causal)
    err_ref = rel_err(out[:1, hs], ref)
    err_sdpa = rel_err(out, sdpa())
    assert err_ref < 1e-2 and err_sdpa < 1e-2, f"{name}: errors {err_ref:.2e} (f64) {err_sdpa:.2e} (SDPA)"
    flops = 4 * B * Hq * S * S * D * (0.5 if causal != "none" else 1.0)
    results = search(run, [default] + [c for c in prefill_candidates(problem, dev) if c != default], quick)
    best_ms, best_cfg = results[0]
    out = run(best_cfg)
    assert rel_err(out, sdpa()) < 1e-2
    default_ms = next(ms for ms, c in results if c == default) if any(c == default for _, c in results) else None
    sdpa_ms = bench_ms(sdpa)
    row = {"name": name, "kind": "prefill", "shape": f"B{B} H{Hq}/{Hkv} S{S} D{D} bf16 {causal}",
           "braze_ms": best_ms, "braze_default_ms": default_ms, "sdpa_ms": sdpa_ms,
           "braze_tflops": flops / best_ms / 1e9, "sdpa_tflops": flops / sdpa_ms / 1e9,
           "ratio_vs_sdpa": sdpa_ms / best_ms, "target_ratio": TARGETS[name], "gpu_md_sdpa_tflops": sdpa_ref,
           "config": best_cfg, "default_config": default, "err_f64": err_ref, "err_sdpa": err_sdpa,
           "search": [{"ms": ms, "config": c} for ms, c in results]}
    print(f"{name}: chosen config {best_cfg}  ({row['braze_tflops']:.0f} TFLOP/s, SDPA {row['sdpa_tflops']:.0f})",
          flush=True)
    return row


def run_decode(spec, dev, quick):
    name, B, Hq, Hkv, Sk, D, sdpa_ref = spec
    g = Hq // Hkv
    q = torch.randn(B, Hq, 1, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, Sk, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, Sk, D, device="cuda", dtype=torch.bfloat16)
    scale = D ** -0.5
    attrs = dict(scale=scale, causal="bottom_right", groups=g)
    problem = problem_of(B, Hq, Hkv, 1, Sk, D, "bottom_right")
    default = default_config(problem, dev)

    def run(cfg):
        return attention_dense(q, k, v, config=cfg, **attrs)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)

    out = run(default)
    ref = attention_reference(q[:1].double(), k[:1].double(), v[:1].double(), scale=scale, causal="bottom_right",
                              groups=g)
    err_ref, err_sdpa = rel_err(out[:1], ref), rel_err(out, sdpa())
    assert err_ref < 1e-2 and err_sdpa < 1e-2, f"{name}: errors {err_ref:.2e} (f64) {err_sdpa:.2e} (SDPA)"
    kv_bytes = 2 * B * Hkv * Sk * D * 2
    results = search(run, decode_candidates(problem, dev), quick, timer=graph_ms)
    best_ms, best_cfg = results[0]
    assert rel_err(run(best_cfg), sdpa()) < 1e-2
    default_ms = next((ms for ms, c in results if c == default), None)
    sdpa_ms = graph_ms(sdpa)
    eager_ms, sdpa_eager_ms = bench_ms(lambda: run(best_cfg)), bench_ms(sdpa)
    row = {"name": name, "kind": "decode", "shape": f"B{B} H{Hq}/{Hkv} Sq1 Sk{Sk} D{D} bf16",
           "timing": "CUDA graph replay (GPU time); *_eager_ms: plain launches",
           "braze_ms": best_ms, "braze_default_ms": default_ms, "sdpa_ms": sdpa_ms,
           "braze_eager_ms": eager_ms, "sdpa_eager_ms": sdpa_eager_ms,
           "braze_tbs": kv_bytes / best_ms / 1e9, "sdpa_tbs": kv_bytes / sdpa_ms / 1e9,
           "braze_eager_tbs": kv_bytes / eager_ms / 1e9, "sdpa_eager_tbs": kv_bytes / sdpa_eager_ms / 1e9,
           "ratio_vs_sdpa": sdpa_ms / best_ms, "target_tbs": DECODE_TARGET_TBS, "gpu_md_sdpa_tbs": sdpa_ref,
           "config": best_cfg, "default_config": default, "err_f64": err_ref, "err_sdpa": err_sdpa,
           "search": [{"ms": ms, "config": c} for ms, c in results]}
    print(f"{name}: chosen config {best_cfg}  ({row['braze_tbs']:.2f} TB/s, SDPA {row['sdpa_tbs']:.2f})", flush=True)
    return row


class HFEagerAttention(torch.nn.Module):
    """Attention as Hugging Face's eager Llama path writes it."""

    def __init__(self, groups: int, scale: float):
        super().__init__()
        self.groups, self.scale = groups, scale

    def forward(self, q, k, v, mask=None):
        if mask is None:  # built in the graph, as a whole HF model builds it from positions
            s = q.shape[-2]
            pos = torch.arange(s, device=q.device)
            mask = torch.where(pos[None, :] > pos[:, None], torch.finfo(q.dtype).min, 0.0).to(q.dtype)[None, None]
        if self.groups > 1:
            b, h, s, d = k.shape
            k = k[:, :, None].expand(b, h, self.groups, s, d).reshape(b, h * self.groups, s, d)
            v = v[:, :, None].expand(b, h, self.groups, s, d).reshape(b, h * self.groups, s, d)
        w = torch.matmul(q, k.transpose(2, 3)) * self.scale
        w = w + mask
        w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(w, v)


MASKED = [  # name, B, Hq, Hkv, S, D: the HF-eager shapes with the causal mask given as data
    ("mask_gqa", 8, 32, 8, 2048, 64),
    ("mask_llama8b", 4, 32, 8, 4096, 128),
]


def run_mask(spec, dev, quick, device="cuda"):
    """A causal mask given as data ([B, 1, S, S] additive, finfo.min, batch-broadcast):
    the template with MASK_SKIP (block summary), without it, and with the mask proven
    causal (no operand), against SDPA given the same mask. TFLOP/s count the causal half."""
    name, B, Hq, Hkv, S, D = spec
    g = Hq // Hkv
    q = torch.randn(B, Hq, S, D, device=device, dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, S, D, device=device, dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, S, D, device=device, dtype=torch.bfloat16)
    mask = torch.full((S, S), torch.finfo(torch.bfloat16).min, device=device, dtype=torch.bfloat16).triu(1)
    mask = mask[None, None].expand(B, 1, S, S)
    scale = D ** -0.5
    problem = dict(problem_of(B, Hq, Hkv, S, S, D, "none"), mask="additive")
    cfg = default_config(problem, dev)
    causal_cfg = default_config(problem_of(B, Hq, Hkv, S, S, D, "bottom_right"), dev)

    def run(skip):
        return attention_dense(q, k, v, mask, config=dict(cfg, MASK_SKIP=skip), scale=scale, mask_kind="additive",
                               groups=g)

    def causal():
        return attention_dense(q, k, v, config=causal_cfg, scale=scale, causal="bottom_right", groups=g)

    kr, vr = (k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)) if g > 1 else (k, v)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=scale)

    want = causal()
    errs = {"skip": rel_err(run(True), want), "no_skip": rel_err(run(False), want), "sdpa": rel_err(sdpa(), want)}
    assert max(errs.values()) < 1e-2, f"{name}: errors {errs}"
    flops = 4 * B * Hq * S * S * D * 0.5
    ms = {"skip": bench_ms(lambda: run(True)), "no_skip": bench_ms(lambda: run(False)),
          "causal_attr": bench_ms(causal), "sdpa_mask": bench_ms(sdpa)}
    row = {"name": name, "kind": "mask", "shape": f"B{B} H{Hq}/{Hkv} S{S} D{D} bf16 causal mask as data",
           **{f"{k}_ms": v for k, v in ms.items()}, **{f"{k}_tflops": flops / v / 1e9 for k, v in ms.items()},
           "ratio_skip_vs_no_skip": ms["no_skip"] / ms["skip"], "ratio_vs_sdpa": ms["sdpa_mask"] / ms["skip"],
           "config": cfg, "errors_vs_causal": errs}
    print(f"{name}: mask skip {row['skip_tflops']:.0f} TFLOP/s, no skip {row['no_skip_tflops']:.0f}, "
          f"causal attribute {row['causal_attr_tflops']:.0f}, SDPA with the mask {row['sdpa_mask_tflops']:.0f}",
          flush=True)
    return row


def run_hf(dev, quick):
    import braze

    rows = []
    cases = [("hf_eager_gqa", 8, 32, 8, 2048, 64), ("hf_eager_llama8b", 4, 32, 8, 4096, 128)]
    # The mask as data (an input: braze cannot prove it causal and applies it as a
    # tensor), and built in the graph (as in a whole model: proven causal).
    for (name, B, Hq, Hkv, S, D), in_graph in [(c, f) for c in cases for f in (False, True)]:
        name = name + ("_mask_in_graph" if in_graph else "_mask_input")
        g = Hq // Hkv
        mod = HFEagerAttention(g, D ** -0.5)
        q = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
        mask = torch.full((S, S), torch.finfo(torch.bfloat16).min, device="cuda", dtype=torch.bfloat16).triu(1)
        mask = mask[None, None].expand(B, 1, S, S)
        args = (q, k, v) if in_graph else (q, k, v, mask)
        report = braze.explain(mod, *args)
        found = any("attention(" in gr.final_ir for gr in report.graphs)
        chosen = [k.name for k in report.kernels if "attention" in k.name]
        if not found:
            print(f"{name}: skipped: braze produced no attention node for the HF-eager module "
                  f"(the attention pass has not landed)", flush=True)
            rows.append({"name": name, "kind": "hf", "skipped": "no attention node"})
            continue
        torch._dynamo.reset()
        fast = braze.jit(mod)
        tc = torch.compile(mod)
        with torch.no_grad():
            out_b, out_t = fast(*args), tc(*args)
            err = rel_err(out_b, out_t)
            assert err < 2e-2, f"{name}: braze vs torch.compile error {err:.2e}"
        times = time_contenders({"braze": fast, "torch.compile": tc}, args)
        ms_b, ms_t = times["inference_mode"]["braze"], times["inference_mode"]["torch.compile"]
        if not (ms_b and ms_t):
            rows.append({"name": name, "kind": "hf", "skipped": "a contender failed (see the log)", "plain": times})
            continue
        flops = 4 * B * Hq * S * S * D * 0.5
        rows.append({"name": name, "kind": "hf", "shape": f"B{B} H{Hq}/{Hkv} S{S} D{D} bf16 causal mask",
                     "braze_ms": ms_b, "torch_compile_ms": ms_t, "ratio_vs_torch_compile": ms_t / ms_b,
                     "plain": times, "target_ratio": 8.0, "braze_tflops": flops / ms_b / 1e9,
                     "torch_compile_tflops": flops / ms_t / 1e9, "err_vs_torch_compile": err,
                     "braze_attention_kernel": chosen})
    return rows


class SDPAAttention(torch.nn.Module):
    """Attention as a model writes it when it calls SDPA itself (HF's ``sdpa``
    attention: GQA through ``enable_gqa``, the causal flag, no mask tensor)."""

    def __init__(self, groups: int, causal: bool):
        super().__init__()
        self.groups, self.causal = groups, causal

    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                                                enable_gqa=self.groups > 1)


def run_sdpa_module(spec):
    """Issue 18: a module calling SDPA, compiled with default options; its plain call
    against the module run eagerly (the SDPA call braze may replace) and torch.compile,
    under inference_mode and no_grad. Target: >= 1.0x eager SDPA."""
    import braze

    name, B, Hq, Hkv, S, D, causal, _ = spec
    mod = SDPAAttention(Hq // Hkv, causal != "none")
    q = torch.randn(B, Hq, S, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    fast, tc = braze.jit(mod), torch.compile(mod)
    with torch.inference_mode():
        err = rel_err(fast(q, k, v), mod(q, k, v))
    assert err < 1e-2, f"sdpa_{name}: braze vs eager SDPA error {err:.2e}"
    times = time_contenders({"braze": fast, "eager SDPA": mod, "torch.compile": tc}, (q, k, v))
    report = braze.explain(mod, q, k, v)     # after the timings: explain resets Dynamo
    chosen = [kr.name for kr in report.kernels if "attention" in kr.name or "sdpa" in kr.name]
    flops = 4 * B * Hq * S * S * D * (0.5 if causal != "none" else 1.0)
    ms_b, ms_s = times["inference_mode"]["braze"], times["inference_mode"]["eager SDPA"]
    print(format_row(f"sdpa_{name}", times), flush=True)
    return {"name": f"sdpa_{name}", "kind": "sdpa_module", "shape": f"B{B} H{Hq}/{Hkv} S{S} D{D} bf16 {causal}",
            "plain": times, "braze_ms": ms_b, "sdpa_ms": ms_s, "ratio_vs_sdpa": ms_s / ms_b,
            "ratio_vs_sdpa_no_grad": times["no_grad"]["eager SDPA"] / times["no_grad"]["braze"],
            "target_ratio": 1.0, "braze_tflops": flops / ms_b / 1e9, "sdpa_tflops": flops / ms_s / 1e9,
            "err_vs_sdpa": err, "braze_kernels": chosen}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="time the default config only")
    ap.add_argument("--only", default="prefill,gqa,decode,mask,hf,sdpa",
                    help="kernel studies: prefill, gqa, decode, mask; the user's call: hf, sdpa")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/attention.py needs a CUDA GPU")
    os.environ.setdefault("TRITON_INTERPRET", "0")
    import triton

    dev = device_info("cuda")
    raise_dynamo_limits()
    only = set(args.only.split(","))
    rows = []
    t0 = time.time()
    for spec in PREFILL:
        if ("gqa" if spec[0].startswith("gqa") else "prefill") in only:
            rows.append(run_prefill(spec, dev, args.quick))
    if "decode" in only:
        for spec in DECODE:
            rows.append(run_decode(spec, dev, args.quick))
    if "mask" in only:
        for spec in MASKED:
            rows.append(run_mask(spec, dev, args.quick))
    if "sdpa" in only:
        for spec in PREFILL:
            try:
                rows.append(run_sdpa_module(spec))
            except Exception as e:  # noqa: BLE001 - report, keep the other rows
                print(f"sdpa_{spec[0]}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                rows.append({"name": f"sdpa_{spec[0]}", "kind": "sdpa_module", "skipped": f"error {type(e).__name__}"})
    if "hf" in only:
        try:
            rows.extend(run_hf(dev, args.quick))
        except Exception as e:  # noqa: BLE001 - report, keep the kernel results
            print(f"hf_eager: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            rows.append({"name": "hf_eager", "kind": "hf", "skipped": f"error {type(e).__name__}"})
    meta = {"device": dev.name, "sm_count": dev.sm_count, "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": time.time() - t0}
    out_dir = os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "attention.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"\n{meta['device']}  torch {meta['torch']}  triton {meta['triton']}")
    print(f"{'shape':<18}{'braze':>10}{'SDPA/peer':>11}{'ratio':>8}{'target':>8}  unit")
    for r in rows:
        if r.get("skipped"):
            print(f"{r['name']:<18}{'skipped: ' + r['skipped']:>40}")
        elif r["kind"] == "prefill":
            print(f"{r['name']:<18}{r['braze_tflops']:>10.0f}{r['sdpa_tflops']:>11.0f}{r['ratio_vs_sdpa']:>8.2f}"
                  f"{r['target_ratio']:>8.2f}  TFLOP/s")
        elif r["kind"] == "decode":
            print(f"{r['name']:<18}{r['braze_tbs']:>10.2f}{r['sdpa_tbs']:>11.2f}{r['ratio_vs_sdpa']:>8.2f}"
                  f"{r['target_tbs']:>7.1f}*  TB/s K/V, CUDA graph (*target in TB/s)")
            print(f"{r['name'] + ' eager':<18}{r['braze_eager_tbs']:>10.2f}{r['sdpa_eager_tbs']:>11.2f}"
                  f"{r['sdpa_eager_ms'] / r['braze_eager_ms']:>8.2f}{'':>8}  TB/s K/V, plain launches")
        elif r["kind"] == "sdpa_module":
            print(f"{r['name']:<18}{r['braze_tflops']:>10.0f}{r['sdpa_tflops']:>11.0f}{r['ratio_vs_sdpa']:>8.2f}"
                  f"{r['target_ratio']:>8.2f}  TFLOP/s, plain call vs eager SDPA (no_grad "
                  f"{r['ratio_vs_sdpa_no_grad']:.2f}x)")
        elif r["kind"] == "mask":
            print(f"{r['name']:<18}{r['skip_tflops']:>10.0f}{r['sdpa_mask_tflops']:>11.0f}{r['ratio_vs_sdpa']:>8.2f}"
                  f"{'':>8}  TFLOP/s vs SDPA with the mask (no skip {r['no_skip_tflops']:.0f}, "
                  f"causal attribute {r['causal_attr_tflops']:.0f})")
        else:
            ng = r["plain"]["no_grad"]
            ratio_ng = f"{ng['torch.compile'] / ng['braze']:.2f}x" if ng.get("braze") and ng.get("torch.compile") \
                else "failed"
            print(f"{r['name']:<18}{r['braze_tflops']:>10.0f}{r['torch_compile_tflops']:>11.0f}"
                  f"{r['ratio_vs_torch_compile']:>8.2f}{r['target_ratio']:>8.2f}  TFLOP/s vs torch.compile, plain "
                  f"call (no_grad {ratio_ng})")


if __name__ == "__main__":
    main()
