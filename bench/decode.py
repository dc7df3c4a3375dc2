"""Decode speed on the GPU: one decode step and whole ``generate`` calls.

Run on the GPU machine (``. bench/gpu_env.sh`` first): ``python bench/decode.py``.
Llama-3.2-1B shaped model (random weights, bf16), Hugging Face static cache
of ``--cache`` rows, a ``--prompt``-token prompt, batch 1 / 8 / 64. In one
process, for each batch:

- step: eager, torch.compile (default), torch.compile mode="reduce-overhead"
  and braze.jit, each as ``model.forward`` over a Hugging Face ``StaticCache``
  (greedy argmax on the device after each step, as a decode loop does);
  time per step is synchronised wall clock over ``--steps`` steps after the
  prompt, measured after warm-up, under ``inference_mode`` (``step_ms``) and
  again under ``no_grad`` (``step_ms_no_grad``);
- braze.generate: the per-step time of its own loop (whole-step CUDA graph),
  ``(T(1 + steps new tokens) - T(1 new token)) / steps``;
- generate: ``model.generate(..., cache_implementation="static")`` as Hugging
  Face runs it by default on CUDA (it torch.compiles the model itself), then
  with each peer's forward (``disable_compile=True``), and ``braze.generate``:
  tokens/s over ``--gen-tokens`` tokens.

Also per contender: the fraction of the bytes roofline (every weight read
once plus the valid K/V rows, at the copy bandwidth measured in this run),
compile time (the first prompt plus three steps, minus the same calls again on the
same cache, warm),
and peak memory (``torch.cuda.max_memory_allocated``): ``peak_gb`` over the
timed steps (weights, cache and step: what serving holds; braze.generate's over
whole generate calls, prefill included), ``compile_peak_gb`` over compiling and
warming up (braze's candidate checks and references included); the generate
rows' ``peak_gb`` over one whole warm generate call, the same window for every
contender (issue 17's peak against eager's). Outputs are checked
against eager (the first greedy tokens agree). Writes ``decode.json`` and
``decode.md`` under ``$OUT`` (or ``bench/results``) after each batch, so a
call cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import time

import torch

import repo_root  # noqa: F401 - before transformers (see bench/repo_root.py)


def sync_ms(fn, n: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3 / n


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = min(sync_ms(lambda: y.copy_(x), 10) for _ in range(3))
    return 2 * x.numel() / (ms * 1e-3)


def weight_bytes(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            n += p.numel() * p.element_size()
    return n


def kv_bytes(cfg, batch: int, valid: int, elt: int = 2) -> int:
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * batch * cfg.num_key_value_heads * valid * hd * elt


class StepRunner:
    """A forward-based decode loop over an HF StaticCache (what every peer runs)."""

    def __init__(self, model, forward, batch: int, prompt: int, cache_len: int, vocab: int):
        import transformers

        self.model, self.forward = model, forward
        self.cache = transformers.StaticCache(config=model.config, max_cache_len=cache_len)
        cfg = model.config
        # NOTE: allocated before any compiled call, as HF generate does, so torch.compile's
        # CUDA graphs see static cache addresses (a cache made inside the graph is skipped).
        self.cache.early_initialization(batch, cfg.num_key_value_heads,
                                        getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
                                        model.dtype, torch.device("cuda"))
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (batch, prompt), generator=g).cuda()
        self.mask = torch.ones(batch, cache_len, dtype=torch.long, device="cuda")
        self.kw = "cache" if "cache" in model.forward.__code__.co_varnames else "past_key_values"
        self.prompt = prompt

    def prefill(self):
        pos = torch.arange(self.prompt, device="cuda").expand(self.ids.shape[0], -1)
        out = self.forward(input_ids=self.ids, attention_mask=self.mask, position_ids=pos, use_cache=True,
                           logits_to_keep=1, **{self.kw: self.cache})
        self.tok = out.logits[:, -1:].argmax(-1)
        self.pos = pos[:, -1:].clone()
        self.tokens = [self.tok]

    def step(self):
        self.pos = self.pos + 1
        out = self.forward(input_ids=self.tok, attention_mask=self.mask, position_ids=self.pos, use_cache=True,
                           **{self.kw: self.cache})
        self.tok = out.logits[:, -1:].argmax(-1)
        self.tokens.append(self.tok)


def measure_step(name, model, forward, batch, args) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    r = StepRunner(model, forward, batch, args.prompt, args.cache, model.config.vocab_size)

    def prompt_and_three(runner) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        runner.prefill()
        for _ in range(3):
            runner.step()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.inference_mode():
        first = prompt_and_three(r)
        tokens = torch.cat(r.tokens[:4], dim=1).cpu()
        for _ in range(args.warmup):
            r.step()
        compile_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()          # from here: what serving holds (cache, weights, step)
        ms = sync_ms(r.step, args.steps)
        peak = torch.cuda.max_memory_allocated()
        # NOTE: the same 1 + 3 calls again on the same runner (same cache object, emptied
        # in place: HF places a prompt after the cache's current length), warm: what
        # compiling cost. A new StaticCache may make a peer recompile (its guards hold the
        # cache); that cost belongs to each generate call and shows in the generate rows.
        r.cache.reset()
        warm = prompt_and_three(r)
    # issue 18: the same step under no_grad, the other grad mode users run (a recompile
    # there, if the contender needs one, is paid in this warm-up)
    ms_no_grad = None
    if "no_grad" in args.grad_modes:
        with torch.no_grad():
            r2 = StepRunner(model, forward, batch, args.prompt, args.cache, model.config.vocab_size)
            prompt_and_three(r2)
            for _ in range(args.warmup):
                r2.step()
            ms_no_grad = sync_ms(r2.step, args.steps)
            del r2
    row = {"contender": name, "batch": batch, "step_ms": ms, "step_ms_no_grad": ms_no_grad,
           "compile_s": max(0.0, first - warm), "peak_gb": peak / 1e9, "compile_peak_gb": compile_peak / 1e9,
           "valid_kv": args.prompt + 4 + args.warmup + args.steps // 2}
    del r
    return row, tokens


def measure_braze_generate(model, batch, args) -> dict:
    import braze

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt), generator=g).cuda()
    kw = dict(max_cache_len=args.cache)
    prof = None
    if args.compile_profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    if args.memory_report:
        torch.cuda.memory._record_memory_history(stacks="python", max_entries=200000)
    t0 = time.perf_counter()
    first = braze.generate(model, ids, max_new_tokens=4, **kw)
    torch.cuda.synchronize()
    cold = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        write_profile(prof, os.path.join(args.out, f"decode{args.tag}-compile-b{batch}.txt"))
    braze.generate(model, ids, max_new_tokens=args.steps + 1, **kw)     # captures the step graph
    compile_peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()              # from here: what serving holds

    def run(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = braze.generate(model, ids, max_new_tokens=n, **kw)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1e3, out

    t1 = min(run(1)[0] for _ in range(3))
    tn, out = min((run(args.steps + 1) for _ in range(3)), key=lambda x: x[0])
    warm4 = run(4)[0]
    if args.memory_report:
        print(memory_report(model, batch), flush=True)
        torch.cuda.memory._record_memory_history(enabled=None)
    # NOTE: under --compile-profile the cold call ran under cProfile, which slows Python
    # several-fold: that time is reported apart, never as compile_s.
    compile_s = max(0.0, cold - warm4 / 1e3)
    return {"contender": "braze.generate", "batch": batch, "step_ms": (tn - t1) / args.steps,
            "prefill_ms": t1, "compile_s": None if prof is not None else compile_s,
            **({"compile_s_under_cprofile": compile_s} if prof is not None else {}),
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9, "compile_peak_gb": compile_peak / 1e9,
            "valid_kv": args.prompt + args.steps // 2}, first[:, args.prompt:].cpu()


def _own_file(path: str) -> bool:
    """A file of this repository (not of a package installed under it)."""
    path = os.path.abspath(path)
    return path.startswith(repo_root.ROOT + os.sep) and f"{os.sep}site-packages{os.sep}" not in path \
        and f"{os.sep}.venv{os.sep}" not in path


def memory_report(model, batch: int, top: int = 15, depth: int = 5) -> str:
    """What is allocated after the timed generate calls besides the weights: live blocks
    grouped by the innermost ``depth`` braze / bench frames that allocated them (issue 17's peak memory)."""
    import collections

    params = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    # NOTE: first what unreachable cycles hold (garbage the peak counted), then what is live
    before = torch.cuda.memory_allocated()
    gc.collect()
    garbage = before - torch.cuda.memory_allocated()
    snap = torch.cuda.memory._snapshot()
    groups: dict = collections.defaultdict(lambda: [0, 0])
    total = 0
    for seg in snap["segments"]:
        for blk in seg["blocks"]:
            if blk["state"] != "active_allocated" or blk["address"] in params:
                continue
            frames = (blk.get("frames") or [])
            own = [f"{os.path.relpath(f['filename'], repo_root.ROOT)}:{f['line']} {f['name']}"
                   for f in frames if _own_file(f["filename"])]
            where = " < ".join(own[:depth]) or "unknown frame"
            groups[where][0] += blk["size"]
            groups[where][1] += 1
            total += blk["size"]
    lines = [f"memory besides weights after the timed calls, batch {batch}: {total / 1e9:.3f} GB live, "
             f"{garbage / 1e9:.3f} GB freed by gc.collect() first"]
    for where, (size, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {size / 1e6:9.1f} MB in {n:4d} blocks  {where}")
    return "\n".join(lines)


def write_profile(prof, path: str, top: int = 45) -> None:
    """The cold compile's cProfile: functions by cumulative and by own time."""
    import io
    import pstats

    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)
    with open(path, "w") as f:
        f.write(buf.getvalue())


def measure_generate(name, model, forward, batch, args) -> dict:
    """Tokens/s of a whole generate call (the second call: compiled and captured)."""
    import braze

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt), generator=g).cuda()
    n = args.gen_tokens
    if name == "braze.generate":
        def call():
            return braze.generate(model, ids, max_new_tokens=n, max_cache_len=args.cache)
    else:
        def call():
            saved = model.forward
            model.forward = forward
            try:
                with torch.inference_mode():
                    # NOTE: HF's own auto-compile (torch.compile of __call__ on CUDA with a static
                    # cache) is the "hf generate default" row; every other row runs its forward.
                    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                          min_new_tokens=n, do_sample=False, cache_implementation="static",
                                          pad_token_id=0, disable_compile=name != "hf generate default")
            finally:
                model.forward = saved
    call()
    torch.cuda.synchronize()
    # NOTE: the peak over a whole warm generate call (prefill, steps, sampling), the same window for
    # every contender: the step rows' peaks are not (braze.generate's spans whole calls, the
    # forward-only rows' the decode steps alone)
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = call()
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    return {"contender": name, "batch": batch, "generate_s": s, "tokens_per_s": batch * n / s,
            "new_tokens": int(out.shape[1] - args.prompt), "peak_gb": torch.cuda.max_memory_allocated() / 1e9}


