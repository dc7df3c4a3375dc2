"""TVM CUDA kernels built elsewhere, checked and timed on the GPU machine.

Builds nothing with TVM here: it loads the kernels that
``python -m tools.tvm_cuda_export --out .tvmcuda`` exported
on a CPU machine (needs only torch, ``apache-tvm-ffi`` and the two runtime
libraries the export copied into ``.tvmcuda/lib``), checks every exported
config against eager PyTorch on fresh random bf16 data, and times the
memory-bound groups beside their peers in the same process:

- eager PyTorch (the ops one by one),
- torch.compile (Inductor's generated Triton kernels),
- braze's own Triton kernel for the same fused group, when braze's Triton
  code generator is present in this checkout,
- TVM: the Space default, and the best exported config.

Times are medians of CUDA-event timed runs after warm-up; achieved TB/s
counts each tensor read or written once. Prints a table and writes
``$OUT/tvm_cuda.json`` (or ``--json``).

    python bench/tvm_cuda.py [--dir .tvmcuda] [--json path]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_runtime_loader():
    path = os.path.join(ROOT, "compiler", "codegen", "tvm", "runtime_loader.py")
    spec = importlib.util.spec_from_file_location("braze_tvm_runtime_loader", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _braze_from_checkout():
    """``import braze`` from this checkout even where it is not installed
    (maps braze.ir -> ir/, braze.compiler -> compiler/, ... as pyproject does)."""
    try:
        import braze  # noqa: F401
        return True
    except ImportError:
        pass
    import importlib.machinery

    mapping = {"braze": "braze", "braze.ir": "ir", "braze.compiler": "compiler", "braze.passes": "passes",
               "braze.autotune": "autotune"}

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in mapping:
                d = os.path.join(ROOT, mapping[name])
                return importlib.util.spec_from_file_location(name, os.path.join(d, "__init__.py"),
                                                              submodule_search_locations=[d])
            return None

    sys.meta_path.insert(0, Finder)
    try:
        import braze  # noqa: F401,F811
        return True
    except Exception as e:  # noqa: BLE001 - the braze peers are optional here
        print(f"(braze not importable here: {type(e).__name__}: {e}; its Triton kernels are skipped)")
        return False


# --- the groups in plain torch (the references and the eager peers) ---------------

def eager_add_rmsnorm(x, res, w):
    y = x + res
    yf = y.float()
    n = yf * torch.rsqrt(yf.pow(2).mean(-1, keepdim=True) + 1e-6)
    return y, w * n.to(x.dtype)


def eager_silu_mul(g, u):
    return torch.nn.functional.silu(g) * u


def eager_rotary(q, cos, sin):
    d = q.shape[-1]
    rot = torch.cat((-q[..., d // 2:], q[..., : d // 2]), dim=-1)
    return q * cos[None, None] + rot * sin[None, None]


EAGER = {"add_rmsnorm": eager_add_rmsnorm, "silu_mul": eager_silu_mul, "rotary": eager_rotary}


def bench_ms(fn, args, warmup=10, reps=50) -> float:
    for _ in range(warmup):
        fn(*args)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(*args)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def _close(got, ref) -> float:
    """Max error of ``got`` against the float32 reference ``ref``, relative to
    the largest reference value of each output (bf16 results differ from an
    elementwise-exact answer by their rounding, ~0.4% of their magnitude;
    relative to each element, cancellation would make that unbounded)."""
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    err = 0.0
    for g, r in zip(got, ref):
        assert g.shape == r.shape, (g.shape, r.shape)
        err = max(err, float((g.float() - r.float()).abs().max() / r.float().abs().max()))
    return err


def _braze_triton(case, args):
    """braze's Triton kernel for the case's fused group, if its generator is here."""
    try:
        from braze.autotune.space import device_info
        from braze.compiler import kernels as K
        from braze.compiler.codegen import _load
        from tools.tvm_cuda_export import fused_node
        from braze.config import Options

        _load()
        gens = [fn for name, fn in K.GENERATORS if name == "triton"]
        if not gens:
            return None, "no triton generator in this checkout"
        node = fused_node(case.build, case.kind, case.operands)
        dev = device_info("cuda")
        cands = gens[0](node, None, Options(backend="triton"), dev) or []
        if not cands:
            return None, "the triton generator declined the group"
        k = cands[0]
        cfg = k.space.default_config(k.problem({}), dev)
        return k.compile(cfg), None
    except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        return None, f"{type(e).__name__}: {e}"


def _run_checks(kernels) -> dict:
    """Kernels exported only for checking: each against braze's interpreter on its IR."""
    from braze.ir import parse_graph
    from braze.ir.interpreter import interpret

    out = {}
    for name, k in kernels.items():
        if not name.startswith("check_"):
            continue
        sub = parse_graph(k.entry["ir"])
        env = {s: 777 for s in k.entry["syms"]}
        ops = []
        for o in k.entry["operands"]:
            shape = [int(d) if isinstance(d, int) or str(d).isdigit() else env[str(d)] for d in o["shape"]]
            ops.append(torch.randn(shape, device="cuda").to(getattr(torch, o["dtype"])))
        got = k(*ops)
        ref = interpret(sub, *ops)
        got = got if isinstance(got, tuple) else (got,)
        errs = []
        for g, r in zip(got, ref):
            errs.append(float((g.double() - r.double()).abs().max() / (r.double().abs().max() + 1e-9)))
        tol = 2e-2 if any(o.dtype == torch.bfloat16 for o in ops) else 1e-4
        out[name] = {"max_rel_err": max(errs), "ok": max(errs) < tol, "shapes": [list(o.shape) for o in ops]}
        print(f"check {name:<40} max rel err {max(errs):.2e} {'ok' if max(errs) < tol else 'FAILED'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default=os.path.join(ROOT, ".tvmcuda"))
    p.add_argument("--json", default=None)
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no GPU here: bench/tvm_cuda.py runs on the GPU machine")
        return 1
    rl = _load_runtime_loader()
    t0 = time.perf_counter()
    kernels = rl.load_kernels(args.dir)
    load_s = time.perf_counter() - t0
    manifest = rl.manifest(args.dir)
    have_braze = _braze_from_checkout()
    cases = {}
    if have_braze:
        from tools.tvm_cuda_export import SUITE

        cases = {c.name: c for c in SUITE}
    dev = torch.cuda.get_device_name()
    torch.manual_seed(0)
    rows, results = [], {"device": dev, "torch": torch.__version__, "tvm_export": manifest.get("tvm"),
                         "arch": manifest.get("arch"), "date": time.strftime("%Y-%m-%d"),
                         "python": platform.python_version(), "load_and_nvrtc_s": round(load_s, 2), "cases": {}}
    by_case: dict = {}
    for name in kernels:
        if name.startswith("check_"):
            continue
        by_case.setdefault(name.split(".")[0], []).append(name)
    results["checks"] = _run_checks(kernels) if have_braze else "braze not importable"
    for cname, names in by_case.items():
        entry = kernels[names[0]].entry
        ops = [torch.randn([int(d) for d in o["shape"]], device="cuda").to(getattr(torch, o["dtype"]))
               for o in entry["operands"]]
        order = entry["builder_order"]

        def eager(*xs, _f=EAGER[cname], _order=order):  # operands in kernel order -> the eager function's order
            b = [None] * len(xs)
            for i, pos in enumerate(_order):
                b[pos] = xs[i]
            return _f(*b)
        ref = eager(*[o.float() for o in ops])  # float32 reference from the same bf16 inputs
        res_eager = eager(*ops)
        nbytes = sum(x.numel() * x.element_size() for x in ops)
        outs = res_eager if isinstance(res_eager, tuple) else (res_eager,)
        nbytes += sum(o.numel() * o.element_size() for o in outs)
        res = {"bytes": nbytes, "configs": {}, "eager_err": _close(res_eager, ref)}
        timings = {"eager": bench_ms(eager, ops, reps=args.reps)}
        try:
            comp = torch.compile(eager)
            res["torch.compile_err"] = _close(comp(*ops), ref)
            timings["torch.compile"] = bench_ms(comp, ops, reps=args.reps)
        except Exception as e:  # noqa: BLE001
            res["torch.compile_error"] = f"{type(e).__name__}: {e}"
        if cname in cases:
            fn, why = _braze_triton(cases[cname], ops)
            if fn is not None:
                res["braze_triton_err"] = _close(fn(*ops), ref)
                timings["braze triton"] = bench_ms(fn, ops, reps=args.reps)
            else:
                res["braze_triton"] = why
        best = None
        for n in names:
            k = kernels[n]
            err = _close(k(*ops), ref)
            ms = bench_ms(k, ops, reps=args.reps)
            ok = err < 1e-2
            res["configs"][n] = {"ms": ms, "max_err": err, "config": k.entry["config"], "ok": ok}
            if not ok:
                print(f"!! {n}: error {err:.3g} (max |out - ref| / max |ref|, float32 reference)")
            elif best is None or ms < res["configs"][best]["ms"]:
                best = n
        default = names[0]
        timings["tvm default"] = res["configs"][default]["ms"]
        if best:
            timings["tvm best"] = res["configs"][best]["ms"]
            res["best"] = best
        res["ms"] = timings
        res["TB/s"] = {k: nbytes / (v * 1e-3) / 1e12 for k, v in timings.items()}
        results["cases"][cname] = res
        errs = {"eager": res["eager_err"], "torch.compile": res.get("torch.compile_err"),
                "braze triton": res.get("braze_triton_err"), "tvm default": res["configs"][default]["max_err"],
                "tvm best": res["configs"][best]["max_err"] if best else None}
        for peer, ms in timings.items():
            rows.append((cname, peer, ms, nbytes / (ms * 1e-3) / 1e12, timings["eager"] / ms, errs.get(peer)))
    print(f"\n{dev}, torch {torch.__version__}, kernels exported with TVM {manifest.get('tvm')} "
          f"for {manifest.get('arch')} (loading + NVRTC {load_s:.1f} s)")
    print("err: max |out - float32 reference| / max |reference| (the reference runs the same ops in float32)")
    print(f"{'group':<14}{'peer':<16}{'ms':>9}{'TB/s':>8}{'vs eager':>10}{'err':>10}")
    for cname, peer, ms, tbs, sp, err in rows:
        e = f"{err:.1e}" if err is not None else "-"
        print(f"{cname:<14}{peer:<16}{ms:>9.3f}{tbs:>8.2f}{sp:>9.2f}x{e:>10}")
    out = args.json or os.path.join(os.environ.get("OUT", "."), "tvm_cuda.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
