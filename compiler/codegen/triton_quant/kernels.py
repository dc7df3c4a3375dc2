"""Triton kernels of ``quant_linear``: ``out = x @ dequantize(w)^T (+ bias)``.

- ``quant_gemv_kernel`` (a few rows, decode): one program per (block of
  output features, split of K). Weights are read once as integers and
  dequantized in registers; the rows of x are multiplied by broadcasting (no
  tensor-core tile of 16 rows for one token). int4: the packed byte's low
  and high nibbles meet x's even and odd input channels, so nothing is
  interleaved; per group, ``s * (sum(x * q) - z * sum(x))``. Splits of K
  write float32 partials that ``quant_splitk_epilogue`` sums.
- ``quant_gemm_kernel`` (prefill): tiles with ``tl.dot`` on the weight tile
  dequantized in the K loop (int4: two dots, even and odd channels).

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
def quant_gemv_kernel(X, Q, S, Z, BIAS, OUT, WS, M, N, K, sxm, sxk, sqn, sqk, ssn, ssg, szn, szg, som, son,
                      k_per_split, GROUP,
                      BITS: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, NG: tl.constexpr):
    # NOTE: weight rows are wrapped (% N) and, with EVEN_K (every split a whole number
    # of K blocks), K is not masked: the weight loads are unmasked and vectorise (a
    # per-element K mask made Triton load int8 weights one byte at a time).
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    w_n = offs_n % N
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    acc = tl.full([BLOCK_M, BLOCK_N], 0, tl.float32)
    if BITS == 8:
        offs_k = tl.arange(0, BLOCK_K)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kk = k0 + offs_k
            if EVEN_K:
                x = tl.load(X + offs_m[:, None] * sxm + kk[None, :] * sxk, mask=m_ok[:, None], other=0.0)
                q = tl.load(Q + w_n[:, None] * sqn + kk[None, :] * sqk)
            else:
                k_ok = kk < k_hi
                x = tl.load(X + offs_m[:, None] * sxm + kk[None, :] * sxk, mask=m_ok[:, None] & k_ok[None, :],
                            other=0.0)
                q = tl.load(Q + w_n[:, None] * sqn + kk[None, :] * sqk, mask=k_ok[None, :], other=0)
            x = x.to(tl.float32)
            q = q.to(tl.float32)
            acc += tl.reduce(x[:, None, :] * q[None, :, :], 2, _add)
        s = tl.load(S + w_n * ssn).to(tl.float32)
        acc = acc * s[None, :]
    else:
        HALF: tl.constexpr = BLOCK_K // 2
        offs_j = tl.arange(0, HALF)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            jj = k0 // 2 + offs_j                 # packed bytes of input channels k0 .. k0 + BLOCK_K
            if EVEN_K:
                xe = tl.load(X + offs_m[:, None] * sxm + (2 * jj)[None, :] * sxk, mask=m_ok[:, None], other=0.0)
                xo = tl.load(X + offs_m[:, None] * sxm + (2 * jj + 1)[None, :] * sxk, mask=m_ok[:, None], other=0.0)
                b = tl.load(Q + w_n[:, None] * sqn + jj[None, :] * sqk)
            else:
                k_ok = 2 * jj < k_hi
                xe = tl.load(X + offs_m[:, None] * sxm + (2 * jj)[None, :] * sxk,
                             mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                xo = tl.load(X + offs_m[:, None] * sxm + (2 * jj + 1)[None, :] * sxk,
                             mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                b = tl.load(Q + w_n[:, None] * sqn + jj[None, :] * sqk, mask=k_ok[None, :], other=0)
            xe = xe.to(tl.float32)
            xo = xo.to(tl.float32)
            b = b.to(tl.int32)
            lo = (b & 15).to(tl.float32)
            hi = (b >> 4).to(tl.float32)
            prod = xe[:, None, :] * lo[None, :, :] + xo[:, None, :] * hi[None, :, :]
            if NG == 1:   # the K block inside one group
                g = k0 // GROUP
                s = tl.load(S + w_n * ssn + g * ssg).to(tl.float32)
                z = tl.load(Z + w_n * szn + g * szg).to(tl.float32)
                part = tl.reduce(prod, 2, _add)
                sx = tl.reduce(xe + xo, 1, _add)
                acc += s[None, :] * (part - z[None, :] * sx[:, None])
            else:         # NG whole groups per K block: per-group sums, then scales and zero points
                gg = k0 // GROUP + tl.arange(0, NG)
                g_ok = gg < K // GROUP
                s = tl.load(S + w_n[:, None] * ssn + gg[None, :] * ssg, mask=g_ok[None, :], other=0.0)
                z = tl.load(Z + w_n[:, None] * szn + gg[None, :] * szg, mask=g_ok[None, :], other=0.0)
                part = tl.reduce(tl.reshape(prod, [BLOCK_M, BLOCK_N, NG, HALF // NG]), 3, _add)
                sx = tl.reduce(tl.reshape(xe + xo, [BLOCK_M, NG, HALF // NG]), 2, _add)
                acc += tl.reduce(s.to(tl.float32)[None, :, :] * (part - z.to(tl.float32)[None, :, :] * sx[:, None, :]),
                                 2, _add)
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
            if DOT_F32:
                acc = tl.dot(x.to(tl.float32), q.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(x, q.to(x.dtype), acc)   # int8 values are exact in fp16/bf16
        s = tl.load(S + offs_n * ssn, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * s[None, :]
    else:
        HALF: tl.constexpr = BLOCK_K // 2
        offs_j = tl.arange(0, HALF)
        for k0 in range(0, K, BLOCK_K):
            jj = k0 // 2 + offs_j
            k_ok = 2 * jj < K
            xe = tl.load(X + offs_m[:, None] * sxm + (2 * jj)[None, :] * sxk, mask=m_ok[:, None] & k_ok[None, :],
                         other=0.0)
            xo = tl.load(X + offs_m[:, None] * sxm + (2 * jj + 1)[None, :] * sxk,
                         mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(Q + offs_n[None, :] * sqn + jj[:, None] * sqk, mask=n_ok[None, :] & k_ok[:, None],
                        other=0).to(tl.int32)
            g = k0 // GROUP
            s = tl.load(S + offs_n * ssn + g * ssg, mask=n_ok, other=0.0).to(tl.float32)
            z = tl.load(Z + offs_n * szn + g * szg, mask=n_ok, other=0.0).to(tl.float32)
            lo = ((b & 15).to(tl.float32) - z[None, :]) * s[None, :]
            hi = ((b >> 4).to(tl.float32) - z[None, :]) * s[None, :]
            if DOT_F32:
                acc = tl.dot(xe.to(tl.float32), lo, acc, input_precision="ieee")
                acc = tl.dot(xo.to(tl.float32), hi, acc, input_precision="ieee")
            else:
                acc = tl.dot(xe, lo.to(xe.dtype), acc)
                acc = tl.dot(xo, hi.to(xo.dtype), acc)
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + offs_m[:, None] * som + offs_n[None, :] * son, acc.to(OUT.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])