def kernel_times(fn) -> dict:
    """{kernel name: [launches, GPU us]} of one call of ``fn`` (torch.profiler; kernels
    replayed from a CUDA graph are recorded one by one)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows: dict = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            r = rows.setdefault(e.name, [0, 0.0])
            r[0] += 1
            r[1] += e.device_time
    return rows


def kernels_per_step(many, few, steps: int, top: int = 30) -> str:
    """Per decode step: each kernel's launches and GPU time, from the difference of two
    profiled calls that run ``steps`` steps apart (prefill and setup cancel)."""
    a, b = kernel_times(many), kernel_times(few)
    rows = []
    for name, (n, us) in a.items():
        n0, us0 = b.get(name, [0, 0.0])
        rows.append((name[:100], (n - n0) / steps, (us - us0) / steps))
    rows.sort(key=lambda r: -r[2])
    total = sum(r[2] for r in rows)
    launches = sum(r[1] for r in rows)
    lines = [f"GPU kernel time per step {total:.1f} us over {launches:.0f} launches", "| kernel | launches | us |",
             "| --- | --- | --- |"]
    lines += [f"| {n} | {c:.1f} | {us:.1f} |" for n, c, us in rows[:top]]
    return "\n".join(lines)


def profile_generate(model, batch, args) -> str:
    import braze

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt), generator=g).cuda()
    kw = dict(max_cache_len=args.cache)
    return kernels_per_step(lambda: braze.generate(model, ids, max_new_tokens=33, **kw),
                            lambda: braze.generate(model, ids, max_new_tokens=1, **kw), 32)


def profile_step(model, forward, batch, args) -> str:
    """GPU time per kernel of a forward's decode steps (as replayed: CUDA graphs included)."""
    r = StepRunner(model, forward, batch, args.prompt, args.cache, model.config.vocab_size)
    with torch.inference_mode():
        r.prefill()
        for _ in range(5):
            r.step()

        def steps(n):
            def run():
                for _ in range(n):
                    r.step()
            return run
        return kernels_per_step(steps(21), steps(1), 20)


