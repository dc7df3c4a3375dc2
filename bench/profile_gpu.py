"""Where the GPU time of a compiled model goes: braze next to torch.compile, per kernel.

    python bench/profile_gpu.py --model bert            # BERT-base fp16 B32 S512, lengths U[64, 512]
    python bench/profile_gpu.py --model llama --top 25  # Llama-3.2-1B shape bf16 B8, lengths U[128, 2048]

Both run the same padded batch (the workloads of ``bench/varlen.py``) under
``torch.profiler`` with CUDA activity: the table lists each kernel's summed
GPU time over ``--iters`` forwards (divided by them), largest first, and the
total of kernel time per forward, so a gap between braze and the peer shows
which kernels it comes from. braze runs without CUDA graphs here (each
kernel is then visible to the profiler); kernel times are the same either way.
"""
from __future__ import annotations

import argparse
import os

import torch

import repo_root  # noqa: F401 - before transformers: keeps bench/kernels.py from shadowing `kernels`

_varlen = repo_root.bench_module("varlen")
batch_inputs, workload_lengths = _varlen.batch_inputs, _varlen.workload_lengths   # bench/varlen.py's batches


def kernel_table(fn, iters: int) -> tuple[list[tuple[str, int, float]], float]:
    """([(kernel name, calls per forward, GPU us per forward)], total GPU ms per forward)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                fn()
            torch.cuda.synchronize()
    rows: dict[str, list] = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        r = rows.setdefault(e.name, [0, 0.0])
        r[0] += 1
        r[1] += e.device_time
    out = sorted(((n[:90], c // iters, us / iters) for n, (c, us) in rows.items()), key=lambda r: -r[2])
    return out, sum(r[2] for r in out) / 1e3


def main(argv=None) -> None:
    import braze
    from tools import hf_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("bert", "llama"), default="bert")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--no-padding-elimination", action="store_true")
    args = ap.parse_args(argv)
    bs, seq, lens = workload_lengths()[args.model]
    if args.model == "bert":
        model = hf_models.build("bert", dtype=torch.float16, device="cuda", **hf_models.BERT_BASE)
        vocab = hf_models.BERT_BASE["vocab_size"]
        call = (lambda m, inp: m(**inp)[0])
    else:
        model = hf_models.build("llama", dtype=torch.bfloat16, device="cuda", **hf_models.LLAMA_1B)
        vocab = hf_models.LLAMA_1B["vocab_size"]
        call = (lambda m, inp: m(**inp, use_cache=False).logits)
    inp = batch_inputs(bs, seq, lens, vocab, "cuda")
    disable = ("eliminate_padding",) if args.no_padding_elimination else ()
    contenders = {"braze": braze.jit(model, disable=disable), "torch.compile": torch.compile(model, dynamic=False)}
    valid = float(inp["attention_mask"].float().mean())
    print(f"{args.model}: batch {bs} x {seq}, {valid:.0%} valid, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}")
    for name, m in contenders.items():
        table, total = kernel_table(lambda: call(m, inp), args.iters)
        print(f"\n== {name}: {total:.3f} ms of kernel time per forward, {sum(r[1] for r in table)} kernels")
        print(f"{'us':>9} {'calls':>5}  kernel")
        for kname, calls, us in table[:args.top]:
            print(f"{us:9.1f} {calls:5d}  {kname}")


if __name__ == "__main__":
    os.environ.setdefault("BRAZE_PROGRESS", "0")
    main()
