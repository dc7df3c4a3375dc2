"""Block skipping for a mask given as data (``MASK_SKIP``), under TRITON_INTERPRET=1.

The summary kernel's output is checked against a plain torch computation of the
same rules, and the attention output with skipping against the float64
reference on masks built the ways models build them: HF causal masks with
``finfo.min``, causal + left/right padding, sliding windows, bool masks,
per-head masks, rows with no visible key (eager's uniform average must survive),
packed GQA rows and split-KV decode.
"""
from __future__ import annotations

import math

import pytest
import torch

from braze.compiler.codegen.triton_attention.launch import VISIBLE_ABOVE, attention_dense, mask_summary
from braze.ir.attention import attention_reference
from tests.codegen.test_attention_kernels import cfg, check, qkv

F32 = torch.float32


def hf_mask(B, Sq, Sk, lengths=None, left=False, window=None, dtype=F32, causal=True):
    """An HF-style additive 4-d mask [B, 1, Sq, Sk]: 0 where visible, finfo(dtype).min elsewhere."""
    i = torch.arange(Sq)[:, None] + (Sk - Sq)
    j = torch.arange(Sk)[None, :]
    keep = (j <= i) if causal else torch.ones(Sq, Sk, dtype=torch.bool)
    if window is not None:
        keep = keep & (i - j < window)
    keep = keep.expand(B, Sq, Sk).clone()
    for b, n in enumerate(lengths or []):
        if left:
            keep[b, :, :Sk - n] = False
        else:
            keep[b, :, n:] = False
    m = torch.zeros(B, 1, Sq, Sk, dtype=dtype)
    return m.masked_fill(~keep[:, None], torch.finfo(dtype).min)


