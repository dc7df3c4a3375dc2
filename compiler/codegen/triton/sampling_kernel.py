"""The sampling kernel (launched by ``compiler/codegen/triton/sampling.py``).

NOTE: reloaded when ``TRITON_INTERPRET`` changes after import (tests switch
the interpreter on per test). It uses core ``triton.language`` builtins and
its own ``@triton.jit`` helpers only: the ``@jit`` functions of
``triton.language.standard`` and ``triton.language.random`` (``tl.max``,
``tl.argmax``, ``tl.rand``) are decorated when Triton is imported and cannot
run under an interpreter switched on later. The random numbers come from a
counter-based integer hash of (seed, row, column): the same on the GPU and
under the interpreter.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _fmax(a, b):
    return tl.maximum(a, b)


@triton.jit
def _fmin(a, b):
    return tl.minimum(a, b)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _argmax_combine(va, ia, vb, ib):
    # the larger value; on a tie the lower index (torch.argmax returns the first maximum)
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return tl.where(take_b, vb, va), tl.where(take_b, ib, ia)


@triton.jit
def _key(x):
    """Ordered integer key of float32 x: integer order is float order."""
    b = x.to(tl.int32, bitcast=True)
    return (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.int64)


@triton.jit
def _uniform(seed_lo, seed_hi, counter):
    """U(0, 1) (never 0) from a murmur3-style finaliser of (seed, counter), uint32 arithmetic."""
    h = counter.to(tl.uint32) * 0x9E3779B1 + seed_lo
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    h = (h ^ seed_hi) * 0x27D4EB2F
    h ^= h >> 15
    h *= 0x165667B1
    h ^= h >> 16
    return ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)


@triton.jit
def sample_kernel(logits_ptr, out_ptr, seed_ptr, stride_row, V, inv_temp, top_k, top_p,
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
        cmax, ci = tl.reduce((x, idx), 0, _argmax_combine)
        best_i = tl.where(cmax > best, ci, best_i)
        best = tl.maximum(best, cmax)
        lo_val = tl.minimum(lo_val, tl.reduce(tl.where(idx < V, x, float("inf")), 0, _fmin))
    if not SAMPLE:
        tl.store(out_ptr + row, best_i.to(tl.int64))
        return
    # Ordered-integer keys: int32 bits of a float32, negatives with their low 31 bits flipped.
    hi_key = _key(best)
    lo_key = _key(lo_val)
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
                k = _key(x)
                count += tl.reduce(((k >= mid) & (idx < V)).to(tl.int32), 0, _add)
            lo = tl.where(count >= top_k, mid, lo)
            hi = tl.where(count >= top_k, hi, mid)
        thr = lo
    if TOP_P:
        total = 0.0
        for start in range(0, V, BLOCK):
            idx = start + offs
            x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
            k = _key(x)
            total += tl.reduce(tl.where((k >= thr) & (idx < V), tl.exp(x - best), 0.0), 0, _add)
        target = top_p * total
        lo = thr
        hi = hi_key + 1
        while hi - lo > 1:
            mid = lo + (hi - lo) // 2
            mass = 0.0
            for start in range(0, V, BLOCK):
                idx = start + offs
                x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
                k = _key(x)
                mass += tl.reduce(tl.where((k >= mid) & (idx < V), tl.exp(x - best), 0.0), 0, _add)
            lo = tl.where(mass >= target, mid, lo)
            hi = tl.where(mass >= target, hi, mid)
        thr = lo
    seed = tl.load(seed_ptr)
    seed_lo = (seed & 0xFFFFFFFF).to(tl.uint32)
    seed_hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    draw = -float("inf")
    token = best_i
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32) * inv_temp
        k = _key(x)
        u = _uniform(seed_lo, seed_hi, row * V + idx)
        g = x - tl.log(-tl.log(u))
        g = tl.where((k >= thr) & (idx < V), g, -float("inf"))
        cmax, ci = tl.reduce((g, idx), 0, _argmax_combine)
        token = tl.where(cmax > draw, ci, token)
        draw = tl.maximum(draw, cmax)
    tl.store(out_ptr + row, token.to(tl.int64))


@triton.jit
def argmax_partial_kernel(logits_ptr, val_ptr, idx_ptr, stride_row, V, CHUNK, BLOCK: tl.constexpr):
    """Greedy, first of two launches: program (row, c) writes the max and first argmax of
    columns [c * CHUNK, (c + 1) * CHUNK) of its row."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    base = logits_ptr + row * stride_row
    offs = tl.arange(0, BLOCK)
    best = -float("inf")
    best_i = c * CHUNK
    for start in range(c * CHUNK, tl.minimum(V, (c + 1) * CHUNK), BLOCK):
        idx = start + offs
        x = tl.load(base + idx, mask=idx < V, other=-float("inf")).to(tl.float32)
        cmax, ci = tl.reduce((x, idx), 0, _argmax_combine)
        best_i = tl.where(cmax > best, ci, best_i)
        best = tl.maximum(best, cmax)
    tl.store(val_ptr + row * n_chunks + c, best)
    tl.store(idx_ptr + row * n_chunks + c, best_i)


@triton.jit
def argmax_combine_kernel(val_ptr, idx_ptr, out_ptr, n_chunks, BLOCK: tl.constexpr):
    """Greedy, second launch: the row's max over its chunks' maxima; on a tie the lower
    index (chunks are in column order, so that is torch.argmax's first maximum)."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < n_chunks
    v = tl.load(val_ptr + row * n_chunks + offs, mask=ok, other=-float("inf"))
    i = tl.load(idx_ptr + row * n_chunks + offs, mask=ok, other=2147483647)
    best, best_i = tl.reduce((v, i), 0, _argmax_combine)
    tl.store(out_ptr + row, best_i.to(tl.int64))


@triton.jit
def record_kernel(token_ptr, last_ptr, done_ptr, out_ptr, column_ptr, position_ptr, B, out_stride, pos_stride,
                  eos0, eos1, eos2, eos3, pad, N_EOS: tl.constexpr, BLOCK_B: tl.constexpr):
    """A decode step's bookkeeping in one program over the rows: a finished row's token
    becomes ``pad``, rows that produced ``eos`` are marked done, the token is kept in
    ``last`` and written to column ``column`` of ``out``, then ``column`` and each
    row's position advance by one (the next step's inputs). ``N_EOS`` (0-4) of the
    ``eos*`` ids count."""
    b = tl.arange(0, BLOCK_B)
    ok = b < B
    t = tl.load(token_ptr + b, mask=ok, other=0)
    col = tl.load(column_ptr)
    if N_EOS > 0:
        d = tl.load(done_ptr + b, mask=ok, other=0) != 0
        t = tl.where(d, pad, t)
        hit = t == eos0
        if N_EOS > 1:
            hit = hit | (t == eos1)
        if N_EOS > 2:
            hit = hit | (t == eos2)
        if N_EOS > 3:
            hit = hit | (t == eos3)
        tl.store(done_ptr + b, d | hit, mask=ok)
    tl.store(last_ptr + b, t, mask=ok)
    tl.store(out_ptr + b * out_stride + col, t, mask=ok)
    p = tl.load(position_ptr + b * pos_stride, mask=ok, other=0)
    tl.store(position_ptr + b * pos_stride, p + 1, mask=ok)
    tl.store(column_ptr, col + 1)
