"""One Triton kernel that picks the next token of each row of logits.

One program per row, looping over the vocabulary in blocks:

1. max, min and first argmax of the row (greedy stops here);
2. top-k: the k-th largest scaled logit, by bisection over the row's values
   seen as ordered integers (float bits with the sign folded, so integer
   order is float order): each step counts the values at or above the pivot,
   at most 32 steps, exact;
3. top-p: the same bisection on the probability mass at or above the pivot
   (``exp(x - max)`` summed, against ``top_p`` times the mass the top-k
   filter kept), which keeps exactly the tokens Hugging Face's warper keeps:
   those with less than ``top_p`` of the mass strictly above them;
4. a Gumbel-max draw over the kept tokens: ``argmax(x / T + G)`` with ``G``
   from Philox keyed by a device-side seed, the same distribution as a
   multinomial draw from their softmax.

Only the row of logits is read (steps 2 and 3 re-read it from L2); nothing
but one int64 token per row is written. The seed tensor is advanced on the
device after each call, so a step captured in a CUDA graph draws new numbers
on every replay.
"""
from __future__ import annotations

import os

import torch
import triton.language as tl

from braze.compiler.sampling import SamplingParams


def _sample_kernel(logits_ptr, out_ptr, seed_ptr, stride_row, V, inv_temp, top_k, top_p,
                   SAMPLE: tl.constexpr, TOP_K: tl.constexpr, TOP_P: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    offs = tl.arange(0, BLOCK)
    best = -float("inf")
    best_i = 0
    lo_val = float("inf")
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
        cmax = tl.max(x, 0)
        ci = tl.argmax(x, 0) + start
        best_i = tl.where(cmax > best, ci, best_i)
        best = tl.maximum(best, cmax)
        lo_val = tl.minimum(lo_val, tl.min(tl.where(idx < V, x, float("inf")), 0))
    if not SAMPLE:
        tl.store(out_ptr + row, best_i.to(tl.int64))
        return
    # Ordered-integer keys: int32 bits of a float32, negatives with their low 31 bits flipped.
    hi_bits = best.to(tl.int32, bitcast=True)
    lo_bits = lo_val.to(tl.int32, bitcast=True)
    hi_key = (hi_bits ^ ((hi_bits >> 31) & 0x7FFFFFFF)).to(tl.int64)
    lo_key = (lo_bits ^ ((lo_bits >> 31) & 0x7FFFFFFF)).to(tl.int64)
    # thr: the smallest key kept. Invariant of each bisection: key lo passes, key hi does not.
    thr = lo_key
    if TOP_K:
        lo = lo_key
        hi = hi_key + 1
        while hi - lo > 1:
            mid = lo + (hi - lo) // 2
            count = 0
            for start in range(0, V, BLOCK):
                idx = start + offs
                x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
                b = x.to(tl.int32, bitcast=True)
                k = (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.int64)
                count += tl.sum(((k >= mid) & (idx < V)).to(tl.int32), 0)
            lo = tl.where(count >= top_k, mid, lo)
            hi = tl.where(count >= top_k, hi, mid)
        thr = lo
    if TOP_P:
        total = 0.0
        for start in range(0, V, BLOCK):
            idx = start + offs
            x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
            b = x.to(tl.int32, bitcast=True)
            k = (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.int64)
            total += tl.sum(tl.where((k >= thr) & (idx < V), tl.exp(x - best), 0.0), 0)
        target = top_p * total
        lo = thr
        hi = hi_key + 1
        while hi - lo > 1:
            mid = lo + (hi - lo) // 2
            mass = 0.0
            for start in range(0, V, BLOCK):
                idx = start + offs
                x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
                b = x.to(tl.int32, bitcast=True)
                k = (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.int64)
                mass += tl.sum(tl.where((k >= mid) & (idx < V), tl.exp(x - best), 0.0), 0)
            lo = tl.where(mass >= target, mid, lo)
            hi = tl.where(mass >= target, hi, mid)
        thr = lo
    seed = tl.load(seed_ptr)
    draw = -float("inf")
    token = best_i
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
        b = x.to(tl.int32, bitcast=True)
        k = (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.int64)
        u = tl.rand(seed, (row * V + idx).to(tl.int32))
        g = x - tl.log(-tl.log(u))
        g = tl.where((k >= thr) & (idx < V), g, -float("inf"))
        cmax = tl.max(g, 0)
        ci = tl.argmax(g, 0) + start
        token = tl.where(cmax > draw, ci, token)
        draw = tl.maximum(draw, cmax)
    tl.store(out_ptr + row, token.to(tl.int64))


_KERNELS: dict = {}


def _kernel():
    """The jitted kernel; Triton decides at decoration whether it is interpreted
    (``TRITON_INTERPRET=1`` on the CPU), so it is decorated on first use per mode."""
    import triton

    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    k = _KERNELS.get(interpret)
    if k is None:
        k = _KERNELS[interpret] = triton.jit(_sample_kernel)
    return k


def sample_fused(logits: torch.Tensor, params: SamplingParams, seed: torch.Tensor, block: int = 0) -> torch.Tensor:
    """Next tokens ``[B]`` (int64) of ``logits [B, V]``; ``seed`` (int64 ``[1]``, on
    the logits' device) is read by the kernel and then advanced by one."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    if B == 0:
        return out
    block = block or min(4096, 1 << max(V - 1, 1).bit_length())
    top_k = min(params.top_k, V) if params.do_sample else 0
    top_p = params.top_p if params.do_sample else 1.0
    _kernel()[(B,)](logits, out, seed, logits.stride(0), V, 1.0 / params.temperature if params.do_sample else 1.0,
                    top_k, float(top_p), SAMPLE=params.do_sample, TOP_K=bool(top_k), TOP_P=top_p < 1.0,
                    BLOCK=block, num_warps=8 if block >= 2048 else 4)
    if params.do_sample:
        seed.add_(1)
    return out