def reference_summary(mask, kind, shape, tb, bn):
    """The summary rules of ``mask_block_summary_kernel`` written with torch ops."""
    B, H, Sq, Sk = shape
    m = mask[(None,) * (4 - mask.dim())].expand(*shape)
    bs = B if m.stride(0) else 1
    hm = H if m.stride(1) else 1
    n_qb, n_kb = -(-Sq // tb), -(-Sk // bn)
    vis = m.bool() if kind == "bool" else m.double() > VISIBLE_ABOVE
    zero = m.bool() if kind == "bool" else m.double() == 0
    out = torch.zeros(bs, n_qb, 4, dtype=torch.int32)
    for b in range(bs):
        for qb in range(n_qb):
            r = slice(qb * tb, min((qb + 1) * tb, Sq))
            rows_ok = all(bool(vis[b, h, r].any(-1).all()) for h in range(hm))
            tiles = [slice(kb * bn, (kb + 1) * bn) for kb in range(n_kb)]
            seen = [kb for kb, c in enumerate(tiles) if vis[b, :hm, r, c].any()]
            zeros = [(kb + 1) * bn <= Sk and bool(zero[b, :hm, r, c].all()) for kb, c in enumerate(tiles)]
            z_lo = zeros.index(True) if any(zeros) else 0
            z_hi = z_lo
            while z_hi < n_kb and zeros[z_hi]:
                z_hi += 1
            out[b, qb] = torch.tensor([seen[0], seen[-1] + 1, z_lo, z_hi] if rows_ok else [0, n_kb, 0, 0])
    return out


def run_masked(B, Hq, Hkv, Sq, Sk, mask, kind, config, causal="none", window=None, dtype=F32, D=32):
    """The kernel with MASK_SKIP (the default) and without, both against the float64 reference."""
    q, k, v = qkv(B, Hq, Hkv, Sq, Sk, D, dtype)
    attrs = dict(scale=1 / math.sqrt(D), causal=causal, window=window, groups=Hq // Hkv, mask_kind=kind)
    out = attention_dense(q, k, v, mask, None, config=config, **attrs)
    ref = attention_reference(q.double(), k.double(), v.double(),
                              mask.double() if mask.is_floating_point() else mask, None, **attrs)
    check(out, ref, dtype)
    off = attention_dense(q, k, v, mask, None, config=dict(config, MASK_SKIP=False), **attrs)
    check(off, ref, dtype)
    return out, ref


@pytest.mark.parametrize("name,mask,kind,shape,tb,bn", [
    ("hf causal", hf_mask(2, 70, 70), "additive", (2, 4, 70, 70), 16, 16),
    ("causal + right padding", hf_mask(3, 45, 45, lengths=[45, 20, 1]), "additive", (3, 2, 45, 45), 16, 8),
    ("causal + left padding", hf_mask(2, 40, 40, lengths=[40, 9], left=True), "additive", (2, 2, 40, 40), 8, 16),
    ("sliding window", hf_mask(1, 64, 64, window=12), "additive", (1, 2, 64, 64), 16, 8),
    ("wide window: a zero run past block 0", hf_mask(1, 96, 96, window=40), "additive", (1, 1, 96, 96), 16, 8),
    ("long left padding", hf_mask(2, 64, 64, lengths=[64, 44], left=True), "additive", (2, 1, 64, 64), 16, 16),
    ("decode padding row", hf_mask(2, 1, 50, lengths=[50, 30]), "additive", (2, 8, 1, 50), 1, 16),
    ("bool per head", torch.rand(2, 3, 20, 33) > 0.7, "bool", (2, 3, 20, 33), 8, 8),
    ("bool per head, zero tiles in some heads", torch.rand(2, 3, 16, 32) > 0.1, "bool", (2, 3, 16, 32), 4, 4),
    ("bool broadcast batch", torch.tril(torch.ones(30, 30, dtype=torch.bool)), "bool", (2, 2, 30, 30), 16, 16),
])
def test_summary_matches_the_rules(name, mask, kind, shape, tb, bn):
    got = mask_summary(mask, kind, shape, tb, bn)
    assert torch.equal(got, reference_summary(mask, kind, shape, tb, bn)), name


def test_summary_of_a_causal_mask_skips_the_upper_triangle():
    # 64 x 64 causal, 16 x 16 blocks: row block i sees key blocks [0, i + 1) and adds nothing on [0, i).
    got = mask_summary(hf_mask(1, 64, 64), "additive", (1, 1, 64, 64), 16, 16)
    want = torch.tensor([[[0, i + 1, 0, i] for i in range(4)]], dtype=torch.int32)
    assert torch.equal(got, want)


def test_summary_of_a_left_padded_causal_mask_starts_after_the_padding():
    # 20 padding keys: row block [48, 64) sees keys [20, 64); block 1 (keys 16-31) holds
    # padding, so the zero run is block 2 only; block 0 is never visited.
    got = mask_summary(hf_mask(1, 64, 64, lengths=[44], left=True), "additive", (1, 1, 64, 64), 16, 16)
    assert got[0, 3].tolist() == [1, 4, 2, 3]


def test_summary_keeps_the_whole_range_for_a_row_without_visible_key():
    m = hf_mask(1, 32, 32)
    m[0, 0, 5] = torch.finfo(F32).min       # eager: a uniform average over all 32 keys
    got = mask_summary(m, "additive", (1, 1, 32, 32), 16, 16)
    assert got[0, 0].tolist() == [0, 2, 0, 0] and got[0, 1].tolist() == [0, 2, 0, 1]


@pytest.mark.parametrize("bm,bn", [(16, 16), (32, 16), (16, 32)])
def test_hf_causal_mask_as_data(bm, bn):
    run_masked(2, 4, 4, 70, 70, hf_mask(2, 70, 70), "additive", cfg(bm, bn))


@pytest.mark.parametrize("left", [False, True])
def test_causal_padding_masks_with_empty_rows(left):
    # Padding query rows of the left-padded batch see no key: eager averages all keys uniformly.
    mask = hf_mask(3, 45, 45, lengths=[45, 20, 1], left=left)
    out, ref = run_masked(3, 2, 2, 45, 45, mask, "additive", cfg(16, 8))
    if left:
        assert ref[2, :, 0].abs().sum() > 0


@pytest.mark.parametrize("window", [None, 40])
def test_zero_runs_after_masked_blocks(window):
    # Long left padding / a wide window: the unmasked middle starts past block 0.
    mask = hf_mask(2, 96, 96, lengths=[96, 60], left=True, window=window)
    run_masked(2, 2, 2, 96, 96, mask, "additive", cfg(16, 8))


def test_mask_and_causal_attribute_together_with_window():
    mask = hf_mask(2, 50, 50, lengths=[50, 33], window=9)
    run_masked(2, 2, 2, 50, 50, mask, "additive", cfg(16, 16), causal="bottom_right", window=9)


@pytest.mark.parametrize("pack,bm", [(True, 32), (True, 16), (False, 16)])
def test_packed_gqa_rows(pack, bm):
    # groups 4: BLOCK_M 32 -> 8 tokens per row block; 16 -> 4.
    run_masked(2, 8, 2, 27, 27, hf_mask(2, 27, 27, lengths=[27, 11]), "additive", cfg(bm, 16, pack=pack))


def test_packed_rows_not_whole_tokens_run_without_summary():
    # groups 3 do not divide BLOCK_M 16: no summary, same result.
    run_masked(1, 6, 2, 21, 21, hf_mask(1, 21, 21), "additive", cfg(16, 16, pack=True))
    with pytest.raises(ValueError, match="no mask summary"):
        mask_summary(hf_mask(1, 21, 21), "additive", (1, 6, 21, 21), 16, 16, groups=3)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_per_head_masks(kind):
    mask = torch.rand(2, 4, 24, 40) > 0.6
    mask[..., :16] = False                                   # whole blocks masked in every head
    mask[:, 1, :, 16:32] = True                              # a zero run in one head only
    if kind == "additive":
        mask = torch.zeros(mask.shape).masked_fill(~mask, -math.inf)
    run_masked(2, 4, 4, 24, 40, mask, kind, cfg(8, 8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_hf_masks(dtype):
    run_masked(1, 2, 2, 40, 40, hf_mask(1, 40, 40, lengths=[29], dtype=dtype), "additive", cfg(16, 16),
               dtype=dtype, D=64)


def test_decode_split_kv_with_a_padding_mask():
    mask = hf_mask(2, 1, 96, lengths=[96, 37])
    run_masked(2, 8, 2, 1, 96, mask, "additive", cfg(16, 16, pack=True, splits=4))
