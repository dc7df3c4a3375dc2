"""The attention op's reference agrees with SDPA and explicit masks."""
import math

import pytest
import torch
import torch.nn.functional as F

from braze.ir.attention import attention_reference, visible


def _qkv(b=2, hq=4, hkv=2, sq=7, sk=9, d=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(sq * 100 + sk)
    return (torch.randn(b, hq, sq, d, generator=g, dtype=dtype), torch.randn(b, hkv, sk, d, generator=g, dtype=dtype),
            torch.randn(b, hkv, sk, d, generator=g, dtype=dtype))


def _explicit(q, k, v, allowed, scale, groups, bias=None):
    k = k.repeat_interleave(groups, 1)
    v = v.repeat_interleave(groups, 1)
    s = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~allowed, -math.inf)
    return torch.nan_to_num(torch.softmax(s, -1)) @ v


def test_top_left_causal_matches_sdpa_is_causal():
    q, k, v = _qkv(sq=9, sk=9)
    out = attention_reference(q, k, v, scale=0.25, causal="top_left", groups=2)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25, enable_gqa=True)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("causal,window", [("bottom_right", None), ("bottom_right", 3), ("top_left", 4),
                                           ("none", None)])
def test_causal_alignment_and_window_against_explicit_mask(causal, window):
    q, k, v = _qkv(sq=5, sk=11)
    i = torch.arange(5)[:, None] + (11 - 5 if causal == "bottom_right" else 0)
    j = torch.arange(11)[None, :]
    allowed = torch.ones(5, 11, dtype=torch.bool)
    if causal != "none":
        allowed &= j <= i
    if window is not None:
        allowed &= i - j < window
    out = attention_reference(q, k, v, scale=0.3, causal=causal, window=window, groups=2)
    torch.testing.assert_close(out, _explicit(q, k, v, allowed, 0.3, 2))
    if window is None and causal == "none":
        assert visible(5, 11, causal, window) is None


def test_bool_and_additive_masks_and_empty_rows_give_zeros():
    q, k, v = _qkv(b=2, sq=4, sk=6)
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[1, ..., 3:] = False
    keep_rows = keep.expand(2, 1, 4, 6).clone()
    keep_rows[0, 0, 2] = False  # a query row that sees no key
    out = attention_reference(q, k, v, keep_rows, scale=0.2, groups=2, mask_kind="bool")
    ref = _explicit(q, k, v, keep_rows, 0.2, 2)
    torch.testing.assert_close(out, ref)
    assert torch.count_nonzero(out[0, :, 2]) == 0
    add = torch.where(keep, 0.0, -1e9).to(torch.float64)
    out2 = attention_reference(q, k, v, add, scale=0.2, groups=2, mask_kind="additive")
    torch.testing.assert_close(out2, F.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=0.2,
                                                                    enable_gqa=True))


def test_alibi_matches_bloom_formula():
    q, k, v = _qkv(hq=4, hkv=4, sq=6, sk=6)
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float64)
    # BLOOM adds slope[h] * j (key position) to the scores; softmax is shift-invariant per row
    bias = (slopes[:, None, None] * torch.arange(6, dtype=torch.float64)[None, None, :]).expand(4, 6, 6)
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    out = attention_reference(q, k, v, None, slopes, scale=0.25, causal="top_left")
    torch.testing.assert_close(out, _explicit(q, k, v, j <= i, 0.25, 1, bias))


def test_half_inputs_accumulate_in_float32():
    q, k, v = (t.to(torch.bfloat16) for t in _qkv(dtype=torch.float32))
    out = attention_reference(q, k, v, scale=0.25, groups=2)
    ref = attention_reference(q.double(), k.double(), v.double(), scale=0.25, groups=2)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_tuner_inputs_of_a_decode_step_mask_a_valid_prefix(kind):
    """The candidates of decode attention over a static cache are timed on masks like a
    generation's (a ragged valid prefix, about half the cache), not on random masks that
    make every key visible; prefill masks stay random."""
    from braze.autotune.measure import random_operands
    from braze.ir import Builder

    def node(sq, sk):
        b = Builder()
        dt = torch.bool if kind == "bool" else torch.float16
        q, k, v = b.input("q", (3, 4, sq, 16)), b.input("k", (3, 2, sk, 16)), b.input("v", (3, 2, sk, 16))
        m = b.input("m", (3, 1, sq, sk), dt)
        out = b.call("attention", q, k, v, m, None, scale=0.25, groups=2, mask_kind=kind)
        return [n for n in b.graph([out]).nodes if n.op == "attention"][0]

    mask = random_operands(node(1, 1024), {}, "cpu", seed=3)[3]
    keep = mask if kind == "bool" else mask == 0
    lengths = keep[:, 0, 0].sum(-1)
    assert torch.equal(keep[:, 0, 0], torch.arange(1024)[None, :] < lengths[:, None])     # a prefix per row
    assert ((lengths >= 3 * 1024 // 8) & (lengths <= 5 * 1024 // 8)).all() and len(set(lengths.tolist())) > 1
    if kind == "additive":
        assert (mask[~keep] == torch.finfo(torch.float16).min).all()
    prefill = random_operands(node(64, 1024), {}, "cpu", seed=3)[3]
    if kind == "bool":
        assert not torch.equal(prefill[:, 0, 0], torch.arange(1024)[None, :] < prefill[:, 0, 0].sum(-1)[:, None])
    else:
        assert not (prefill == torch.finfo(torch.float16).min).any()
