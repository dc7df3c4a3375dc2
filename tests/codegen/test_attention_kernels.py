"""The Triton attention template under TRITON_INTERPRET=1, against the
float64 reference: every constexpr variant (causal alignments, window, GQA
with and without packing, bool/additive masks with broadcast strides,
ALiBi, head dims, dtypes, split-KV decode, varlen), on ragged small shapes
with non-contiguous inputs.
"""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

# NOTE: tests/codegen/conftest.py switches TRITON_INTERPRET on for each test (CPU tensors);
# the launcher rebuilds the template when that switch differs from its import.

from braze.compiler.codegen.triton_attention.launch import attention_dense, attention_varlen  # noqa: E402
from braze.ir.attention_varlen import attention_varlen_reference  # noqa: E402
from braze.ir.attention import attention_reference  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _on_test_device(device):
    """The same tests compiled on a GPU with ``BRAZE_TEST_DEVICE=cuda`` (tensors made there)."""
    if device == "cpu":
        yield
        return
    with torch.device(device):
        yield


def cfg(bm=16, bn=16, pack=False, splits=1, warps=4, stages=1, tma=False):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages, "PACK_GQA": pack, "TMA": tma,
            "SPLITS": splits}


def qkv(B, Hq, Hkv, Sq, Sk, D, dtype, Dv=None, permuted=True):
    """Random q/k/v; permuted: [B, S, H, D] storage seen as [B, H, S, D] (as models do)."""
    Dv = Dv or D
    if permuted:
        q = torch.randn(B, Sq, Hq, D).to(dtype).transpose(1, 2)
        k = torch.randn(B, Sk, Hkv, D).to(dtype).transpose(1, 2)
        v = torch.randn(B, Sk, Hkv, Dv).to(dtype).transpose(1, 2)
    else:
        q, k, v = (torch.randn(B, Hq, Sq, D).to(dtype), torch.randn(B, Hkv, Sk, D).to(dtype),
                   torch.randn(B, Hkv, Sk, Dv).to(dtype))
    return q, k, v


def check(out, ref, dtype):
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all(), "non-finite output"
    err = ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()
    assert err <= TOL[dtype], f"relative error {err:.3e} > {TOL[dtype]}"


