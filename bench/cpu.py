"""braze on the CPU: GPT-2 small and BERT-base forward, and TVM kernels of
fused groups against the ops they replace.

    python bench/cpu.py [--models gpt2,bert] [--batches 1,8] [--seq 128] [--rounds 5]
                        [--groups-only | --models-only] [--greedy] [--tune TRIALS] [--threads N] [--out PATH]

Models (fp32, random weights, ``compiler/hf_models.py``): eager PyTorch,
``torch.compile`` (default), ``braze.jit(backend="auto")`` and
``braze.jit(backend="tvm")`` are compiled first, then timed in interleaved
rounds (one forward of each per round, so drift on a shared machine hits
all alike); the median of the rounds is reported with the ratios to eager
and torch.compile and their geometric means over the cases. ``--greedy``
adds ``braze tvm+greedy``: the TVM backend with ``greedy_fuse`` appended to
the pipeline (a stand-in for the fusion pass; see
``compiler/codegen/tvm/greedy.py``).

Groups: LayerNorm, GELU (tanh), masked softmax, residual add + LayerNorm,
and Linear + bias + GELU at GPT-2/BERT sizes, as fused groups compiled by
TVM (default config, and the best of a few configs of its Space) against
the eager ops and torch.compile of the same function.

``--isolated`` (the headline, issue 18): each (model, batch, implementation)
in its own fresh process, torch imported first and nothing set in the
environment, the plain call timed under ``inference_mode`` and under
``no_grad`` (``ms`` / ``ms_no_grad``; both equal eager's outputs), written to
``bench/results/cpu-isolated-<date>.json``.

Prints tables and writes JSON to ``--out`` (default
``$OUT/cpu.json`` when $OUT is set, else ``bench/results/cpu-<date>.json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

# NOTE: --isolated (the headline) runs each implementation in its own fresh process, as
# a user runs it: torch imported first, no environment variable set. The interleaved
# mode runs every variant in this one process under one OpenMP wait policy (PASSIVE
# unless OMP_WAIT_POLICY is set), kept for kernel studies.
if "--isolated" not in sys.argv and "--one" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import repo_root  # noqa: E402,F401 - before transformers: keeps bench/kernels.py from shadowing `kernels`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timeit(fn, rounds: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _interleaved(fns: dict, rounds: int) -> dict:
    """Median seconds of each fn, timed round-robin (one call of each per round)."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def geomean(xs) -> float:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


# --- groups ---------------------------------------------------------------------

def group_cases():
    from tools.tvm_cuda_export import layer_norm

    f32 = torch.float32

    def gelu_tanh(b, x):
        m4 = b.call("mul", x, 0.5)
        p = b.call("pow", x, 3.0, overload="Tensor_Scalar")
        a = b.call("add", x, b.call("mul", p, 0.044715))
        t = b.call("tanh", b.call("mul", a, 0.7978845608028654))
        return b.call("mul", m4, b.call("add", t, 1.0))

    def add_layer_norm(b, x, res, w, bias):
        y = b.call("add", x, res)
        return [y, layer_norm(b, y, w, bias)]

    def masked_softmax(b, s, m):
        return b.call("_softmax", b.call("add", b.call("mul", s, 0.125), m), -1, False)

    def linear_gelu(b, x, w, bias):
        return b.call("gelu", b.call("addmm", bias, x, b.call("permute", w, (1, 0))))

    def e_ln(x, w, b):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b)

    def e_gelu(x):
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3.0))))

    def e_add_ln(x, r, w, b):
        y = x + r
        return y, torch.nn.functional.layer_norm(y, (y.shape[-1],), w, b)

    def e_softmax(s, m):
        return torch.softmax(s * 0.125 + m, -1)

    def e_linear_gelu(x, w, b):
        return torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))

    H, M = 768, 1024
    return [
        ("layernorm 1024x768", layer_norm, "reduction", [((M, H), f32), ((H,), f32), ((H,), f32)], e_ln),
        ("gelu_tanh 1024x3072", gelu_tanh, "pointwise", [((M, 4 * H), f32)], e_gelu),
        ("add+layernorm 1024x768", add_layer_norm, "reduction", [((M, H), f32), ((M, H), f32), ((H,), f32),
                                                                  ((H,), f32)], e_add_ln),
        ("softmax 8x12x128x128", masked_softmax, "reduction", [((8, 12, 128, 128), f32), ((8, 1, 1, 128), f32)],
         e_softmax),
        ("linear+gelu 1024x768x3072", linear_gelu, "gemm", [((M, H), f32), ((4 * H, H), f32), ((4 * H,), f32)],
         e_linear_gelu),
    ]


