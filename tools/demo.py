"""The demo: a small Llama from its config with random weights, compiled by
braze, checked against eager, with what braze did and how fast it ran."""
from __future__ import annotations

import argparse
import time

import braze  # noqa: F401 - before torch: braze picks the OpenMP wait policy TVM's threads need
import torch


def _time(fn, *args, reps: int = 10, **kwargs) -> float:
    with torch.no_grad():
        for _ in range(2):
            fn(*args, **kwargs)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(*args, **kwargs)
            ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


def main(argv=None) -> int:
    import braze
    from tools import hf_models

    ap = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = hf_models.build("llama", vocab_size=1024, dtype=dtype, device=args.device,
                            hidden_size=args.hidden, intermediate_size=args.hidden * 4,
                            num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32,
                            num_key_value_heads=max(1, args.hidden // 128))
    inp = hf_models.inputs(args.batch, args.seq, vocab_size=1024, padding="right", device=args.device,
                           lengths=[args.seq] + [args.seq // 2] * (args.batch - 1))
    kw = dict(inp, use_cache=False)
    print(f"Llama, {args.layers} layers, hidden {args.hidden}, batch {args.batch} x {args.seq} tokens, "
          f"{dtype} on {args.device}")

    t0 = time.perf_counter()
    report = braze.explain(model, options={"backend": args.backend}, **kw)
    fast = braze.jit(model, backend=args.backend)
    with torch.no_grad():
        ref = model(**kw).logits
        out = fast(**kw).logits
    compile_s = time.perf_counter() - t0
    mask = inp["attention_mask"].bool()
    err = float((out - ref)[mask].abs().max() / ref[mask].abs().max())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    print(f"\nbraze vs eager: max relative error {err:.2e} ({'OK' if err <= tol else 'MISMATCH'}, "
          f"tolerance {tol:g}); compiled in {compile_s:.1f} s")
    print("\nWhat braze did:")
    for g in report.graphs:
        print(str(g))
    backends: dict[str, int] = {}
    for k in report.kernels:
        backends[k.backend] = backends.get(k.backend, 0) + 1
    print("launches by backend: " + ", ".join(f"{b}: {n}" for b, n in sorted(backends.items())))

    eager_ms = _time(model, **kw)
    braze_ms = _time(fast, **kw)
    tc = torch.compile(model)
    tc_ms = _time(tc, **kw)
    print(f"\nforward time on this machine (median of 10): eager {eager_ms:.2f} ms, "
          f"torch.compile {tc_ms:.2f} ms, braze {braze_ms:.2f} ms "
          f"({eager_ms / braze_ms:.2f}x eager, {tc_ms / braze_ms:.2f}x torch.compile)")
    return 0 if err <= tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