def run_dense(B=1, Hq=2, Hkv=2, Sq=37, Sk=37, D=64, dtype=torch.float32, Dv=None, causal="none", window=None,
              mask=None, mask_kind="none", slopes=None, config=None, permuted=True, scale=None, softcap=None):
    q, k, v = qkv(B, Hq, Hkv, Sq, Sk, D, dtype, Dv, permuted)
    scale = scale or 1 / math.sqrt(D)
    attrs = dict(scale=scale, causal=causal, window=window, groups=Hq // Hkv, mask_kind=mask_kind)
    if softcap is not None:
        attrs["softcap"] = softcap
    out = attention_dense(q, k, v, mask, slopes, config=config or cfg(), **attrs)
    ref = attention_reference(q.double(), k.double(), v.double(),
                              mask.double() if mask is not None and mask.is_floating_point() else mask,
                              slopes, **attrs)
    check(out, ref, dtype)
    return out, ref


# ---- causal alignments, windows, ragged and Sq != Sk ------------------------------------------

@pytest.mark.parametrize("causal,sq,sk,window", [
    ("none", 37, 37, None),
    ("none", 20, 45, None),
    ("top_left", 37, 37, None),
    ("top_left", 20, 45, None),
    ("top_left", 45, 20, None),
    ("bottom_right", 20, 45, None),
    ("bottom_right", 45, 20, None),   # the first 25 rows see no key: zeros
    ("bottom_right", 40, 40, 7),
    ("top_left", 33, 40, 5),
    ("none", 30, 40, 9),              # window alone: future keys stay visible
])
def test_causal_and_window(causal, sq, sk, window):
    out, ref = run_dense(Sq=sq, Sk=sk, causal=causal, window=window)
    if causal == "bottom_right" and sq > sk:
        assert torch.equal(out[:, :, :sq - sk], torch.zeros_like(out[:, :, :sq - sk]))


@pytest.mark.parametrize("bm,bn", [(32, 16), (16, 32), (64, 64)])
def test_block_shapes_causal(bm, bn):
    # Diagonal blocks of several widths; the unmasked middle segment is exercised when bn < Sq.
    run_dense(Sq=70, Sk=75, causal="bottom_right", config=cfg(bm, bn))


# ---- GQA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pack", [False, True])
def test_gqa(pack):
    run_dense(B=2, Hq=6, Hkv=2, Sq=23, Sk=29, causal="bottom_right", config=cfg(32, 16, pack=pack))


def test_packed_gqa_rows_in_256_row_blocks():
    # 70 tokens x 4 heads = 280 rows: a full 256-row block and a ragged one.
    run_dense(Hq=8, Hkv=2, Sq=70, Sk=75, causal="bottom_right", config=cfg(256, 32, pack=True))


def test_mqa_packed_rows_span_blocks():
    # 8 query heads on one K/V head: 8 * 9 rows cut into 16-row blocks across tokens.
    run_dense(Hq=8, Hkv=1, Sq=9, Sk=30, causal="top_left", config=cfg(16, 16, pack=True))


# ---- masks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(37,), (1, 1, 21, 37), (2, 1, 1, 37), (4, 21, 37)])
def test_bool_mask_broadcasts(shape):
    mask = torch.rand(*shape) > 0.3
    run_dense(B=2, Hq=4, Hkv=2, Sq=21, Sk=37, mask=mask, mask_kind="bool", config=cfg(16, 16, pack=True))


def test_bool_padding_mask_rows_without_keys_are_zero():
    B, Sq, Sk = 2, 19, 26
    mask = torch.rand(B, 1, Sq, Sk) > 0.5
    mask[0, 0, 3] = False          # a row that sees no key
    mask[1, 0, 10:] = False        # padding query rows
    out, _ = run_dense(B=B, Sq=Sq, Sk=Sk, causal="bottom_right", mask=mask, mask_kind="bool")
    assert torch.equal(out[0, :, 3], torch.zeros_like(out[0, :, 3]))
    assert torch.equal(out[1, :, 10:], torch.zeros_like(out[1, :, 10:]))


def test_additive_mask_with_inf_and_finfo_min_rows():
    B, Sq, Sk = 2, 17, 33
    mask = torch.randn(B, 1, Sq, Sk)
    mask[..., ::4] = -math.inf
    mask[0, 0, 2] = -math.inf                          # empty row -> zeros
    mask[1, 0, 5] = torch.finfo(torch.float32).min     # HF padding: a uniform row, not an empty one
    out, ref = run_dense(B=B, Sq=Sq, Sk=Sk, mask=mask, mask_kind="additive")
    assert torch.equal(out[0, :, 2], torch.zeros_like(out[0, :, 2]))
    assert ref[1, :, 5].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_additive_mask_low_precision(dtype):
    mask = torch.randn(1, 1, 1, 30).to(dtype)
    run_dense(Sq=12, Sk=30, dtype=dtype, mask=mask, mask_kind="additive", causal="bottom_right")


# ---- ALiBi ------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal,pack", [("bottom_right", False), ("none", True)])
def test_alibi(causal, pack):
    slopes = torch.rand(4) * 0.5
    run_dense(Hq=4, Hkv=2, Sq=18, Sk=35, causal=causal, slopes=slopes, config=cfg(16, 16, pack=pack))


# ---- head dims and dtypes ---------------------------------------------------------------------

@pytest.mark.parametrize("d,dtype", [(64, torch.float16), (64, torch.bfloat16), (80, torch.float32),
                                     (96, torch.bfloat16), (128, torch.float16), (256, torch.float32)])
def test_head_dims_and_dtypes(d, dtype):
    run_dense(Sq=19, Sk=21, D=d, dtype=dtype, causal="top_left", config=cfg(16, 16))


def test_value_head_dim_differs_and_contiguous_inputs():
    run_dense(Sq=13, Sk=22, D=64, Dv=40, permuted=False)


# ---- decode: split-KV + combine ---------------------------------------------------------------

@pytest.mark.parametrize("sq,splits,causal,dtype", [
    (1, 3, "bottom_right", torch.float32),
    (1, 4, "none", torch.bfloat16),
    (4, 2, "bottom_right", torch.float16),
    (3, 5, "top_left", torch.float32),      # most rows see one or two keys; many chunks are empty
])
def test_decode_split_kv(sq, splits, causal, dtype):
    run_dense(B=2, Hq=8, Hkv=2, Sq=sq, Sk=77, dtype=dtype, causal=causal, config=cfg(16, 16, pack=True,
                                                                                      splits=splits))


@pytest.mark.parametrize("sq,splits,dtype", [(37, 1, torch.float32), (1, 4, torch.bfloat16), (2, 3, torch.float16)])
def test_softcapped_scores(sq, splits, dtype):
    """Gemma-2's ``softcap * tanh(scale * q@k^T / softcap)`` (cap 2 against scores of up to ~4:
    the cap bites), prefill and split-KV decode, with a sliding window and an additive mask."""
    mask = torch.randn(2, 1, sq, 77)
    run_dense(B=2, Hq=4, Hkv=2, Sq=sq, Sk=77, dtype=dtype, causal="bottom_right", window=30, mask=mask,
              mask_kind="additive", scale=0.5, softcap=2.0, config=cfg(16, 16, pack=sq < 16, splits=splits))


def test_softcap_must_be_positive():
    q, k, v = qkv(1, 2, 2, 4, 8, 16, torch.float32)
    with pytest.raises(ValueError, match="softcap"):
        attention_dense(q, k, v, None, None, scale=0.25, softcap=-1.0, config=cfg())


def test_decode_split_kv_with_window_mask_and_alibi():
    mask = torch.rand(2, 1, 1, 61) > 0.2
    run_dense(B=2, Hq=4, Hkv=1, Sq=2, Sk=61, causal="bottom_right", window=20, mask=mask, mask_kind="bool",
              slopes=torch.rand(4), config=cfg(16, 16, pack=True, splits=4))


@pytest.mark.parametrize("window,dtype", [(None, torch.float32), (None, torch.bfloat16), (24, torch.float16)])
def test_decode_over_a_static_cache_reads_only_valid_rows(window, dtype):
    """A decode step as braze.generate runs it: one query per sequence against a
    [B, Hkv, L, D] cache of which each sequence has a different valid prefix (the
    mask [B, 1, 1, L] says which), GQA rows packed, split-KV over the rows the mask
    summary leaves (not the whole cache), left padding holes in one row."""
    B, Hq, Hkv, L, D = 3, 8, 2, 96, 64
    valid = [5, 37, 70]
    mask = torch.zeros(B, 1, 1, L, dtype=torch.bool)
    for b, n in enumerate(valid):
        mask[b, ..., :n] = True
    mask[2, ..., :9] = False                            # left padding of the third prompt
    q, k, v = qkv(B, Hq, Hkv, 1, L, D, dtype)
    # NOTE: rows past the valid prefix hold garbage (a cache written earlier): never read.
    k[:, :, 80:] = float("nan")
    v[:, :, 80:] = float("nan")
    attrs = dict(scale=D ** -0.5, causal="none", window=window, groups=Hq // Hkv, mask_kind="bool")
    for splits in (1, 4):
        config = dict(cfg(16, 16, pack=True, splits=splits), MASK_SKIP=True)
        out = attention_dense(q, k, v, mask, None, config=config, **attrs)
        ref = attention_reference(q.double(), k[:, :, :80].double(), v[:, :, :80].double(), mask[..., :80],
                                  None, **attrs)
        check(out, ref, dtype)


def test_decode_split_kv_without_packing():
    run_dense(B=1, Hq=2, Hkv=2, Sq=1, Sk=50, config=cfg(16, 16, pack=False, splits=3))


@pytest.mark.parametrize("pack,splits,dtype", [(True, 4, torch.bfloat16), (False, 3, torch.float32),
                                               (True, 5, torch.float16)])
def test_fused_combine_merges_in_the_last_chunk(pack, splits, dtype, monkeypatch):
    """FUSE_COMBINE: no combine launch; the last chunk of each program merges. Chunks with no
    visible key (a short valid prefix cut in 4-5 chunks), GQA packed or not, a mask; the
    counts are left at zero, so a second launch (as a CUDA graph replays) merges again."""
    from braze.compiler.codegen.triton_attention import launch

    B, Hq, Hkv, L = 3, 8, 2, 90
    mask = torch.zeros(B, 1, 1, L, dtype=torch.bool)
    for b, n in enumerate((3, 40, 90)):
        mask[b, ..., :n] = True
    config = dict(cfg(16, 16, pack=pack, splits=splits), MASK_SKIP=True, FUSE_COMBINE=True)
    combines = []
    real = launch._template

    class Counting:     # the template module, counting the combine kernel's launches
        def __init__(self, tpl):
            self.tpl = tpl

        def __getattr__(self, name):
            if name == "attention_combine_kernel":
                combines.append(name)
            return getattr(self.tpl, name)

    monkeypatch.setattr(launch, "_template", lambda *a, **kw: Counting(real(*a, **kw)))
    for _ in range(2):
        out, _ = run_dense(B=B, Hq=Hq, Hkv=Hkv, Sq=1, Sk=L, dtype=dtype, mask=mask, mask_kind="bool", config=config)
    assert combines == []
    assert int(launch._COUNTS[out.device].abs().sum()) == 0


# ---- varlen -----------------------------------------------------------------------------------

def run_varlen(lens_q, lens_k, Hq=4, Hkv=2, D=64, dtype=torch.float32, causal="bottom_right", window=None,
               slopes=None, config=None, max_seqlen=True):
    cq = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    ck = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    tq, tk = int(cq[-1]), int(ck[-1])
    q = torch.randn(tq, Hq * 2, D).to(dtype)[:, ::2]   # strided heads: non-contiguous
    k = torch.randn(tk, Hkv, D).to(dtype)
    v = torch.randn(Hkv, tk, D).to(dtype).transpose(0, 1)
    attrs = dict(scale=D ** -0.5, causal=causal, window=window, groups=Hq // Hkv)
    bounds = dict(max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k)) if max_seqlen else {}
    out = attention_varlen(q, k, v, cq, ck, slopes, config=config or cfg(), **bounds, **attrs)
    ref = attention_varlen_reference(q.double(), k.double(), v.double(), cq, ck, slopes, **attrs)
    check(out, ref, dtype)
    return out


@pytest.mark.parametrize("causal,pack", [("bottom_right", False), ("bottom_right", True), ("none", False)])
def test_varlen_uneven(causal, pack):
    run_varlen([5, 17, 1, 33], [5, 17, 9, 40], causal=causal, config=cfg(16, 16, pack=pack))


def test_varlen_empty_sequences_window_alibi_bf16():
    out = run_varlen([3, 0, 21], [7, 4, 0], dtype=torch.bfloat16, window=6, slopes=torch.rand(4),
                     max_seqlen=False)
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))   # the third sequence has no key


