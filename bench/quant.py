"""Weight-only INT8 / INT4 on the GPU: decode steps and prefill, braze against PyTorch peers.

Run on the GPU machine (``. bench/gpu_env.sh`` first): ``python bench/quant.py``.
Llama-3.2-1B shaped model (random weights, bf16), static cache of ``--cache``
rows, prompt ``--prompt``. In one process:

- decode step (batch 1 and 8): ``braze.generate``'s per-step time on the bf16
  model, on ``braze.quantize(model, "int8")`` and on ``"int4"`` (group 128);
  peers: the gpt-fast style weight-only linears of the same formats
  (int8: ``linear(x, w.to(x.dtype)) * scales``; int4: ATen's
  ``_weight_int4pack_mm``), under torch.compile mode="reduce-overhead", timed
  by the same decode loop as ``bench/decode.py``;
- the same model's forward as a user calls it in a static-cache decode loop
  (``bench/decode.py``'s step: the plain call, under inference_mode and no_grad):
  ``braze.jit``, eager (for a quantized model: braze's torch reference of the
  quantized linear) and torch.compile default (``--who`` picks the rows);
- prefill (batch 4 x 2048): the plain call of ``braze.jit`` on each format, beside eager
  and torch.compile where ``--who`` names them, under inference_mode and no_grad;
- per row: time, tokens/s, the bytes roofline (weights as stored + valid K/V,
  at the copy bandwidth measured in this run), weight memory.

Writes ``quant.json`` / ``quant.md`` under ``$OUT`` (or ``bench/results``).
A peer that this torch build lacks is reported with its error, not skipped silently.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os

import torch

import repo_root  # noqa: F401 - before transformers (see bench/repo_root.py)


_decode = repo_root.bench_module("decode")
StepRunner, copy_bandwidth, kv_bytes, sync_ms, table = (_decode.StepRunner, _decode.copy_bandwidth, _decode.kv_bytes,
                                                        _decode.sync_ms, _decode.table)


class Int8PeerLinear(torch.nn.Module):
    """gpt-fast's int8 weight-only linear: the weight converted in the GEMM (torch.compile fuses it)."""

    def __init__(self, lin: torch.nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()
        s = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("weight", torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", s.to(lin.weight.dtype))

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales


class Int4PeerLinear(torch.nn.Module):
    """gpt-fast's int4 weight-only linear through ATen's tinygemm kernel (``_weight_int4pack_mm``)."""

    def __init__(self, lin: torch.nn.Linear, group: int = 128, inner_k_tiles: int = 8):
        super().__init__()
        w = lin.weight.detach().float()
        n, k = w.shape
        g = w.reshape(n, k // group, group)
        lo, hi = g.amin(dim=2), g.amax(dim=2)
        s = ((hi - lo) / 15.0).clamp_min(1e-6)
        q = torch.clamp(torch.round((g - lo[..., None]) / s[..., None]), 0, 15).reshape(n, k).to(torch.int32)
        packed_u8 = (q[:, 0::2] << 4 | q[:, 1::2]).to(torch.uint8)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack(packed_u8, inner_k_tiles))
        zeros = lo + 8 * s   # tinygemm: w = (q - 8) * s + zero
        self.register_buffer("scales_and_zeros", torch.stack([s, zeros], dim=2).transpose(0, 1)
                             .contiguous().to(torch.bfloat16))
        self.group, self.n = group, n

    def forward(self, x):
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.packed,
                                               self.group, self.scales_and_zeros)
        return y.reshape(*shape[:-1], self.n).to(x.dtype)


def peer_quantize(model, fmt: str):
    import copy

    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
            parent, _, child = name.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, child,
                    Int8PeerLinear(mod) if fmt == "int8" else Int4PeerLinear(mod))
    return m


def stored_bytes(model) -> int:
    from braze.compiler.quantize import weight_bytes

    return weight_bytes(model)


def braze_step_ms(model, batch, args) -> float:
    """``braze.generate``'s per-step time, by ``bench/decode.py``'s measurement."""
    return _decode.measure_braze_generate(model, batch, args)[0]["step_ms"]


def peer_step_ms(model, batch, args) -> float:
    fwd = torch.compile(model.forward, mode="reduce-overhead")
    r = StepRunner(model, fwd, batch, args.prompt, args.cache, model.config.vocab_size)
    with torch.inference_mode():
        r.prefill()
        for _ in range(args.warmup + 3):
            r.step()
        return sync_ms(r.step, args.steps)


def _braze_jit(model):
    import braze

    return braze.jit(model.forward)


FORWARDS = {"braze.jit": _braze_jit, "eager": lambda m: m.forward, "torch.compile": lambda m: torch.compile(m.forward)}


def forward_row(who, model, batch, args) -> dict:
    """``bench/decode.py``'s step of ``who``'s forward: ms under inference_mode and no_grad."""
    row, _ = _decode.measure_step(who, model, FORWARDS[who](model), batch, args)
    return {"step_ms": row["step_ms"], "step_ms_no_grad": row["step_ms_no_grad"]}