def table(rows: list, keys: list) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    # what precompiling did (kernels built in worker processes, in threads) goes with the compile time
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("braze.precompile").setLevel(logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--cache", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--grad-modes", default="inference_mode,no_grad",
                    help="forward contenders' step times: under inference_mode (always), and no_grad if listed")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--only", default="eager,compile,reduce-overhead,braze.jit,braze.generate,generate")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--profile", action="store_true",
                    help="print each contender's kernels by GPU time per step (batch 1)")
    ap.add_argument("--compile-profile", action="store_true",
                    help="cProfile braze.generate's cold compile (decode<tag>-compile-b<batch>.txt)")
    ap.add_argument("--memory-report", action="store_true",
                    help="after braze.generate's timed calls, list live allocations besides the weights by origin")
    ap.add_argument("--tag", default="", help="suffix of the output files (decode<tag>.json/.md)")
    ap.add_argument("--out", default=os.environ.get("OUT", os.path.join(repo_root.HERE, "results")))
    args = ap.parse_args()
    only = set(args.only.split(","))

    import transformers
    import triton

    import braze
    from tools import hf_models

    torch.manual_seed(0)
    shape = dict(hf_models.LLAMA_1B, num_hidden_layers=args.layers)
    model = hf_models.build("llama", attn="sdpa", dtype=torch.bfloat16, device="cuda",
                            **dict(shape, vocab_size=shape["vocab_size"]))
    model.generation_config.eos_token_id = None   # random weights: never stop early
    model.config.eos_token_id = None
    bw = copy_bandwidth()
    wbytes = weight_bytes(model)
    meta = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__,
            "braze": braze.__version__, "copy_TBps": bw / 1e12, "weight_GB": wbytes / 1e9,
            "prompt": args.prompt, "cache": args.cache, "steps": args.steps, "layers": args.layers}
    print(json.dumps(meta), flush=True)
    repo_root.bench_module("plain_call").raise_dynamo_limits()
    # Each contender compiles its own forward after a Dynamo reset: they share the
    # model's code objects, and one's compiled entries must not stand in for another's.
    factories = {}
    if "braze.jit" in only:
        factories["braze.jit"] = lambda: braze.jit(model.forward)
    if "reduce-overhead" in only:
        factories["torch.compile reduce-overhead"] = lambda: torch.compile(model.forward, mode="reduce-overhead")
    if "compile" in only:
        factories["torch.compile"] = lambda: torch.compile(model.forward)
    if "eager" in only:
        factories["eager"] = lambda: model.forward
    plain_forward = model.forward
    steps, gens = [], []
    os.makedirs(args.out, exist_ok=True)

    def fail(name, batch, e) -> dict:
        import traceback

        traceback.print_exc()
        return {"contender": name, "batch": batch, "error": f"{type(e).__name__}: {e}"[:400]}

    def record_gen(name, fwd, batch):
        try:
            row = measure_generate(name, model, fwd, batch, args)
        except Exception as e:  # noqa: BLE001
            row = fail(name, batch, e)
        print(json.dumps(row), flush=True)
        gens.append(row)

    batches = [int(b) for b in args.batches.split(",")]
    references: dict = {}

    def run_braze_generate():
        torch._dynamo.reset()
        for batch in batches:
            try:
                row, _ = measure_braze_generate(model, batch, args)
                floor = (wbytes + kv_bytes(model.config, batch, row["valid_kv"])) / bw * 1e3
                row.update(roofline_frac=floor / row["step_ms"], tokens_per_s=batch * 1e3 / row["step_ms"],
                           floor_ms=floor)
            except Exception as e:  # noqa: BLE001
                row = fail("braze.generate", batch, e)
            print(json.dumps(row), flush=True)
            steps.append(row)
            if args.profile and batch == 1 and "step_ms" in row:
                print("braze.generate, batch 1:\n" + profile_generate(model, 1, args), flush=True)
            if "generate" in only:
                record_gen("braze.generate", None, batch)
            write(args.out, args.tag, meta, steps, gens)

    def run_forward(name, make):
        # Contender-major: each compiles once (and once more when the batch size changes
        # and Dynamo makes it dynamic), then runs every batch size.
        torch._dynamo.reset()
        fwd = make()
        model.generation_config.disable_compile = False
        for batch in batches:
            try:
                row, tokens = measure_step(name, model, fwd, batch, args)
            except Exception as e:  # noqa: BLE001 - one contender failing must not lose the others
                row, tokens = fail(name, batch, e), None
            references[(name, batch)] = (row, tokens)
            floor = (wbytes + kv_bytes(model.config, batch, row.get("valid_kv", args.prompt))) / bw * 1e3
            if "step_ms" in row:
                row["roofline_frac"] = floor / row["step_ms"]
                row["tokens_per_s"] = batch * 1e3 / row["step_ms"]
            row["floor_ms"] = floor
            print(json.dumps(row), flush=True)
            steps.append(row)
            if args.profile and batch == 1 and "step_ms" in row:
                print(f"{name}, batch 1:\n" + profile_step(model, fwd, 1, args), flush=True)
            if "generate" in only and name != "eager":
                record_gen(name, fwd, batch)
            write(args.out, args.tag, meta, steps, gens)

    # braze first: a call cut short keeps its headline rows.
    if "braze.generate" in only:
        run_braze_generate()
        # NOTE: braze.generate keeps a cache and a captured step per bucket; drop them so the
        # next contenders' peak memory is theirs alone.
        from braze.compiler import generate as _gen

        _gen._STATES.clear()
        gc.collect()
        torch.cuda.empty_cache()
    for name, make in factories.items():
        run_forward(name, make)
    if "generate" in only:
        torch._dynamo.reset()
        for batch in batches:
            record_gen("hf generate default", plain_forward, batch)
    for (name, batch), (row, tokens) in references.items():   # the first greedy tokens agree with eager's
        ref = references.get(("eager", batch), (None, None))[1]
        if name != "eager" and tokens is not None and ref is not None:
            row["agrees_with_eager"] = bool((tokens == ref).float().mean() >= 0.75)
    write(args.out, args.tag, meta, steps, gens)


