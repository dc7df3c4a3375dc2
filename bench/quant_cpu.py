"""Weight-only INT8 / INT4 decoding on the CPU: tokens/s of the user's calls.

A Llama-shaped model (random weights; default hidden 1024, MLP 2816, 8
layers, GQA 16/4, vocabulary 32000, bf16) decodes ``--new`` tokens after a
``--prompt``-token prompt, batch 1, greedy. Contenders, each in its own fresh
process (thread pools of one runtime slow another's):

- ``eager``: ``model.generate`` of the float model (Hugging Face's loop, its
  default cache);
- ``eager int8`` / ``eager int4``: the same on the quantized model (the
  reference path: every call dequantizes every weight);
- ``torch.compile``, ``torch.compile int8`` / ``int4``: ``model.generate`` with a
  static cache over ``torch.compile(model.forward)`` (default options);
- ``braze``, ``braze int8``, ``braze int4``: ``braze.generate`` of the float
  or quantized model, default options (``braze.quantize``, group 128).

Each is timed under ``torch.inference_mode()`` (``ms_per_token``) and under
``torch.no_grad()`` (``ms_per_token_no_grad``).

Reported: milliseconds a decode token (the decode steps only: the total
minus a prefill-only call of the same contender), tokens/s, weight bytes,
seconds of the first call (compiles), and the ratios to eager and torch.compile
of the float model, to torch.compile of the same format, and to braze's float
model. The tokens of braze int8/int4 are checked against eager generate
of the same quantized model (a differing token is reported, not hidden: a
tie between two logits may break either way).

    python bench/quant_cpu.py [--dtype bf16] [--threads 2] [--new 32] [--prompt 32] [--layers 8]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import repo_root  # noqa: F401 - first: keeps bench/ modules out of transformers' way

CONTENDERS = ("eager", "eager int8", "eager int4", "torch.compile", "torch.compile int8", "torch.compile int4",
              "braze", "braze int8", "braze int4")
SHAPE = dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
             vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False)


def _model(args):
    import torch

    from tools import hf_models

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    return hf_models.build("llama", dtype=dtype, num_hidden_layers=args.layers, **SHAPE)


def one(contender: str, args) -> dict:
    import torch

    import braze
    from braze.compiler.quantize import weight_bytes

    torch.set_num_threads(args.threads)
    model = _model(args)
    fmt = contender.split()[1] if " " in contender else None
    if fmt:
        braze.quantize(model, fmt)
    torch.manual_seed(0)
    ids = torch.randint(0, SHAPE["vocab_size"], (1, args.prompt))

    if contender.startswith("braze"):
        def generate(n):
            return braze.generate(model, ids, max_new_tokens=n)
    else:
        static = {}
        if contender.startswith("torch.compile"):
            model.forward = torch.compile(model.forward)
            static = {"cache_implementation": "static"}

        def generate(n):
            return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, **static)

    out = {"contender": contender, "weight_mb": round(weight_bytes(model) / 2 ** 20, 1),
           "threads": torch.get_num_threads()}
    for suffix, mode in (("", torch.inference_mode), ("_no_grad", torch.no_grad)):
        with mode():
            t0 = time.perf_counter()
            tokens = generate(args.new)
            first = time.perf_counter() - t0
            generate(1)
            best_full = best_prefill = float("inf")
            for _ in range(args.rounds):
                t = time.perf_counter()
                tokens = generate(args.new)
                best_full = min(best_full, time.perf_counter() - t)
                t = time.perf_counter()
                generate(1)
                best_prefill = min(best_prefill, time.perf_counter() - t)
        ms_token = (best_full - best_prefill) / (args.new - 1) * 1e3
        out.update({f"ms_per_token{suffix}": ms_token, f"prefill_ms{suffix}": best_prefill * 1e3,
                    f"first_call_s{suffix}": round(first, 1)})
        out.setdefault("tokens", tokens[0, args.prompt:].tolist())
    out["tokens_per_s"] = 1e3 / out["ms_per_token"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(CONTENDERS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.environ.get("OUT", os.path.join(repo_root.HERE, "results")))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    rows = []
    for c in [c.strip() for c in args.only.split(",") if c.strip()]:
        cmd = [sys.executable, __file__, "--one", c] + [f"--{k}={getattr(args, k)}" for k in
                                                        ("dtype", "threads", "new", "prompt", "layers", "rounds")]
        env = dict(os.environ, PYTHONPATH=repo_root.ROOT)
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        row = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {
            "contender": c, "error": res.stderr[-800:]}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "tokens"}), flush=True)
    by = {r["contender"]: r for r in rows}
    for r in rows:
        if "error" in r:
            continue
        fmt = r["contender"].split()[1] if " " in r["contender"] else None
        for base in ("eager", "torch.compile", "braze"):
            for suffix in ("", "_no_grad"):
                if f"ms_per_token{suffix}" in by.get(base, {}):
                    r[f"x_{base}{suffix}"] = by[base][f"ms_per_token{suffix}"] / r[f"ms_per_token{suffix}"]
            same = by.get(f"{base} {fmt}" if fmt else base, {})
            if "ms_per_token" in same:     # the same format's peer
                r[f"x_{base}_same_format"] = same["ms_per_token"] / r["ms_per_token"]
        ref = by.get(f"eager {fmt}" if fmt else "eager", {})
        if "tokens" in ref:
            r["tokens_equal_eager"] = r["tokens"] == ref["tokens"]
    import torch

    meta = {"date": datetime.date.today().isoformat(), "device": "cpu", "cpu": platform.processor() or
            platform.machine(), "torch": torch.__version__, "dtype": args.dtype, "threads": args.threads,
            "model": dict(SHAPE, num_hidden_layers=args.layers), "prompt": args.prompt, "new_tokens": args.new}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"quant-cpu-{meta['date']}.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(json.dumps(meta))
    print(f"{'contender':19s} {'ms/token':>9s} {'no_grad':>8s} {'x eager':>8s} {'x t.c.':>7s} {'x same fmt t.c.':>15s} "
          f"{'x braze':>8s} {'weights MB':>10s} {'first s':>8s} tokens=eager")
    for r in rows:
        if "error" in r:
            print(f"{r['contender']:19s} ERROR {r['error'][-200:]}")
            continue
        print(f"{r['contender']:19s} {r['ms_per_token']:9.2f} {r['ms_per_token_no_grad']:8.2f} "
              f"{r.get('x_eager', 0):8.2f} {r.get('x_torch.compile', 0):7.2f} "
              f"{r.get('x_torch.compile_same_format', 0):15.2f} {r.get('x_braze', 0):8.2f} {r['weight_mb']:10.1f} "
              f"{r['first_call_s']:8.1f} {r.get('tokens_equal_eager', '-')}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
