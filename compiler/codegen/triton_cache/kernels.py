"""The Triton kernel of ``index_copy_many_`` with two buffers (a layer's K and V cache).

NOTE: reloaded when ``TRITON_INTERPRET`` changes after import (tests); core
``triton.language`` builtins only.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def index_copy_pair_kernel(KB, VB, IDX, KS, VS, H, N_IDX, D,
                           kb_b, kb_h, kb_s, kb_d, vb_b, vb_h, vb_s, vb_d,
                           ks_b, ks_h, ks_s, ks_d, vs_b, vs_h, vs_s, vs_d, BLOCK_D: tl.constexpr):
    """Program (b, h, i): row i of the new keys and values of head h of sequence b goes to
    row IDX[i] of both caches ``[B, H, S, D]`` (any strides)."""
    pid = tl.program_id(0).to(tl.int64)
    i = pid % N_IDX
    bh = pid // N_IDX
    h = bh % H
    b = bh // H
    row = tl.load(IDX + i).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    ok = d < D
    k = tl.load(KS + b * ks_b + h * ks_h + i * ks_s + d * ks_d, mask=ok)
    v = tl.load(VS + b * vs_b + h * vs_h + i * vs_s + d * vs_d, mask=ok)
    tl.store(KB + b * kb_b + h * kb_h + row * kb_s + d * kb_d, k, mask=ok)
    tl.store(VB + b * vb_b + h * vb_h + row * vb_s + d * vb_d, v, mask=ok)
