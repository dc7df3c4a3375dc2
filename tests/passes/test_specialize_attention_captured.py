"""The attention pass on hand-written attention captured through Dynamo.

Unlike the Builder graphs, these go through braze's real capture, lowering
and canonicalisation (ATen's decomposition of matmul, repeat_interleave,
buffers sliced to the sequence length, symbolic lengths), then the whole
compiled function is checked against eager (fp32, 1e-5).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import braze
from braze.compiler.backend import make_backend
from braze.config import Options

B, H, HKV, D = 2, 4, 2, 16


def compile_and_check(fn, calls):
    """Compile ``fn`` with braze, check each call against eager; the attention nodes of the last graph."""
    entries: list = []
    inner = make_backend(Options(strict=True))

    def backend(gm, example_inputs):
        entries.append(inner(gm, example_inputs))
        return entries[-1]

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend)
    with torch.no_grad():
        for args in calls:
            ref, out = fn(*args), compiled(*args)
            err = float((out - ref).abs().max() / ref.abs().max())
            assert err <= 1e-5, err
    g = entries[-1].program.graph
    return [n for n in g.compute_nodes if n.op == "attention"], g


def _qkv(S, hkv=H, Sk=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, S, D, generator=g), torch.randn(B, hkv, Sk or S, D, generator=g),
            torch.randn(B, hkv, Sk or S, D, generator=g))


class NanoGPT(torch.nn.Module):
    """nanoGPT's attention: a tril buffer sliced to T, ``== 0`` masked_fill, scale on the scores."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bias", torch.tril(torch.ones(32, 32)).view(1, 1, 32, 32))

    def forward(self, q, k, v):
        T = q.size(-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        return F.softmax(att, dim=-1) @ v


def test_nanogpt_buffer_mask_is_causal_static_and_dynamic():
    attn, _ = compile_and_check(NanoGPT().eval(), [_qkv(7), _qkv(11, seed=1)])
    assert len(attn) == 1
    assert (attn[0].attr("causal"), attn[0].attr("mask_kind"), attn[0].attr("scale")) == ("top_left", "none", 0.25)


def test_repeat_interleave_gqa_scaled_q_additive_triu_float_softmax():
    def fn(q, k, v):
        S = q.shape[-2]
        k = k.repeat_interleave(H // HKV, dim=1)
        v = v.repeat_interleave(H // HKV, dim=1)
        causal = torch.triu(torch.full((S, S), float("-inf")), diagonal=1)
        s = (q / math.sqrt(D)) @ k.transpose(-1, -2) + causal
        return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v

    attn, g = compile_and_check(fn, [_qkv(6, HKV), _qkv(9, HKV, seed=1)])
    a = attn[0]
    assert a.kw == dict(scale=0.25, causal="top_left", window=None, groups=2, mask_kind="none")
    assert not {"expand", "div", "triu", "full"} & {n.op for n in g.compute_nodes}


def test_explicit_head_indexing_is_grouped():
    def fn(q, k, v):
        idx = torch.arange(H) // (H // HKV)
        s = torch.matmul(q, k[:, idx].transpose(-1, -2)) * 0.125
        return torch.matmul(torch.softmax(s, -1), v[:, idx])

    attn, _ = compile_and_check(fn, [_qkv(5, HKV)])
    assert (attn[0].attr("groups"), attn[0].attr("scale")) == (2, 0.125)


def test_mqa_by_broadcasting_matmul():
    def fn(q, k, v):
        s = torch.matmul(q, k.transpose(-1, -2)) / 4.0
        return torch.matmul(torch.softmax(s, -1), v)

    attn, g = compile_and_check(fn, [_qkv(6, 1), _qkv(8, 1, seed=1)])
    assert (attn[0].attr("groups"), attn[0].attr("scale")) == (4, 0.25)
    assert attn[0].args[1].type.shape[1] == 1 and "expand" not in {n.op for n in g.compute_nodes}


def test_sdpa_is_causal_with_gqa_and_bool_padding_mask():
    def causal(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def padded(q, k, v, m):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m[:, None, None, :].bool())

    attn, _ = compile_and_check(causal, [_qkv(6, HKV), _qkv(10, HKV, seed=1)])
    assert attn[0].kw == dict(scale=0.25, causal="top_left", window=None, groups=2, mask_kind="none")
    m = torch.ones(B, 6)
    m[1, 4:] = 0
    attn, _ = compile_and_check(padded, [_qkv(6) + (m,)])
    assert (attn[0].attr("causal"), attn[0].attr("mask_kind")) == ("none", "bool")
    assert attn[0].args[3] is not None


def test_decoding_step_against_a_cache_is_bottom_right():
    """Queries are the last Sq of Sk positions: HF's mask from cache positions."""
    def fn(q, k, v):
        Sq, Sk = q.shape[-2], k.shape[-2]
        qpos = torch.arange(Sk - Sq, Sk)[:, None]
        kpos = torch.arange(Sk)[None, :]
        bias = torch.zeros(Sq, Sk).masked_fill(kpos > qpos, torch.finfo(torch.float32).min)
        return torch.softmax(q @ k.transpose(-1, -2) * 0.25 + bias, -1) @ v

    attn, _ = compile_and_check(fn, [_qkv(3, Sk=8), _qkv(4, Sk=11, seed=1)])
    assert (attn[0].attr("causal"), attn[0].attr("mask_kind")) == ("bottom_right", "none")


def test_softcapped_scores_are_attention_with_a_softcap():
    """Gemma-2's logit soft-capping, ``tanh(scale * q@k^T / cap) * cap`` then the mask:
    attention with ``softcap=cap`` (the cap is 1.5 so that it changes the result)."""
    def fn(q, k, v):
        S = q.shape[-2]
        s = torch.tanh(q @ k.transpose(-1, -2) * 0.25 / 1.5) * 1.5
        s = s + torch.full((S, S), float("-inf")).triu(1)
        return torch.softmax(s, -1) @ v

    attn, _ = compile_and_check(fn, [_qkv(5), _qkv(7, seed=2)])
    assert len(attn) == 1
    a = attn[0]
    assert a.attr("softcap") == 1.5 and abs(a.attr("scale") - 0.25) < 1e-12 and a.attr("causal") == "top_left"


def test_scores_with_something_else_inside_the_tanh_are_not_attention():
    """A term inside the tanh (here a bias) is no soft cap of q@k^T: declined, still correct,
    and braze.explain names the declined rule (one Decline mechanism, passes/context.py)."""
    def fn(q, k, v):
        s = torch.tanh((q @ k.transpose(-1, -2) + 1.0 * torch.arange(q.shape[-2])) * 0.25 / 30.0) * 30.0
        return torch.softmax(s, -1) @ v

    attn, _ = compile_and_check(fn, [_qkv(5)])
    assert attn == []
    report = braze.explain(fn, *_qkv(5), options={"strict": True})
    notes = [n for g in report.graphs for n in g.notes]
    assert any(n.startswith("specialize_attention: matmul(softmax") and "declined:" in n for n in notes), notes
    assert "declined:" in str(report)


@pytest.mark.parametrize("window", [3, 5])
def test_sliding_window_written_with_abs_distance_keeps_a_mask(window):
    """|i - j| < w is two-sided (no causal): a bool window without the causal bound is still proven."""
    def fn(q, k, v):
        S = q.shape[-2]
        i = torch.arange(S)[:, None]
        j = torch.arange(S)[None, :]
        keep = (i - j < window) & (j <= i)
        s = (q @ k.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
        return torch.softmax(s * 0.25, -1) @ v

    attn, _ = compile_and_check(fn, [_qkv(9)])
    assert (attn[0].attr("causal"), attn[0].attr("window"), attn[0].attr("mask_kind")) == ("top_left", window, "none")


class _WhereCausal(torch.nn.Module):
    """HF-eager attention whose additive mask is built with where(j > i, min, 0)."""

    def forward(self, q, k, v):
        s = q.shape[-2]
        pos = torch.arange(s, device=q.device)
        mask = torch.where(pos[None, :] > pos[:, None], torch.finfo(q.dtype).min, 0.0).to(q.dtype)[None, None]
        k = k[:, :, None].expand(k.shape[0], k.shape[1], 2, *k.shape[2:]).reshape(q.shape[0], -1, *k.shape[2:])
        v = v[:, :, None].expand(v.shape[0], v.shape[1], 2, *v.shape[2:]).reshape(q.shape[0], -1, *v.shape[2:])
        w = torch.softmax(q @ k.transpose(2, 3) * 0.25 + mask, dim=-1, dtype=torch.float32).to(q.dtype)
        return w @ v


# 300: the mask is too large to be folded into a constant; bf16: the mask is cast before its [None, None] view
@pytest.mark.parametrize("seq,dtype", [(12, torch.float32), (300, torch.float32), (300, torch.bfloat16)])
def test_where_built_causal_mask_becomes_causal_attribute(seq, dtype):
    import braze

    m = _WhereCausal()
    q, k, v = (torch.randn(1, h, seq, 8).to(dtype) for h in (4, 2, 2))
    report = braze.explain(m, q, k, v, options={"strict": True})
    lines = [ln for ln in report.graphs[0].final_ir.splitlines() if " attention(" in ln]
    assert len(lines) == 1 and "causal='top_left'" in lines[0] and "mask_kind='none'" in lines[0]
    with torch.no_grad():
        out = braze.jit(m, strict=True)(q, k, v)
        ref = m(q.float(), k.float(), v.float()).double()  # finfo(float64).min would overflow the cast
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    assert err <= (1e-5 if dtype == torch.float32 else 2e-2), err
