"""The projections of a Llama-1B decode step, one token per row, through braze's selection.

A kernel study, not a user-facing figure: which candidate the quick selection
picks for each GEMM group of a decode step, and the device time of each
candidate it timed (CUDA graphs of many calls, the L2 flushed before each,
as ``autotune/measure.py`` times them). The groups are the step's: Q/K/V
(3072 columns), the attention output projection plus the residual, gate/up
with SiLU * up (the dual epilogue), the down projection plus the residual,
and the LM head (tied 128256-row embedding). Each reads its own activation,
so horizontal fusion merges only gate and up, as in the model.

    python bench/decode_gemms.py --rows 1 [--json out.json]

Prints one line per group and candidate: kernel, status, time (us).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile

import torch
import torch.nn.functional as F

import repo_root  # noqa: F401


class Projections(torch.nn.Module):
    def __init__(self, hidden=2048, inter=8192, qkv=3072, vocab=128256):
        super().__init__()
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.qkv, self.o, self.gate, self.up = lin(hidden, qkv), lin(hidden, hidden), lin(hidden, inter), lin(hidden, inter)
        self.down, self.lm = lin(inter, hidden), lin(hidden, vocab)

    def forward(self, xq, xo, xm, xh, res):
        q = self.qkv(xq)
        h = self.o(xo) + res
        g = F.silu(self.gate(xm)) * self.up(xm)
        d = self.down(g) + h
        return q, d, self.lm(xh)


def main() -> None:
    import braze

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev, dt = args.device, torch.bfloat16 if args.device == "cuda" else torch.float32
    db = os.environ.get("BRAZE_TUNING_DB") or os.path.join(tempfile.mkdtemp(), "tune.db")
    os.environ["BRAZE_TUNING_DB"] = db
    torch.manual_seed(0)
    m = Projections().to(dev, dt).eval()
    r = args.rows
    xs = [torch.randn(r, 2048, device=dev, dtype=dt) for _ in range(5)]   # four activations and the residual
    fast = braze.jit(m)
    with torch.inference_mode():
        got = fast(*xs)
        want = m(*xs)
    for g, w in zip(got, want):
        err = float((g.float() - w.float()).abs().max() / w.float().abs().max())
        assert err < 2e-2, err
    con = sqlite3.connect(db)
    rows = con.execute("SELECT kernel_name, problem, status, time_ms FROM braze_trials ORDER BY problem, time_ms").fetchall()
    out = [{"kernel": k, "problem": p, "status": s, "us": None if t is None else t * 1e3} for k, p, s, t in rows]
    for o in out:
        us = "" if o["us"] is None else f"{o['us']:9.1f}"
        print(f"{o['kernel'][:48]:48s} {o['status']:14s} {us}  {o['problem'][:90]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "rows": r,
                       "trials": out}, f, indent=1)


if __name__ == "__main__":
    main()
