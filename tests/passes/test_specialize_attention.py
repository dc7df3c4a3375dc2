"""Structural tests of the attention pass on graphs built with ``braze.ir.Builder``.

Each graph is one way of writing attention (or a near miss); the test checks
exactly which ``attention`` op comes out (or that nothing is rewritten, with
the reason), and that the rewritten graph computes what the original did on
fresh random inputs (fp32, 1e-5).
"""
from __future__ import annotations

import math

import pytest
import torch

from braze.ir import Builder, interpret, verify
from braze.passes.attention import find_attention, specialize_attention

F32 = torch.float32


def _ops(g):
    return [n.op for n in g.compute_nodes]


def _attention(g):
    nodes = [n for n in g.compute_nodes if n.op == "attention"]
    assert len(nodes) == 1, _ops(g)
    return nodes[0]


def _declined(g, reason: str):
    plans, events = find_attention(g)
    assert not plans, [e.detail for e in events if e.fired]
    assert any(reason in str(e.detail) for e in events), [e.detail for e in events]
    assert "attention" not in _ops(specialize_attention(g))


def _inputs(g, sizes=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in g.inputs:
        shape = [d if isinstance(d, int) else sizes[str(d)] for d in n.type.shape]
        if n.type.dtype == torch.bool:  # a padding-like mask: key 0 always visible
            x = torch.rand(shape, generator=gen) > 0.4
            x[..., 0] = True
        elif n.type.dtype.is_floating_point:
            x = torch.randn(shape, generator=gen).to(n.type.dtype)
        else:
            x = torch.randint(0, 2, shape, generator=gen)
            x[..., 0] = 1
        out.append(x)
    return out


def _same(g, g2, sizes=None, tol=1e-5, rows=slice(None)):
    """Same outputs; ``rows``: the query rows that see at least one key (rows
    that see none are zeros by the attention op's contract)."""
    verify(g2, types=True)
    for seed in (0, 1):
        ins = _inputs(g, sizes, seed)
        ref, out = interpret(g, *ins)[0], interpret(g2, *ins)[0]
        assert out.dtype == ref.dtype and out.shape == ref.shape
        ref, out = ref[..., rows, :], out[..., rows, :]
        err = float((out.double() - ref.double()).abs().max() / ref.double().abs().max())
        assert err <= tol, err


def _qkv(b, B=2, H=4, Sq=5, Sk=5, D=8, Hkv=None, dtype=F32):
    q = b.input("q", (B, H, Sq, D), dtype)
    k = b.input("k", (B, Hkv or H, Sk, D), dtype)
    v = b.input("v", (B, Hkv or H, Sk, D), dtype)
    return q, k, v


def _scores(b, q, k):
    """q @ k^T the way the ATen decomposition of matmul writes it."""
    B, H, Sq, D = q.type.shape
    Sk = k.type.shape[2]
    q3 = b.call("reshape", q, (B * H, Sq, D))
    kt = b.call("permute", k, (0, 1, 3, 2))
    k3 = b.call("reshape", kt, (B * H, D, Sk))
    return b.call("reshape", b.call("bmm", q3, k3), (B, H, Sq, Sk))


def _finish(b, s, v, dim=-1):
    """softmax(s) @ v, with bmm."""
    B, H, Sq, Sk = s.type.shape
    p = b.call("_softmax", s, dim, False)
    p3 = b.call("reshape", p, (B * H, Sq, Sk))
    v3 = b.call("reshape", v, (B * H, Sk, v.type.shape[-1]))
    return b.call("reshape", b.call("bmm", p3, v3), (B, H, Sq, v.type.shape[-1]))


def _arange(b, n, start=0):
    return b.call("arange", start, start + n, overload="start") if start else b.call("arange", n)


def _pos(b, n, start=0, axis=-1):
    """arange positions viewed as [1, 1, n, 1] (axis -2) or [1, 1, 1, n] (axis -1)."""
    shape = (1, 1, n, 1) if axis == -2 else (1, 1, 1, n)
    return b.call("reshape", _arange(b, n, start), shape)


def _where_mask(b, cond, s):
    zero = b.constant(torch.tensor(0.0), "zero")
    low = b.constant(torch.tensor(torch.finfo(F32).min), "low")
    return b.call("add", s, b.call("where", cond, zero, low, overload="self"), overload="Tensor")


# --- the plain chain and its scale --------------------------------------------

def test_plain_chain_becomes_one_attention_and_matches():
    b = Builder()
    q, k, v = _qkv(b)
    s = b.call("mul", _scores(b, q, k), 0.25, overload="Tensor")
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert a.kw == dict(scale=0.25, causal="none", window=None, groups=1, mask_kind="none")
    assert a.args[:3] == (g.inputs[0].out(), g.inputs[1].out(), g.inputs[2].out())
    assert _ops(g2) == ["attention"]
    _same(g, g2)


@pytest.mark.parametrize("where", ["div_scores", "div_q", "mul_k", "both"])
def test_scale_on_scores_q_or_k_folds_into_the_attribute(where):
    b = Builder()
    q, k, v = _qkv(b)
    if where in ("div_q", "both"):
        q = b.call("div", q, math.sqrt(8), overload="Tensor")
    if where in ("mul_k", "both"):
        k = b.call("mul", k, 0.5, overload="Tensor")
    s = _scores(b, q, k)
    if where == "div_scores":
        s = b.call("div", s, 4.0, overload="Tensor")
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    want = {"div_scores": 0.25, "div_q": 1 / math.sqrt(8), "mul_k": 0.5, "both": 0.5 / math.sqrt(8)}[where]
    assert _attention(g2).attr("scale") == pytest.approx(want)
    assert _ops(g2) == ["attention"]  # the scaling ops are gone
    _same(g, g2)


def test_wrong_scale_axis_is_not_rewritten():
    b = Builder()
    q, k, v = _qkv(b)
    per_key = b.constant(torch.rand(5) + 0.5, "per_key")  # scales each key, not a scalar
    s = b.call("mul", _scores(b, q, k), per_key, overload="Tensor")
    _declined(b.graph([_finish(b, s, v)]), "not scale * q@k^T + mask")


def test_softmax_over_the_wrong_dim_is_not_rewritten():
    b = Builder()
    q, k, v = _qkv(b)
    _declined(b.graph([_finish(b, _scores(b, q, k), v, dim=-2)]), "softmax over dim -2")


def test_k_not_transposed_is_not_rewritten():
    b = Builder()
    q, k, v = _qkv(b, Sk=8, D=8)  # square, so q @ k type-checks
    q3 = b.call("reshape", q, (8, 5, 8))
    k3 = b.call("reshape", k, (8, 8, 8))
    s = b.call("reshape", b.call("bmm", q3, k3), (2, 4, 5, 8))
    _declined(b.graph([_finish(b, s, v)]), "k is not transposed")


def test_probabilities_used_elsewhere_are_not_rewritten():
    b = Builder()
    q, k, v = _qkv(b)
    s = _scores(b, q, k)
    p = b.call("_softmax", s, -1, False)
    out = b.call("matmul", p, v)
    _declined(b.graph([out, p]), "other users")


def test_negative_scale_is_not_rewritten():
    b = Builder()
    q, k, v = _qkv(b)
    s = b.call("mul", _scores(b, q, k), -0.25, overload="Tensor")
    _declined(b.graph([_finish(b, s, v)]), "not scale * q@k^T")


def test_4d_matmul_and_low_precision_softmax_upcast():
    """softmax(s.float()).to(bf16) @ v with 4-D matmul ops."""
    b = Builder()
    q, k, v = _qkv(b, dtype=torch.bfloat16)
    s = b.call("matmul", q, b.call("permute", k, (0, 1, 3, 2)))
    s = b.call("mul", s, 0.25, overload="Tensor")
    p = b.call("_softmax", b.call("_to_copy", s, dtype=F32), -1, False)
    out = b.call("matmul", b.call("_to_copy", p, dtype=torch.bfloat16), v)
    g = b.graph([out])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert a.type.dtype == torch.bfloat16 and a.attr("scale") == 0.25
    _same(g, g2, tol=2e-2)


# --- masks -----------------------------------------------------------------------

def test_causal_mask_from_arange_comparison_becomes_an_attribute_symbolic_sizes():
    b = Builder()
    q, k, v = _qkv(b, Sq="s0", Sk="s0")
    S = q.type.shape[2]
    cond = b.call("le", _pos(b, S), _pos(b, S, axis=-2), overload="Tensor")   # j <= i
    s = _where_mask(b, cond, b.call("mul", _scores_sym(b, q, k), 0.25, overload="Tensor"))
    g = b.graph([_finish_sym(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind"), a.args[3]) == ("top_left", "none", None)
    _same(g, g2, {"s0": 7})


def _scores_sym(b, q, k):
    B, H, Sq, D = q.type.shape
    return b.call("matmul", q, b.call("permute", k, (0, 1, 3, 2)))


def _finish_sym(b, s, v):
    return b.call("matmul", b.call("_softmax", s, -1, False), v)


@pytest.mark.parametrize("offset,expect", [(0, ("top_left", "none")), (1, ("none", "bool")),
                                           (-1, ("none", "bool"))])
def test_only_the_exact_causal_band_is_causal(offset, expect):
    """j <= i + offset: only offset 0 (Sq == Sk) is causal; others stay a bool mask operand."""
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    qi = b.call("add", _pos(b, 6, axis=-2), offset, overload="Tensor")
    cond = b.call("le", _pos(b, 6), qi, overload="Tensor")
    s = _where_mask(b, cond, _scores(b, q, k))
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == expect
    if expect[1] == "bool":
        assert a.args[3].type.shape[-2:] == (6, 6)
    _same(g, g2, rows=slice(1, None) if offset < 0 else slice(None))   # row 0 sees no key at offset -1


@pytest.mark.parametrize("view", [(1, 1, 6, 6), (1, 6, 6)])
def test_2d_mask_given_unit_dims_is_still_proven_causal(view):
    """HF-eager style: where(j > i, finfo.min, 0) on [S, S], cast, viewed [1, 1, S, S], added."""
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    pos = _arange(b, 6)
    cond = b.call("gt", b.call("reshape", pos, (1, 6)), b.call("reshape", pos, (6, 1)), overload="Tensor")
    low = b.constant(torch.tensor(torch.finfo(torch.bfloat16).min), "low")
    zero = b.constant(torch.tensor(0.0), "zero")
    m = b.call("_to_copy", b.call("where", cond, low, zero, overload="self"), dtype=torch.bfloat16)
    m = b.call("_to_copy", b.call("reshape", m, view), dtype=F32)
    g = b.graph([_finish(b, b.call("add", _scores(b, q, k), m, overload="Tensor"), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind"), a.args[3]) == ("top_left", "none", None)
    _same(g, g2)


def test_mask_reshaped_across_its_last_dims_stays_an_operand():
    """A [36] mask viewed as [6, 6]: the reshape moves elements between (i, j): kept as a tensor."""
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    flat = b.call("full", (36,), float("-inf"), dtype=F32)
    m = b.call("reshape", b.call("triu", b.call("reshape", flat, (6, 6)), 1), (36,))
    m = b.call("reshape", m, (6, 6))
    g = b.graph([_finish(b, b.call("add", _scores(b, q, k), m, overload="Tensor"), v)])
    a = _attention(specialize_attention(g))
    assert a.attr("causal") == "none" and a.attr("mask_kind") != "none"


def test_bottom_right_causal_with_past_keys_symbolic():
    """Queries at positions past..past+Sq-1 over Sk = past + Sq keys: HF's cache_position mask."""
    b = Builder()
    q, k, v = _qkv(b, Sq="s0", Sk="s1")
    Sq, Sk = q.type.shape[2], k.type.shape[2]
    from braze.ir.types import sym

    past = sym(f"{Sk} - {Sq}")
    qpos = b.call("reshape", b.call("arange", past, Sk, overload="start"), (1, 1, Sq, 1))
    cond = b.call("le", _pos(b, Sk), qpos, overload="Tensor")
    s = _where_mask(b, cond, _scores_sym(b, q, k))
    g = b.graph([_finish_sym(b, s, v)], sym_inputs=())
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("bottom_right", "none")
    _same(g, g2, {"s0": 3, "s1": 8})


def test_sliding_window_and_causal_from_two_comparisons():
    b = Builder()
    q, k, v = _qkv(b, Sq=9, Sk=9)
    qi, kj = _pos(b, 9, axis=-2), _pos(b, 9)
    causal = b.call("le", kj, qi, overload="Tensor")
    window = b.call("gt", kj, b.call("sub", qi, 3, overload="Tensor"), overload="Tensor")   # i - j < 3
    both = b.call("bitwise_and", causal, window, overload="Tensor")
    g = b.graph([_finish(b, _where_mask(b, both, _scores(b, q, k)), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("window"), a.attr("mask_kind")) == ("top_left", 3, "none")
    _same(g, g2)


def test_additive_triu_of_minus_inf_is_causal():
    b = Builder()
    q, k, v = _qkv(b, Sq="s0", Sk="s0")
    S = q.type.shape[2]
    full = b.call("full", (S, S), float("-inf"), dtype=F32)
    s = b.call("add", _scores_sym(b, q, k), b.call("triu", full, 1), overload="Tensor")
    g = b.graph([_finish_sym(b, s, v)])
    g2 = specialize_attention(g)
    assert (_attention(g2).attr("causal"), _attention(g2).attr("mask_kind")) == ("top_left", "none")
    _same(g, g2, {"s0": 6})


def test_triu_band_off_by_one_is_kept_as_a_mask():
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    full = b.call("full", (6, 6), float("-inf"), dtype=F32)
    s = b.call("add", _scores(b, q, k), b.call("triu", full, 2), overload="Tensor")   # j <= i + 1
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("none", "bool")
    _same(g, g2)


@pytest.mark.parametrize("trap", ["negative_index", "bf16_positions"])
def test_positions_that_are_not_provably_arange_keep_the_mask(trap):
    """x[arange - 1] wraps to the last element; bf16 positions round: neither is proven causal."""
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    kpos = _pos(b, 6)
    if trap == "negative_index":
        # positions 1..6 read at [-1, 0, ..., 4]: [6, 1, 2, 3, 4, 5], not i (as i - 1 + 1 would claim)
        shifted = b.call("sub", b.call("arange", 6), 1, overload="Tensor")
        ones_based = b.call("add", b.call("arange", 6), 1, overload="Tensor")
        qpos = b.call("reshape", b.call("index", ones_based, (shifted,), overload="Tensor"), (1, 1, 6, 1))
    else:
        qpos = b.call("_to_copy", _pos(b, 6, axis=-2), dtype=torch.bfloat16)
        kpos = b.call("_to_copy", kpos, dtype=torch.bfloat16)
    cond = b.call("le", kpos, qpos, overload="Tensor")
    g = b.graph([_finish(b, _where_mask(b, cond, _scores(b, q, k)), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("none", "bool")
    _same(g, g2)


def test_folded_constant_masks_are_fitted_exactly():
    """Static shapes fold the mask into a constant; the pass reads it in full."""
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    for mask, kind, want in [(~causal, "masked_fill", "top_left"),
                             (torch.zeros(6, 6).masked_fill(~causal, float("-inf")), "add", "top_left")]:
        b = Builder()
        q, k, v = _qkv(b, Sq=6, Sk=6)
        m = b.constant(mask, "mask")
        s = _scores(b, q, k)
        if kind == "masked_fill":
            s = b.call("masked_fill", s, m, float("-inf"), overload="Scalar")
        else:
            s = b.call("add", s, m, overload="Tensor")
        g = b.graph([_finish(b, s, v)])
        g2 = specialize_attention(g)
        assert (_attention(g2).attr("causal"), _attention(g2).attr("mask_kind")) == (want, "none")
        _same(g, g2)


def test_a_random_constant_mask_stays_an_operand():
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    pattern = torch.rand(6, 6, generator=torch.Generator().manual_seed(3)) > 0.5
    pattern[:, 0] = True
    m = b.constant(pattern, "mask")
    s = b.call("masked_fill", _scores(b, q, k), b.call("bitwise_not", m), float("-inf"), overload="Scalar")
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("none", "bool")
    _same(g, g2)


def test_causal_and_padding_split_into_attribute_and_bool_operand():
    """HF's eager mask: where(causal & attention_mask[b, j], 0, min) -> causal + [B, 1, 1, Sk] bool."""
    b = Builder()
    q, k, v = _qkv(b, B=2, Sq=6, Sk=6)
    am = b.input("attention_mask", (2, 6), torch.int64)
    qi, kj = _pos(b, 6, axis=-2), _pos(b, 6)
    bidx = b.call("reshape", b.call("arange", 2), (2, 1, 1, 1))
    pad = b.call("index", b.call("_to_copy", am, dtype=torch.bool), (bidx, kj), overload="Tensor")
    cond = b.call("bitwise_and", b.call("le", kj, qi, overload="Tensor"), pad, overload="Tensor")
    g = b.graph([_finish(b, _where_mask(b, cond, _scores(b, q, k)), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("top_left", "bool")
    mask = a.args[3]
    assert mask.op == "reshape" and mask.type.shape == (2, 1, 1, 6)    # the lookup is a view of the mask
    assert mask.node.args[0].node.op == "_to_copy"
    _same(g, g2)


def test_masked_fill_with_an_input_padding_mask_and_bool_causal():
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    m = b.input("m", (2, 6), F32)
    tri = b.call("tril", b.call("ones", (6, 6), dtype=torch.bool))
    s = b.call("mul", _scores(b, q, k), 0.25, overload="Tensor")
    s = b.call("masked_fill", s, b.call("bitwise_not", tri), float("-inf"), overload="Scalar")
    pad = b.call("eq", b.call("reshape", m, (2, 1, 1, 6)), 0, overload="Scalar")
    s = b.call("masked_fill", s, pad, torch.finfo(F32).min, overload="Scalar")
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind"), a.attr("scale")) == ("top_left", "bool", 0.25)
    _same(g, g2)


def test_additive_float_mask_input_stays_additive():
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    bias = b.input("bias", (1, 4, 6, 6), F32)
    g = b.graph([_finish(b, b.call("add", _scores(b, q, k), bias, overload="Tensor"), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("none", "additive")
    assert a.args[3] == g.inputs[-1].out()
    _same(g, g2)


def test_or_of_masks_is_kept_whole():
    b = Builder()
    q, k, v = _qkv(b, Sq=6, Sk=6)
    extra = b.input("extra", (2, 1, 6, 6), torch.bool)
    causal = b.call("le", _pos(b, 6), _pos(b, 6, axis=-2), overload="Tensor")
    cond = b.call("bitwise_or", causal, extra, overload="Tensor")
    g = b.graph([_finish(b, _where_mask(b, cond, _scores(b, q, k)), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind")) == ("none", "bool")
    _same(g, g2)


# --- GQA and ALiBi ---------------------------------------------------------------

@pytest.mark.parametrize("how", ["repeat_kv", "index_select", "mqa_expand"])
def test_repeated_kv_heads_become_groups(how):
    b = Builder()
    hkv = 1 if how == "mqa_expand" else 2
    q, k, v = _qkv(b, H=4, Hkv=hkv)
    g_ = 4 // hkv

    def rep(x):
        if how == "repeat_kv":
            x5 = b.call("expand", b.call("reshape", x, (2, hkv, 1, 5, 8)), (2, hkv, g_, 5, 8))
            return b.call("reshape", x5, (2, 4, 5, 8))
        if how == "index_select":
            return b.call("index_select", x, 1, b.constant(torch.arange(4) // g_, "heads"))
        return b.call("expand", x, (2, 4, 5, 8))

    s = b.call("mul", _scores(b, q, rep(k)), 0.25, overload="Tensor")
    g = b.graph([_finish(b, s, rep(v))])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert a.attr("groups") == g_
    assert a.args[1] == g.inputs[1].out() and a.args[2] == g.inputs[2].out()   # never materialised
    assert not {"expand", "index_select"} & set(_ops(g2))
    _same(g, g2)


def test_alibi_from_arange_becomes_slopes():
    """BLOOM without a padding mask: baddbmm(repeat(slopes[h] * arange(Sk)), q, k^T, beta, alpha)."""
    b = Builder()
    B, H, S, D = 2, 4, 6, 8
    q, k, v = _qkv(b, B=B, H=H, Sq=S, Sk=S, D=D)
    slopes = b.constant(2.0 ** (-torch.arange(1, H + 1, dtype=F32)), "slopes")
    alibi = b.call("mul", b.call("reshape", slopes, (H, 1, 1)), b.call("arange", S), overload="Tensor")
    alibi = b.call("repeat", alibi, (B, 1, 1))
    q3 = b.call("reshape", q, (B * H, S, D))
    k3 = b.call("permute", b.call("reshape", k, (B * H, S, D)), (0, 2, 1))
    s = b.call("baddbmm", alibi, q3, k3, beta=1.0, alpha=0.25)
    s = b.call("reshape", s, (B, H, S, S))
    cond = b.call("le", _pos(b, S), _pos(b, S, axis=-2), overload="Tensor")
    g = b.graph([_finish(b, _where_mask(b, cond, s), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("causal"), a.attr("mask_kind"), a.attr("scale")) == ("top_left", "none", 0.25)
    assert a.args[4] is not None and a.args[4].type.shape == (H,)
    _same(g, g2)


def test_alibi_from_padding_positions_stays_additive():
    """Positions cumsum(mask) - 1 are j only for masks without holes: not provable, kept as a term."""
    b = Builder()
    B, H, S, D = 2, 4, 6, 8
    q, k, v = _qkv(b, B=B, H=H, Sq=S, Sk=S, D=D)
    am = b.input("am", (B, S), torch.int64)
    pos = b.call("mul", b.call("sub", b.call("cumsum", am, -1), 1, overload="Tensor"), am, overload="Tensor")
    slopes = b.constant(2.0 ** (-torch.arange(1, H + 1, dtype=F32)), "slopes")
    alibi = b.call("mul", b.call("reshape", slopes, (H, 1)), b.call("reshape", pos, (B, 1, S)), overload="Tensor")
    alibi = b.call("reshape", alibi, (B * H, 1, S))
    q3 = b.call("reshape", q, (B * H, S, D))
    k3 = b.call("permute", b.call("reshape", k, (B * H, S, D)), (0, 2, 1))
    s = b.call("reshape", b.call("baddbmm", alibi, q3, k3, beta=1.0, alpha=0.25), (B, H, S, S))
    g = b.graph([_finish(b, s, v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert (a.attr("mask_kind"), a.args[4]) == ("additive", None)
    assert a.args[3].type.shape == (B, H, 1, S)    # split back from the merged [B*H, 1, S]
    _same(g, g2)


# --- SDPA ---------------------------------------------------------------------------

def _sdpa(b, q, k, v, **kw):
    kw.setdefault("attn_mask", None)
    kw.setdefault("is_causal", False)
    kw.setdefault("scale", None)
    kw.setdefault("enable_gqa", False)
    return b.call("sdpa", q, k, v, **kw)


def test_sdpa_default_scale_is_inverse_sqrt_head_dim_and_is_causal_is_top_left():
    b = Builder()
    q, k, v = _qkv(b, Sq=3, Sk=7, D=16, Hkv=2)
    g = b.graph([_sdpa(b, q, k, v, is_causal=True, enable_gqa=True)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert a.kw == dict(scale=0.25, causal="top_left", window=None, groups=2, mask_kind="none")
    _same(g, g2)


def test_sdpa_bool_and_float_masks():
    for dtype, kind in [(torch.bool, "bool"), (F32, "additive")]:
        b = Builder()
        q, k, v = _qkv(b, Sq=4, Sk=6)
        m = b.input("m", (2, 1, 4, 6), dtype)
        g = b.graph([_sdpa(b, q, k, v, attn_mask=m, scale=0.3)])
        g2 = specialize_attention(g)
        a = _attention(g2)
        assert (a.attr("mask_kind"), a.attr("scale"), a.args[3]) == (kind, 0.3, g.inputs[-1].out())
        _same(g, g2)


def test_single_head_2d_mm_chain():
    b = Builder()
    q, k, v = (b.input(n, (5, 8)) for n in "qkv")
    s = b.call("mul", b.call("mm", q, b.call("permute", k, (1, 0))), 0.5, overload="Tensor")
    g = b.graph([b.call("mm", b.call("_softmax", s, -1, False), v)])
    g2 = specialize_attention(g)
    a = _attention(g2)
    assert a.type.shape == (1, 1, 5, 8) and a.attr("scale") == 0.5
    _same(g, g2)


def test_nothing_to_do_leaves_the_graph_alone():
    b = Builder()
    x = b.input("x", (4, 8))
    w = b.constant(torch.randn(8, 8), "w")
    g = b.graph([b.call("_softmax", b.call("mm", x, w), -1, False)])
    assert specialize_attention(g) is g