def bench_groups(rounds: int) -> list[dict]:
    from braze.autotune.space import device_info
    from tools.tvm_cuda_export import builder_order
    from braze.compiler.codegen.tvm.kernel import TVMKernel
    from braze.ir import Builder
    from braze.ir.fused import fuse_groups

    dev = device_info("cpu")
    rows = []
    for name, build, kind, inputs, eager in group_cases():
        b = Builder()
        xs_ir = [b.input(f"x{i}", s, t) for i, (s, t) in enumerate(inputs)]
        outs = build(b, *xs_ir)
        g = b.graph(list(outs) if isinstance(outs, (list, tuple)) else [outs])
        node = [n for n in fuse_groups(g, [(list(g.compute_nodes), kind)]).nodes if n.op == "fused"][0]
        xs = [torch.randn(s, dtype=t) for s, t in inputs]
        ops = [xs[i] for i in builder_order(node)]
        k = TVMKernel(node, kind, "cpu")
        prob = k.problem({})
        default = k.space.default_config(prob, dev)
        t0 = time.perf_counter()
        fns = {"eager": lambda: eager(*xs), "tvm default": (lambda f=k.compile(default): f(*ops))}
        compile_s = time.perf_counter() - t0
        comp = torch.compile(eager)
        comp(*xs)
        fns["torch.compile"] = lambda: comp(*xs)
        ref = eager(*xs)
        got = fns["tvm default"]()
        for a, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
            torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-3)
        # a few configs of the Space: the fastest stands for a tuned kernel
        cands = _variants(k.space, prob, dev, default)
        best_cfg, best_t = default, None
        for cfg in cands:
            f = k.compile(cfg)
            t = statistics.median(_timeit(lambda: f(*ops), max(3, rounds // 2)))
            if best_t is None or t < best_t:
                best_cfg, best_t = cfg, t
        fb = k.compile(best_cfg)
        fns["tvm tuned"] = lambda: fb(*ops)
        med = _interleaved(fns, rounds)
        row = {"group": name, "ms": {kk: v * 1e3 for kk, v in med.items()}, "default": default,
               "tuned": best_cfg, "compile_s": round(compile_s, 2)}
        rows.append(row)
        print(f"{name:<28}" + "".join(f"{kk} {v * 1e3:8.3f} ms  " for kk, v in med.items()), flush=True)
    return rows


def _variants(space, prob, dev, default, limit: int = 6) -> list[dict]:
    """The default and single-knob changes of it (valid ones), up to ``limit``."""
    out = [default]
    for knob in space.knobs:
        for c in knob.choices:
            if c == default[knob.name]:
                continue
            cfg = dict(default, **{knob.name: c})
            if space.valid(cfg, prob, dev) and cfg not in out:
                out.append(cfg)
            if len(out) >= limit:
                return out
    return out


# --- models ---------------------------------------------------------------------------

def bench_models(models, batches, seq: int, rounds: int, greedy: bool, tune: int = 0) -> list[dict]:
    import braze
    from braze.compiler import driver
    from tools import hf_models

    presets = {"gpt2": hf_models.GPT2_SMALL, "bert": hf_models.BERT_BASE}
    rows = []
    for fam in models:
        model = hf_models.build(fam, **presets[fam])
        for batch in batches:
            inp = hf_models.inputs(batch=batch, seq=seq, vocab_size=1000)
            kw = dict(inp) if fam == "bert" else dict(inp, use_cache=False)

            def call(m):
                with torch.no_grad():
                    return m(**kw)[0]
            torch._dynamo.reset()
            variants = {"eager": model, "torch.compile": torch.compile(model),
                        "braze auto": braze.jit(model, backend="auto"), "braze tvm": braze.jit(model, backend="tvm")}
            if tune:  # every candidate of every kernel searched (tuning time is in compile_s)
                variants["braze tuned"] = braze.jit(model, backend="auto", tune=True,
                                                    extra={"budget": {"trials": tune, "patience": max(4, tune // 2)}})
            compile_s = {}
            ref = call(model)
            for name, m in variants.items():
                t0 = time.perf_counter()
                out = call(m)
                compile_s[name] = round(time.perf_counter() - t0, 1)
                torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
            if greedy:
                from tools.tvm_greedy import greedy_fuse
                from braze.passes import Pass

                saved = driver.PIPELINE
                driver.PIPELINE = list(saved) + [Pass("greedy_fuse", greedy_fuse)]
                try:
                    m = braze.jit(model, backend="tvm")
                    t0 = time.perf_counter()
                    out = call(m)
                    compile_s["braze tvm+greedy"] = round(time.perf_counter() - t0, 1)
                    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
                    variants["braze tvm+greedy"] = m
                finally:
                    driver.PIPELINE = saved
            fns = {k: (lambda m=m: call(m)) for k, m in variants.items()}
            for fn in fns.values():  # warm-up after all compiled
                fn()
            med = _interleaved(fns, rounds)
            row = {"model": fam, "batch": batch, "seq": seq, "ms": {k: v * 1e3 for k, v in med.items()},
                   "compile_s": compile_s}
            rows.append(row)
            print(f"{fam:<5} b{batch:<2} s{seq} " + "".join(f"{k} {v * 1e3:9.1f} ms  " for k, v in med.items()),
                  flush=True)
    return rows


def one_model(fam: str, batch: int, seq: int, contender: str, rounds: int) -> dict:
    """One implementation of one case, timed in this process (a child of ``--isolated``)."""
    from tools import hf_models

    presets = {"gpt2": hf_models.GPT2_SMALL, "bert": hf_models.BERT_BASE}
    model = hf_models.build(fam, **presets[fam])
    inp = hf_models.inputs(batch=batch, seq=seq, vocab_size=1000)
    kw = dict(inp) if fam == "bert" else dict(inp, use_cache=False)
    with torch.inference_mode():
        ref = model(**kw)[0]
    if contender == "eager":
        m = model
    elif contender == "torch.compile":
        m = torch.compile(model)
    else:
        import braze

        m = braze.jit(model)   # the default: backend="auto"
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = m(**kw)[0]
    compile_s = time.perf_counter() - t0
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)

    def call():
        with torch.inference_mode():
            m(**kw)

    def call_no_grad():
        with torch.no_grad():
            m(**kw)
    ts = _timeit(call, rounds, warmup=3)
    # the same plain call under no_grad (Dynamo guards on the grad mode: its own compile, then warm-up)
    with torch.no_grad():
        torch.testing.assert_close(m(**kw)[0], ref, rtol=1e-3, atol=1e-3)
    ts_ng = _timeit(call_no_grad, rounds, warmup=3)
    return {"model": fam, "batch": batch, "seq": seq, "contender": contender, "ms": statistics.median(ts) * 1e3,
            "ms_no_grad": statistics.median(ts_ng) * 1e3,
            "compile_s": round(compile_s, 1), "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def isolated(models, batches, seq: int, rounds: int, threads: int) -> list[dict]:
    """Every (model, batch, implementation) in its own fresh process, nothing set in the
    environment but the thread count; the parent only collects."""
    import subprocess

    rows = []
    for fam in models:
        for batch in batches:
            for contender in ("eager", "torch.compile", "braze"):
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
                env["PYTHONPATH"] = ROOT
                cmd = [sys.executable, __file__, "--one", contender, "--models", fam, "--batches", str(batch),
                       "--seq", str(seq), "--rounds", str(rounds), "--threads", str(threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
                if out.returncode != 0:
                    row = {"model": fam, "batch": batch, "contender": contender, "error": out.stderr[-600:]}
                else:
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="gpt2,bert")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--groups-only", action="store_true")
    p.add_argument("--models-only", action="store_true")
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                   help="add 'braze tuned': tune=True with this many trials per kernel candidate")
    p.add_argument("--threads", type=int, default=0, help="threads for torch and TVM (default: all cores)")
    p.add_argument("--out", default=None)
    p.add_argument("--isolated", action="store_true",
                   help="models only, each implementation in its own fresh process (the headline figures)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(one_model(args.models, int(args.batches), args.seq, args.one, args.rounds)))
        return 0
    if args.isolated:
        rows = isolated(args.models.split(","), [int(b) for b in args.batches.split(",")], args.seq, args.rounds,
                        args.threads or len(os.sched_getaffinity(0)))
        ratios, ratios_ng = {}, {}
        for r in rows:
            if "ms" in r and r["contender"] != "eager":
                e = next(x for x in rows if x.get("ms") and x["model"] == r["model"] and x["batch"] == r["batch"]
                         and x["contender"] == "eager")
                r["x_eager"] = e["ms"] / r["ms"]
                ratios.setdefault(r["contender"], []).append(r["x_eager"])
                if "ms_no_grad" in r and "ms_no_grad" in e:
                    r["x_eager_no_grad"] = e["ms_no_grad"] / r["ms_no_grad"]
                    ratios_ng.setdefault(r["contender"], []).append(r["x_eager_no_grad"])
        summary = {k: geomean(v) for k, v in ratios.items()}
        summary.update({f"{k} (no_grad)": geomean(v) for k, v in ratios_ng.items()})
        result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "cpu": _cpu_name(),
                  "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__, "mode": "isolated",
                  "rows": rows, "geomean_x_eager": summary}
        print(json.dumps(summary))
        out = args.out or os.path.join(ROOT, "bench", "results", f"cpu-isolated-{time.strftime('%Y-%m-%d')}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        return 0
    if args.threads:
        # NOTE: before TVM's runtime starts its thread pool (braze's TVM build module reads it on import)
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    sys.path.insert(0, ROOT)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
              "cpu": _cpu_name(), "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "loadavg_start": os.getloadavg()}
    if not args.models_only:
        print("== fused groups (median ms)")
        result["groups"] = bench_groups(args.rounds * 4)
    if not args.groups_only:
        print("== models (median ms per forward)")
        rows = bench_models(args.models.split(","), [int(b) for b in args.batches.split(",")], args.seq,
                            args.rounds, args.greedy, args.tune)
        result["models"] = rows
        summary = {}
        for v in rows[0]["ms"]:
            if v in ("eager",):
                continue
            summary[v] = {"vs_eager_geomean": geomean([r["ms"]["eager"] / r["ms"][v] for r in rows]),
                          "vs_torch_compile_geomean": geomean([r["ms"]["torch.compile"] / r["ms"][v] for r in rows])}
        result["summary"] = summary
        print(f"\n{'variant':<20}{'x eager (geomean)':>20}{'x torch.compile':>18}")
        for v, s in summary.items():
            print(f"{v:<20}{s['vs_eager_geomean']:>20.3f}{s['vs_torch_compile_geomean']:>18.3f}")
    result["loadavg_end"] = os.getloadavg()
    out = args.out or (os.path.join(os.environ["OUT"], "cpu.json") if os.environ.get("OUT") else
                       os.path.join(ROOT, "bench", "results", f"cpu-{time.strftime('%Y-%m-%d')}.json"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
