"""Variable-length padding elimination on the GPU.

Run on the GPU machine: ``python bench/varlen.py`` (``$OUT`` gets the JSON
and the plot). In one process, for each workload: eager and torch.compile on
the padded batch, braze with padding elimination (``braze.jit(model)``, default
options: the headline), braze with ``cuda_graphs=True``, and braze without
padding elimination. Every contender is the user's plain call
``m(**inputs)``, timed by CUDA-synchronised wall clock under ``inference_mode``
(the columns without a suffix) and under ``no_grad`` (`` no_grad``), as
``bench/plain_call.py`` does.

- BERT-base fp16, batch 32 x 512, lengths uniform in [64, 512] (about 55%
  valid): target braze >= 1.7x torch.compile padded.
- Llama-3.2-1B shaped (random weights) prefill, bf16, batch 8, lengths
  uniform in [128, 2048]: target >= 1.6x torch.compile padded.
- BERT at valid fractions 10% ... 100%: speedup curve; at 100% the pass
  must cost <= 3% against braze without it.

Every braze output is checked against eager on the valid tokens first.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import torch

import repo_root  # noqa: E402,F401 - before transformers: keeps bench/kernels.py from shadowing `kernels`
plain_call = repo_root.bench_module("plain_call")
GRAD_MODES, wall_ms = plain_call.GRAD_MODES, plain_call.wall_ms


def lengths_for(batch: int, seq: int, fraction: float, gen: torch.Generator) -> list[int]:
    """Uniform lengths with mean ``fraction * seq``."""
    mean = fraction * seq
    lo, hi = (max(1.0, 2 * mean - seq), float(seq)) if fraction >= 0.5 else (1.0, 2 * mean - 1)
    u = torch.rand(batch, generator=gen)
    return [int(min(seq, max(1, round(lo + (hi - lo) * x)))) for x in u.tolist()]


def workload_lengths(quick: bool = False) -> dict:
    """Every workload's (batch, max length, lengths), drawn in one fixed order from seed 0,
    so other scripts (``bench/profile_gpu.py``) run exactly these batches:
    ``{"bert": (B, S, lengths), "curve": [(valid fraction, lengths)], "llama": (B, S, lengths)}``."""
    gen = torch.Generator().manual_seed(0)
    bs, seq = (4, 128) if quick else (32, 512)
    out: dict = {"bert": (bs, seq, [int(x) for x in torch.randint(seq // 8, seq + 1, (bs,), generator=gen)])}
    fracs = [0.5, 1.0] if quick else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    out["curve"] = [(f, [seq] * bs if f == 1.0 else lengths_for(bs, seq, f, gen)) for f in fracs]
    b, s = (2, 256) if quick else (8, 2048)
    out["llama"] = (b, s, [int(x) for x in torch.randint(s // 16, s + 1, (b,), generator=gen)])
    return out


def batch_inputs(batch, seq, lengths, vocab, device):
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.zeros(batch, seq, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def check(out, ref, mask, tol):
    valid = mask.bool()
    err = float((out.float() - ref.float())[valid].abs().max() / ref.float()[valid].abs().max())
    return err, err <= tol


VARIANTS = ("eager", "torch.compile", "torch.compile reduce-overhead", "braze", "braze cuda_graphs",
            "braze (no padding elimination)")


def variants_of(model, tuned_db=None, names=VARIANTS):
    """Compiled once per model: the sweep's batches share shapes, so nothing recompiles.
    ``tuned_db``: also braze reading that tuning database (``tune``). ``names``: which."""
    import braze

    make = {
        "eager": lambda: model,
        "torch.compile": lambda: torch.compile(model, dynamic=False),
        "torch.compile reduce-overhead": lambda: torch.compile(model, dynamic=False, mode="reduce-overhead"),
        "braze": lambda: braze.jit(model),
        "braze cuda_graphs": lambda: braze.jit(model, cuda_graphs=True),
        "braze (no padding elimination)": lambda: braze.jit(model, disable=("eliminate_padding",)),
    }
    out = {k: make[k]() for k in VARIANTS if k in names or k == "eager"}
    if tuned_db:
        out["braze tuned"] = braze.jit(model, tuning_db=tuned_db)
    return out


def tune(model, inp, trials: int, db: str) -> dict:
    """``braze tune`` of the padding-eliminated model on this batch: every kernel
    searched with ``trials`` configs (the library call among the candidates)."""
    from braze.compiler.tune_model import tune_model
    from braze.autotune.tuner import Budget
    from braze.config import Options

    t0 = time.perf_counter()
    summary = tune_model(model, (), inp, Options(tuning_db=db),
                         Budget(trials=trials, patience=max(4, trials // 2), trial_timeout=60.0))
    info = {"tune_s": time.perf_counter() - t0, "tuned_kernels": len(summary["results"]),
            "configs_measured": summary["measured"]}
    print(f"tuned {info['tuned_kernels']} kernels, {info['configs_measured']} configs, {info['tune_s']:.0f} s",
          flush=True)
    return info


def run_workload(name, variants, call, inp, tol, results):
    model = variants["eager"]
    row = {"workload": name, "valid_fraction": float(inp["attention_mask"].float().mean())}
    with torch.no_grad():
        ref = call(model, inp)
        for vname, m in variants.items():
            out = call(m, inp)
            if vname.startswith("braze"):
                err, ok = check(out, ref, inp["attention_mask"], tol)
                row[f"{vname} rel err"] = err
                if not ok:
                    print(f"!! {name} {vname}: relative error {err:.2e} over tolerance {tol}")
    for vname, m in variants.items():
        for mode in GRAD_MODES:
            key = vname if mode == "inference_mode" else f"{vname} no_grad"
            row[key] = wall_ms(lambda: call(m, inp), mode, min_loop_s=0.1, rounds=5)
    results.append(row)
    print(f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return row


def explain_kernels(model, inp) -> None:
    """What the default braze.jit runs for the batch: each kernel's name, backend and
    where its config came from, counted (after the timings: explain resets Dynamo)."""
    import collections

    import braze

    rep = braze.explain(model, **inp)
    counts = collections.Counter(f"{k.name} [{k.backend}, {k.config_source}]" for k in rep.kernels)
    print(f"explain: {len(rep.graphs)} graph(s), {rep.graph_breaks} break(s), {len(rep.kernels)} launches", flush=True)
    for name, n in counts.most_common():
        print(f"explain: {n:3d} x {name}", flush=True)
    for g in rep.graphs:
        for note in g.notes[:8]:
            print(f"explain note: {note[:200]}", flush=True)


def main(argv=None):
    from tools import hf_models

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--only", default="bert,curve,llama", help="comma list of: bert (the 55%% batch), "
                    "curve (BERT at 10%% ... 100%% valid), llama")
    ap.add_argument("--tune-trials", type=int, default=0,
                    help="also run braze after tuning each kernel of the BERT batch with this many configs")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which contenders (eager always)")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    plain_call.raise_dynamo_limits()
    out_dir = os.environ.get("OUT", "bench/results")
    os.makedirs(out_dir, exist_ok=True)
    dev = "cuda"
    work = workload_lengths(args.quick)
    results: list[dict] = []

    def enc(m, inp):
        return m(**inp)[0]

    def dec(m, inp):
        return m(**inp, use_cache=False).logits

    bs, seq, lens = work["bert"]
    tuning: dict = {}
    if only & {"bert", "curve"}:
        model = hf_models.build("bert", dtype=torch.float16, device=dev, **hf_models.BERT_BASE)
        db = None
        if args.tune_trials:
            db = os.path.join(out_dir, "varlen-bert-tuning.sqlite")
            with torch.no_grad():
                tuning["bert"] = tune(model, batch_inputs(bs, seq, lens, 30522, dev), args.tune_trials, db)
        bert = variants_of(model, db, args.variants.split(","))
    if "bert" in only:
        run_workload("BERT-base fp16 B32 S512 uniform[64,512]", bert, enc,
                     batch_inputs(bs, seq, lens, 30522, dev), 2e-2, results)
    curve = []
    for frac, lens in work["curve"] if "curve" in only else []:
        row = run_workload(f"BERT-base fp16 valid {frac:.0%}", bert, enc, batch_inputs(bs, seq, lens, 30522, dev),
                           2e-2, results)
        curve.append(row)
    if "bert" in only:
        explain_kernels(model, batch_inputs(bs, seq, work["bert"][2], 30522, dev))
    bert = model = None
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    b, s, lens = work["llama"]
    llama_cfg = dict(hf_models.LLAMA_1B)
    if args.quick:
        llama_cfg.update(num_hidden_layers=2)
    if "llama" in only:
        llama = variants_of(hf_models.build("llama", dtype=torch.bfloat16, device=dev, **llama_cfg),
                            names=args.variants.split(","))
        run_workload("Llama-3.2-1B shape bf16 prefill B8 uniform[128,2048]", llama, dec,
                     batch_inputs(b, s, lens, llama_cfg["vocab_size"], dev), 3e-2, results)

    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "tuning": tuning}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    with open(os.path.join(out_dir, "varlen.json"), "w") as f:
        json.dump({"meta": meta, "rows": results}, f, indent=1)
    try:
        if not curve or not all(k in curve[0] for k in ("torch.compile", "eager", "braze")):
            raise ImportError("no curve measured (or a contender left out)")
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs = [r["valid_fraction"] for r in curve]
        plt.figure(figsize=(6, 4))
        plt.plot(xs, [r["torch.compile"] / r["braze"] for r in curve], "o-", label="braze vs torch.compile (padded)")
        plt.plot(xs, [r["eager"] / r["braze"] for r in curve], "s-", label="braze vs eager (padded)")
        plt.axhline(1.0, color="gray", lw=0.5)
        plt.xlabel("valid-token fraction")
        plt.ylabel("speedup")
        plt.title(f"BERT-base fp16 {bs}x{seq}, {meta['device']}")
        plt.legend()
        plt.tight_layout()
        plt.savefig(os.path.join(out_dir, "varlen_speedup.png"), dpi=120)
    except ImportError as e:
        print(f"no plot: {e}")
    print("\nplain call, ms (inference_mode; no_grad below); braze = braze.jit(model), default options")
    print(f"{'workload':<54} {'mode':<6} {'valid':>5} {'eager':>7} {'t.comp':>7} {'tc-ro':>7} {'braze':>7} "
          f"{'b+cg':>7} {'no-pe':>7} {'vs tc':>6} {'vs ro':>6} {'vs eag':>6} {'pe cost':>7}")
    for r in results:
        for sfx, mode in (("", "inf"), (" no_grad", "nograd")):
            def v(k):
                return r.get(k + sfx, float("nan"))
            print(f"{r['workload']:<54} {mode:<6} {r['valid_fraction']:>5.2f} {v('eager'):>7.2f} "
                  f"{v('torch.compile'):>7.2f} {v('torch.compile reduce-overhead'):>7.2f} {v('braze'):>7.2f} "
                  f"{v('braze cuda_graphs'):>7.2f} {v('braze (no padding elimination)'):>7.2f} "
                  f"{v('torch.compile') / v('braze'):>6.2f} {v('torch.compile reduce-overhead') / v('braze'):>6.2f} "
                  f"{v('eager') / v('braze'):>6.2f} {v('braze') / v('braze (no padding elimination)') - 1:>+7.1%}")
        if "braze tuned" in r and "torch.compile" in r:
            print(f"{'':<54} braze tuned {r['braze tuned']:.2f} ms: {r['torch.compile'] / r['braze tuned']:.2f}x "
                  f"torch.compile")


if __name__ == "__main__":
    main()