@pytest.mark.parametrize("pack", [False, True])
def test_varlen_window_over_positions_with_holes(pack):
    """Packed rows of a padding mask with holes: the window counts the tokens' positions in
    their rows (as the dense model does), not packed rows; equal to a dense masked reference."""
    lens, Hq, Hkv, D, window = [20, 7, 33], 4, 2, 32, 5
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    t = int(cu[-1])
    dev = cu.device                                                    # a cuda default device on the GPU
    g = torch.Generator(device=dev).manual_seed(3)
    step = 1 + (torch.rand(t, generator=g, device=dev) < 0.3).long() * 2   # holes of two positions
    pos = torch.cat([torch.cumsum(step[int(cu[b]):int(cu[b + 1])], 0) - 1 for b in range(len(lens))])
    q, k, v = (torch.randn(t, h, D, generator=g, device=dev) for h in (Hq, Hkv, Hkv))
    attrs = dict(scale=D ** -0.5, causal="bottom_right", window=window, groups=Hq // Hkv)
    out = attention_varlen(q, k, v, cu, cu, None, pos, config=cfg(16, 16, pack=pack), max_seqlen_q=max(lens),
                           max_seqlen_k=max(lens), **attrs)
    ref = attention_varlen_reference(q.double(), k.double(), v.double(), cu, cu, None, pos, **attrs)
    check(out, ref, torch.float32)
    # the dense model's view of sequence 0: its tokens at their positions, the rest masked
    p0, n0 = pos[:lens[0]], int(pos[lens[0] - 1]) + 1
    dq, dk, dv = (torch.zeros(1, h, n0, D, dtype=torch.float64) for h in (Hq, Hkv, Hkv))
    for dense, packed in ((dq, q), (dk, k), (dv, v)):
        dense[0, :, p0] = packed[:lens[0]].transpose(0, 1).double()
    mask = torch.zeros(n0, dtype=torch.bool)
    mask[p0] = True
    dense = attention_reference(dq, dk, dv, mask[None, None, None, :], None, mask_kind="bool", **attrs)
    check(out[:lens[0]], dense[0, :, p0].transpose(0, 1), torch.float32)
    assert (pos[1:lens[0]] - pos[:lens[0] - 1] > 1).any()                 # the test has holes
    plain = attention_varlen_reference(q.double(), k.double(), v.double(), cu, cu, None, **attrs)
    assert not torch.allclose(plain, ref)                                 # and they matter


def test_varlen_softcap_and_window():
    """Gemma-2's soft-capped scores with a window, on packed sequences."""
    lens = [9, 30, 4]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    t = int(cu[-1])
    q, k, v = torch.randn(t, 4, 32) * 3, torch.randn(t, 2, 32) * 3, torch.randn(t, 2, 32)
    attrs = dict(scale=32 ** -0.5, causal="bottom_right", window=7, groups=2, softcap=5.0)
    out = attention_varlen(q, k, v, cu, cu, None, None, config=cfg(16, 16), max_seqlen_q=30, max_seqlen_k=30,
                           **attrs)
    ref = attention_varlen_reference(q.double(), k.double(), v.double(), cu, cu, None, None, **attrs)
    check(out, ref, torch.float32)
    uncapped = attention_varlen_reference(q.double(), k.double(), v.double(), cu, cu, None, None,
                                          **dict(attrs, softcap=None))
    assert not torch.allclose(uncapped, ref)


# ---- bad input --------------------------------------------------------------------------------

def test_bad_inputs_name_the_problem():
    q, k, v = qkv(1, 4, 2, 5, 6, 64, torch.float32)
    with pytest.raises(ValueError, match="query heads != groups"):
        attention_dense(q, k, v, scale=0.1, groups=3, config=cfg())
    with pytest.raises(ValueError, match="does not broadcast"):
        attention_dense(q, k, v, torch.ones(7, dtype=torch.bool), scale=0.1, groups=2, mask_kind="bool",
                        config=cfg())
    with pytest.raises(ValueError, match="dtypes"):
        attention_dense(q, k.half(), v, scale=0.1, groups=2, config=cfg())
    with pytest.raises(ValueError, match="head dims"):
        attention_dense(q, k[..., :32], v, scale=0.1, groups=2, config=cfg())
    with pytest.raises(ValueError, match="scale"):
        attention_dense(q, k, v, scale=-1.0, groups=2, config=cfg())


# ---- K/V through tensor descriptors (TMA on Hopper) -------------------------------------------

@pytest.mark.parametrize("d,dtype,causal,pack,splits", [
    (64, torch.float32, "bottom_right", False, 1),
    (80, torch.bfloat16, "top_left", True, 1),     # head dim padded by the descriptor's zero fill
    (64, torch.float16, "bottom_right", True, 3),  # decode form
])
def test_tma_descriptor_loads(d, dtype, causal, pack, splits):
    sq = 2 if splits > 1 else 21
    run_dense(B=2, Hq=4, Hkv=2, Sq=sq, Sk=45, D=d, dtype=dtype, causal=causal,
              config=cfg(16, 16, pack=pack, splits=splits, tma=True))

