"""Per-call host overhead of the plain call: eager, torch.compile and braze.

The graph is tiny on purpose (``silu(x @ w) * 2 + 1``, x [8, 64], w [64, 64]):
what is timed is the path around the kernels (guards, argument handling,
output wrapping, launching). On the CPU each implementation runs in its own
fresh process (thread pools of one runtime slow the other), one thread, under
``torch.inference_mode()`` and ``torch.no_grad()``; each figure is the best of 5 rounds
of 2000 calls.
On a GPU (``--device cuda``) the same graph is timed with a CUDA
synchronisation after each round (wall clock per call) in one process.

    python bench/overhead.py                 # CPU, each contender in its own process
    python bench/overhead.py --device cuda   # GPU

Writes ``overhead-<device>.json`` under ``$OUT`` (or ``bench/results``).
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

HERE = os.path.dirname(os.path.abspath(__file__))
CONTENDERS = ("eager", "torch.compile", "braze")


def one(contender: str, device: str, calls: int = 2000, rounds: int = 5) -> dict:
    """Microseconds per call of ``contender`` (run in this process) under inference_mode
    (``us_per_call``) and no_grad (``us_per_call_no_grad``; Dynamo guards on the grad mode,
    so each mode has its own compile and warm-up)."""
    import braze  # noqa: F401 - before torch on the CPU: braze picks OpenMP's wait policy
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    w = torch.randn(64, 64, device=device)

    def f(x):
        return torch.nn.functional.silu(x @ w) * 2 + 1

    fn = {"eager": f, "torch.compile": torch.compile(f), "braze": braze.jit(f)}[contender]
    x = torch.randn(8, 64, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {"contender": contender}
    for key, mode in (("us_per_call", torch.inference_mode), ("us_per_call_no_grad", torch.no_grad)):
        best = float("inf")
        with mode():
            for _ in range(100):
                fn(x)
            for _ in range(rounds):
                sync()
                t = time.perf_counter()
                for _ in range(calls):
                    fn(x)
                sync()
                best = min(best, (time.perf_counter() - t) / calls * 1e6)
        out[key] = best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.environ.get("OUT", os.path.join(HERE, "results")))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.device)))
        return
    rows = []
    for c in CONTENDERS:
        if args.device == "cpu":
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(HERE))
            out = subprocess.run([sys.executable, __file__, "--one", c, "--device", "cpu"], capture_output=True,
                                 text=True, env=env, timeout=600)
            if out.returncode != 0:
                rows.append({"contender": c, "error": out.stderr[-800:]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        else:
            rows.append(one(c, args.device))
    base = {r["contender"]: r.get("us_per_call") for r in rows}
    import torch

    meta = {"date": datetime.date.today().isoformat(), "device": args.device,
            "machine": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or
            platform.machine(), "torch": torch.__version__, "graph": "silu(x @ w) * 2 + 1, x [8, 64], w [64, 64]",
            "threads": 1}
    base_ng = {r["contender"]: r.get("us_per_call_no_grad") for r in rows}
    for r in rows:
        if r.get("us_per_call") and base.get("torch.compile"):
            r["x_torch_compile"] = base["torch.compile"] / r["us_per_call"]
        if r.get("us_per_call_no_grad") and base_ng.get("torch.compile"):
            r["x_torch_compile_no_grad"] = base_ng["torch.compile"] / r["us_per_call_no_grad"]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"overhead-{args.device}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(json.dumps(meta))
    print(f"{'contender':15s} {'us/call':>8s} {'x torch.compile':>16s} {'no_grad us':>11s} {'x t.c.':>7s}")
    for r in rows:
        print(f"{r['contender']:15s} {r.get('us_per_call', float('nan')):8.2f} {r.get('x_torch_compile', 0):16.2f}"
              f" {r.get('us_per_call_no_grad', float('nan')):11.2f} {r.get('x_torch_compile_no_grad', 0):7.2f}"
              + (f"  {r['error'][:200]}" if "error" in r else ""))


if __name__ == "__main__":
    main()