def prefill_row(who, model, args) -> dict:
    """``who``'s plain call on a batch-4 x 2048 prompt: ms under inference_mode and no_grad."""
    forward = FORWARDS[who](model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (4, 2048), generator=g).cuda()
    row = {}
    for key, mode in (("prefill_ms", torch.inference_mode), ("prefill_ms_no_grad", torch.no_grad)):
        with mode():
            for _ in range(2):
                forward(ids, use_cache=False)
            row[key] = sync_ms(lambda: forward(ids, use_cache=False), 5)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--cache", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--no-prefill", action="store_true")
    ap.add_argument("--lm-head", action="store_true",
                    help="also int8 / int4 with the LM head quantized (braze.quantize(..., lm_head=True))")
    ap.add_argument("--profile", action="store_true",
                    help="print braze.generate's kernels by GPU time per step for each format (batch 1)")
    ap.add_argument("--who", default="braze,peer,braze.jit,eager,torch.compile",
                    help="rows per format: braze (braze.generate), peer (the PyTorch weight-only peer under "
                         "reduce-overhead), and the forward as called: braze.jit, eager, torch.compile")
    ap.add_argument("--grad-modes", default="inference_mode,no_grad")
    ap.add_argument("--formats", default="",
                    help="only these quantized formats (e.g. int4+head); bf16, the reference of the ratios, "
                         "always runs first")
    ap.add_argument("--out", default=os.environ.get("OUT", os.path.join(repo_root.HERE, "results")))
    ap.set_defaults(compile_profile=False, memory_report=False, tag="")   # what decode.py's measurement reads
    args = ap.parse_args()
    whos = [w.strip() for w in args.who.split(",") if w.strip()]
    unknown = set(whos) - {"braze", "peer", *FORWARDS}
    if unknown:
        ap.error(f"unknown --who {sorted(unknown)}")
    import transformers
    import triton

    import braze
    from braze.compiler.quantize import QuantEmbedding
    from tools import hf_models

    repo_root.bench_module("plain_call").raise_dynamo_limits()
    shape = dict(hf_models.LLAMA_1B, num_hidden_layers=args.layers)
    base = hf_models.build("llama", dtype=torch.bfloat16, device="cuda", **shape)
    base.generation_config.eos_token_id = None
    base.config.eos_token_id = None
    bw = copy_bandwidth()
    meta = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__,
            "copy_TBps": bw / 1e12, "prompt": args.prompt, "cache": args.cache, "layers": args.layers}
    print(json.dumps(meta), flush=True)
    rows = []
    models = {"bf16": base}
    only = {f.strip() for f in args.formats.split(",") if f.strip()}
    for fmt in ("int8", "int4"):
        for name, head in ((fmt, False), (fmt + "+head", True)):
            if (head and not args.lm_head and name not in only) or (only and name not in only):
                continue
            models[name] = braze.quantize(base, fmt, group_size=128, inplace=False, lm_head=head)
    for fmt, model in models.items():
        wb = stored_bytes(model)
        # bytes a step reads: everything stored, but an embedding table of its own (not the LM
        # head's, which every step reads whole) of which only the looked-up rows are read
        emb = model.get_input_embeddings()
        head = model.get_output_embeddings()
        own = not isinstance(emb, QuantEmbedding) and (head is None or getattr(head, "weight", None) is not emb.weight)
        read = wb - (emb.weight.numel() * emb.weight.element_size() if own else 0)
        for batch in [int(b) for b in args.batches.split(",")]:
            for who in whos:
                if (who == "peer" and fmt == "bf16") or (who != "braze" and fmt.endswith("+head")):
                    continue
                torch._dynamo.reset()
                gc.collect()
                torch.cuda.empty_cache()
                row = {"format": fmt, "who": who, "batch": batch, "weight_GB": wb / 1e9}
                try:
                    if who == "braze":
                        ms = braze_step_ms(model, batch, args)
                    elif who == "peer":
                        ms = peer_step_ms(peer_quantize(base, fmt), batch, args)
                    else:
                        row.update(forward_row(who, model, batch, args))
                        ms = row["step_ms"]
                    floor = (read + kv_bytes(base.config, batch, args.prompt + args.steps // 2)) / bw * 1e3
                    row.update(step_ms=ms, tokens_per_s=batch * 1e3 / ms, roofline_frac=floor / ms, floor_ms=floor)
                except Exception as e:  # noqa: BLE001 - a peer this torch lacks is reported, not hidden
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                print(json.dumps(row), flush=True)
                rows.append(row)
                if args.profile and who == "braze" and batch == 1 and "step_ms" in row:
                    print(f"braze.generate {fmt}, batch 1:\n" + _decode.profile_generate(model, 1, args), flush=True)
        # prefill B4 S2048: braze.jit's plain call, beside eager and torch.compile when --who names them
        for who in [] if args.no_prefill else ["braze.jit"] + [w for w in ("eager", "torch.compile") if w in whos]:
            torch._dynamo.reset()
            row = {"format": fmt, "who": f"{who} prefill B4 S2048", "weight_GB": wb / 1e9}
            try:
                row.update(prefill_row(who, model, args))
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            print(json.dumps(row), flush=True)
            rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "quant.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    md = [f"# Weight-only quantization, {meta['device']}, {meta['date']}", "",
          table(rows, ["format", "who", "batch", "step_ms", "step_ms_no_grad", "tokens_per_s", "roofline_frac",
                       "prefill_ms", "prefill_ms_no_grad", "weight_GB", "error"])]
    with open(os.path.join(args.out, "quant.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
