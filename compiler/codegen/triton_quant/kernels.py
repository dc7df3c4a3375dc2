"""Triton kernels of ``quant_linear``: ``out = x @ dequantize(w)^T (+ bias)``.

- ``quant_gemv_kernel`` (a few rows, decode): one program per (block of
  output features, split of K). Weights are read once as integers and
  dequantized in registers; the rows of x are multiplied by broadcasting (no
  tensor-core tile of 16 rows for one token). int4: in the chunked layout
  (``ir/quant.py``) a byte's low and high nibbles meet two contiguous runs of
  x, both vector loads; one group per K block, ``q * s - z * s`` in
  registers. Integers become floats by their bits (``_int8_as_float``,
  ``_nibble``), not by conversion instructions. Products accumulate per
  thread and are reduced once after the K loop. Splits of K write float32
  partials that ``quant_splitk_epilogue`` sums.
- ``quant_gemm_kernel`` (prefill): tiles with ``tl.dot`` on the weight tile
  dequantized in the K loop (int4: two dots, low and high nibbles).

NOTE: reloaded when ``TRITON_INTERPRET`` changes after import (tests); core
``triton.language`` builtins and its own ``@triton.jit`` helpers only.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _int8_as_float(q):
    """int8 -> float32, exact, without a conversion instruction (I2F issues at a quarter of the FMA
    rate, below what a GEMV must convert to keep up with HBM): the bits of 1.5 * 2**23 plus q are the
    float 1.5 * 2**23 + q."""
    return (q.to(tl.int32) + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0


@triton.jit
def _nibble(v):
    """v in [0, 15] (int32) as float32, exact: the bits of 2**23 with v in the mantissa are
    the float 2**23 + v. (The zero point is not folded into the subtrahend: a fractional
    one, which the format allows, would be rounded to an integer next to 2**23.)"""
    return (v | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def quant_gemv_kernel(X, Q, S, Z, BIAS, OUT, WS, M, N, K, sxm, sxk, sqn, sqk, ssn, ssg, szn, szg, som, son,
                      k_per_split, GROUP,
                      BITS: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    # NOTE: weight rows are wrapped (% N) and, with EVEN_K (every split a whole number
    # of K blocks), K is not masked: the weight loads are unmasked and vectorise (a
    # per-element K mask made Triton load int8 weights one byte at a time). Products are
    # summed into a [BLOCK_M, BLOCK_N, K block] accumulator and reduced across threads once,
    # after the loop (a reduction per K block cost ~100 shuffles an iteration).
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    w_n = offs_n % N
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    if BITS == 8:
        offs_k = tl.arange(0, BLOCK_K)
        acc3 = tl.full([BLOCK_M, BLOCK_N, BLOCK_K], 0, tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kk = k0 + offs_k
            # x in the weight tile's shape (rows broadcast): no layout conversion of x in the loop
            xp = X + offs_m[:, None, None] * sxm + kk[None, None, :] * sxk + 0 * w_n[None, :, None]
            if EVEN_K:
                x = tl.load(xp, mask=m_ok[:, None, None], other=0.0)
                q = tl.load(Q + w_n[:, None] * sqn + kk[None, :] * sqk)
            else:
                k_ok = kk < k_hi
                x = tl.load(xp, mask=m_ok[:, None, None] & k_ok[None, None, :], other=0.0)
                q = tl.load(Q + w_n[:, None] * sqn + kk[None, :] * sqk, mask=k_ok[None, :], other=0)
            acc3 += x.to(tl.float32) * _int8_as_float(q)[None, :, :]
        s = tl.load(S + w_n * ssn).to(tl.float32)
        acc = tl.reduce(acc3, 2, _add) * s[None, :]
    else:
        # one quantization group (or a part of one) per K block; chunks of 32 input channels:
        # byte 16c + i holds channels 32c + i (low nibble) and 32c + 16 + i (high nibble)
        HALF: tl.constexpr = BLOCK_K // 2
        offs_j = tl.arange(0, HALF)
        k_lo_nib = (offs_j // 16) * 32 + offs_j % 16
        acc3 = tl.full([BLOCK_M, BLOCK_N, HALF], 0, tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            jj = k0 // 2 + offs_j
            kl = k0 + k_lo_nib
            # NOTE: K blocks divide the group and splits hold whole groups: never a K tail here
            xp = X + offs_m[:, None, None] * sxm + kl[None, None, :] * sxk + 0 * w_n[None, :, None]
            xl = tl.load(xp, mask=m_ok[:, None, None], other=0.0)
            xh = tl.load(xp + 16 * sxk, mask=m_ok[:, None, None], other=0.0)
            b = tl.load(Q + w_n[:, None] * sqn + jj[None, :] * sqk)
            g = k0 // GROUP
            s = tl.load(S + w_n * ssn + g * ssg).to(tl.float32)[:, None]
            zs = tl.load(Z + w_n * szn + g * szg).to(tl.float32)[:, None] * s
            b = b.to(tl.int32)
            wl = _nibble(b & 15) * s - zs          # (q - z) * s, one FMA
            wh = _nibble(b >> 4) * s - zs
            acc3 += xl.to(tl.float32) * wl[None, :, :] + xh.to(tl.float32) * wh[None, :, :]
        acc = tl.reduce(acc3, 2, _add)
    out_mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT:
        tl.store(WS + (pid_k * M + offs_m[:, None]) * N + offs_n[None, :], acc, mask=out_mask)
    else:
        if HAS_BIAS:
            acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(OUT + offs_m[:, None] * som + offs_n[None, :] * son, acc.to(OUT.dtype.element_ty), mask=out_mask)


@triton.jit
def quant_splitk_epilogue(WS, BIAS, OUT, M, N, som, son, SPLITS, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < M * N
    acc = tl.full([BLOCK], 0, tl.float32)
    for s in range(0, SPLITS):
        acc += tl.load(WS + s * M * N + offs, mask=ok, other=0.0)
    m = offs // N
    n = offs % N
    if HAS_BIAS:
        acc += tl.load(BIAS + n, mask=ok, other=0.0).to(tl.float32)
    tl.store(OUT + m * som + n * son, acc.to(OUT.dtype.element_ty), mask=ok)


@triton.jit
def quant_gemm_kernel(X, Q, S, Z, BIAS, OUT, M, N, K, sxm, sxk, sqn, sqk, ssn, ssg, szn, szg, som, son, GROUP,
                      BITS: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.full([BLOCK_M, BLOCK_N], 0, tl.float32)
    if BITS == 8:
        offs_k = tl.arange(0, BLOCK_K)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < K
            x = tl.load(X + offs_m[:, None] * sxm + kk[None, :] * sxk, mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0)
            q = tl.load(Q + offs_n[None, :] * sqn + kk[:, None] * sqk, mask=n_ok[None, :] & k_ok[:, None],
                        other=0)
            qf = _int8_as_float(q)
            if DOT_F32:
                acc = tl.dot(x.to(tl.float32), qf, acc, input_precision="ieee")
            else:
                acc = tl.dot(x, qf.to(x.dtype), acc)   # int8 values are exact in fp16/bf16
        s = tl.load(S + offs_n * ssn, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * s[None, :]
    else:
        HALF: tl.constexpr = BLOCK_K // 2
        offs_j = tl.arange(0, HALF)
        k_lo_nib = (offs_j // 16) * 32 + offs_j % 16    # the chunked int4 layout (see quant_gemv_kernel)
        for k0 in range(0, K, BLOCK_K):
            jj = k0 // 2 + offs_j
            kl = k0 + k_lo_nib
            k_ok = kl < K
            xl = tl.load(X + offs_m[:, None] * sxm + kl[None, :] * sxk, mask=m_ok[:, None] & k_ok[None, :],
                         other=0.0)
            xh = tl.load(X + offs_m[:, None] * sxm + (kl + 16)[None, :] * sxk,
                         mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(Q + offs_n[None, :] * sqn + jj[:, None] * sqk, mask=n_ok[None, :] & k_ok[:, None],
                        other=0).to(tl.int32)
            g = k0 // GROUP
            s = tl.load(S + offs_n * ssn + g * ssg, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            zs = tl.load(Z + offs_n * szn + g * szg, mask=n_ok, other=0.0).to(tl.float32)[None, :] * s
            lo = _nibble(b & 15) * s - zs
            hi = _nibble(b >> 4) * s - zs
            if DOT_F32:
                acc = tl.dot(xl.to(tl.float32), lo, acc, input_precision="ieee")
                acc = tl.dot(xh.to(tl.float32), hi, acc, input_precision="ieee")
            else:
                acc = tl.dot(xl, lo.to(xl.dtype), acc)
                acc = tl.dot(xh, hi.to(xh.dtype), acc)
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + offs_m[:, None] * som + offs_n[None, :] * son, acc.to(OUT.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])