def write(out: str, tag: str, meta: dict, steps: list, gens: list) -> None:
    with open(os.path.join(out, f"decode{tag}.json"), "w") as f:
        json.dump({"meta": meta, "step": steps, "generate": gens}, f, indent=1)
    md = [f"# Decode, {meta['device']}, {meta['date']}", "",
          f"torch {meta['torch']}, triton {meta['triton']}, transformers {meta['transformers']}; Llama-1B shape "
          f"({meta['layers']} layers) bf16, prompt {meta['prompt']}, cache {meta['cache']}, "
          f"copy bandwidth {meta['copy_TBps']:.2f} TB/s, weights {meta['weight_GB']:.2f} GB", "",
          "## One decode step", "",
          table(steps, ["contender", "batch", "step_ms", "step_ms_no_grad", "tokens_per_s", "roofline_frac", "floor_ms", "compile_s",
                        "peak_gb", "compile_peak_gb", "agrees_with_eager", "error"]), "",
          "## generate", "", table(gens, ["contender", "batch", "generate_s", "tokens_per_s", "new_tokens", "peak_gb", "error"])]
    with open(os.path.join(out, f"decode{tag}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    try:
        plot = repo_root.bench_module("plot_decode").plot

        plot([os.path.join(out, f"decode{tag}.json")], os.path.join(out, f"decode{tag}.png"))
    except (ImportError, ValueError) as e:
        print(f"no plot: {e}", flush=True)


if __name__ == "__main__":
    main()
