"""The attention template compiled for the GPU (not interpreted): every
variant against a float64 reference, at sizes that cross block edges.
Run on the GPU machine: ``pytest -q -m gpu tests/codegen/test_attention_kernels_gpu.py``.
"""
from __future__ import annotations

import math

import pytest
import torch

from braze.ir.attention import attention_reference

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _compiled(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # other test modules of the session may have set it


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


CASES = [
    # B, Hq, Hkv, Sq, Sk, D, dtype, causal, window, mask, alibi, config
    (2, 4, 4, 300, 300, 128, torch.bfloat16, "none", None, None, False, None),
    (2, 4, 4, 300, 517, 128, torch.bfloat16, "bottom_right", None, None, False, None),
    (2, 4, 4, 517, 300, 64, torch.float16, "top_left", None, None, False, None),
    (2, 4, 4, 517, 300, 64, torch.float16, "bottom_right", None, None, False, None),
    (2, 8, 2, 257, 257, 64, torch.bfloat16, "bottom_right", None, None, False, None),
    (2, 8, 2, 257, 257, 64, torch.bfloat16, "bottom_right", None, None, False, {"PACK_GQA": True}),
    (1, 4, 4, 400, 400, 96, torch.bfloat16, "bottom_right", 64, None, False, None),
    (1, 4, 4, 200, 333, 80, torch.float16, "none", None, "bool", False, None),
    (1, 4, 2, 200, 333, 128, torch.bfloat16, "none", None, "additive", True, None),
    (1, 2, 2, 150, 150, 256, torch.bfloat16, "top_left", None, None, False, None),
    (1, 2, 2, 150, 190, 64, torch.float32, "bottom_right", None, None, True, None),
    (4, 32, 8, 1, 3001, 128, torch.bfloat16, "bottom_right", None, None, False, None),      # decode, split-KV
    (2, 32, 8, 4, 4097, 128, torch.float16, "bottom_right", None, "bool", False, None),     # decode + mask
    (1, 16, 2, 1, 20000, 64, torch.bfloat16, "bottom_right", 4096, None, False, None),      # decode + window
    (2, 8, 2, 300, 517, 80, torch.bfloat16, "bottom_right", None, None, False, {"TMA": True, "PACK_GQA": True}),
    (2, 4, 4, 300, 300, 128, torch.float16, "top_left", None, "bool", False,
     {"TMA": True, "BLOCK_N": 128, "num_stages": 2}),
    (4, 32, 8, 1, 3001, 128, torch.bfloat16, "bottom_right", None, None, False, {"TMA": True}),
    (2, 4, 4, 257, 300, 128, torch.float16, "none", None, None, False, {"TMA": True, "BLOCK_N": 128}),
    (1, 2, 2, 150, 190, 80, torch.float32, "top_left", 50, None, False, {"TMA": True}),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[7]}-d{c[5]}-sq{c[3]}-{str(c[6])[6:]}" for c in CASES])
def test_compiled_variants(case):
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton_attention.launch import attention_dense
    from braze.compiler.codegen.triton_attention.space import default_config

    B, Hq, Hkv, Sq, Sk, D, dtype, causal, window, mask_kind, alibi, over = case
    dev = "cuda"
    q = torch.randn(B, Sq, Hq, D, device=dev).to(dtype).transpose(1, 2)
    k = torch.randn(B, Sk, Hkv, D, device=dev).to(dtype).transpose(1, 2)
    v = torch.randn(B, Sk, Hkv, D, device=dev).to(dtype).transpose(1, 2)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(B, 1, Sq, Sk, device=dev) > 0.3
        mask[0, 0, 0] = False
    elif mask_kind == "additive":
        mask = torch.randn(B, 1, 1, Sk, device=dev)
        mask[..., ::5] = -math.inf
    slopes = torch.rand(Hq, device=dev) * 0.1 if alibi else None
    attrs = dict(scale=D ** -0.5, causal=causal, window=window, groups=Hq // Hkv, mask_kind=mask_kind or "none")
    problem = {"B": B, "Hq": Hq, "Hkv": Hkv, "groups": Hq // Hkv, "Sq": Sq, "Sk": Sk, "D": D, "Dv": D,
               "dtype": {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype],
               "mask": mask_kind or "none"}
    cfg = dict(default_config(problem, device_info(dev)), **(over or {}))
    out = attention_dense(q, k, v, mask, slopes, config=cfg, **attrs)
    ref = attention_reference(q.double(), k.double(), v.double(),
                              mask.double() if mask is not None and mask.is_floating_point() else mask,
                              slopes, **attrs)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) <= TOL[dtype], (cfg, _rel(out, ref))


@pytest.mark.parametrize("left,groups,D", [(False, 1, 128), (True, 4, 64)])
def test_mask_skip_compiled(left, groups, D):
    """An HF causal + padding mask given as data: block skipping on and off against float64."""
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton_attention.launch import attention_dense
    from braze.compiler.codegen.triton_attention.space import default_config

    B, Hkv, S = 3, 4, 700
    lengths = [700, 333, 1]
    i = torch.arange(S, device="cuda")
    keep = (i[None, :] <= i[:, None]).expand(B, S, S).clone()
    for b, n in enumerate(lengths):
        if left:
            keep[b, :, :S - n] = False
        else:
            keep[b, :, n:] = False
    mask = torch.zeros(B, 1, S, S, device="cuda", dtype=torch.bfloat16)
    mask = mask.masked_fill(~keep[:, None], torch.finfo(torch.bfloat16).min)
    q = torch.randn(B, S, Hkv * groups, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    k = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    v = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    attrs = dict(scale=D ** -0.5, groups=groups, mask_kind="additive")
    problem = {"B": B, "Hq": Hkv * groups, "Hkv": Hkv, "groups": groups, "Sq": S, "Sk": S, "D": D, "Dv": D,
               "dtype": "bf16", "mask": "additive"}
    cfg = default_config(problem, device_info("cuda"))
    assert cfg["MASK_SKIP"]
    ref = attention_reference(q.double(), k.double(), v.double(), mask.double(), None, **attrs)
    for skip in (True, False):
        out = attention_dense(q, k, v, mask, None, config=dict(cfg, MASK_SKIP=skip), **attrs)
        assert torch.isfinite(out).all()
        assert _rel(out, ref) <= TOL[torch.bfloat16], (skip, _rel(out, ref))


def test_compiled_varlen():
    from braze.compiler.codegen.triton_attention.launch import attention_varlen
    from braze.ir.attention_varlen import attention_varlen_reference

    lens_q, lens_k = [130, 1, 0, 257, 64], [130, 300, 5, 257, 64]
    cq = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device="cuda")
    ck = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device="cuda")
    q = torch.randn(int(cq[-1]), 8, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(int(ck[-1]), 2, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(int(ck[-1]), 2, 128, device="cuda", dtype=torch.bfloat16)
    attrs = dict(scale=128 ** -0.5, causal="bottom_right", groups=4)
    for pack in (False, True):
        cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK_GQA": pack, "SPLITS": 1}
        out = attention_varlen(q, k, v, cq, ck, config=cfg, max_seqlen_q=257, max_seqlen_k=300, **attrs)
        ref = attention_varlen_reference(q.double(), k.double(), v.double(), cq, ck, **attrs)
        assert _rel(out, ref) <= 1e-2


def test_sdpa_candidate_on_gpu():
    from braze.compiler.codegen.triton_attention.sdpa import sdpa_attention

    q = torch.randn(2, 8, 100, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 2, 150, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(2, 2, 150, 64, device="cuda", dtype=torch.bfloat16)
    m = torch.randn(2, 1, 100, 150, device="cuda")
    m[0, 0, 3] = -math.inf
    for attrs, mask in [(dict(causal="bottom_right"), None), (dict(causal="top_left", window=30), None),
                        (dict(mask_kind="additive"), m)]:
        attrs = dict(scale=0.125, groups=4, **attrs)
        out = sdpa_attention(q, k, v, mask, **attrs)
        ref = attention_reference(q.double(), k.double(), v.double(), mask.double() if mask is not None else None,
                                  **attrs)
        assert torch.isfinite(out).all() and _rel(out, ref) <= 1e-2


@pytest.mark.parametrize("window", [None, 48])
def test_flash_varlen_library_candidate(window):
    """torch's flash varlen kernel as braze calls it: GQA, bottom-right causal, a window,
    bucket rows past cu_seqlens[B] zeroed."""
    from braze.compiler.codegen.triton_attention.sdpa import flash_varlen_attention
    from braze.ir.attention_varlen import attention_varlen_reference

    lens = [130, 1, 0, 257, 64]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device="cuda")
    rows = int(cu[-1]) + 11
    q = torch.randn(rows, 8, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(rows, 2, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(rows, 2, 128, device="cuda", dtype=torch.bfloat16)
    out = flash_varlen_attention(q, k, v, cu, cu, max_seqlen_q=257, max_seqlen_k=257, scale=128 ** -0.5,
                                 causal="bottom_right", window=window)
    ref = attention_varlen_reference(q.double(), k.double(), v.double(), cu, cu, scale=128 ** -0.5, groups=4,
                                     causal="bottom_right", window=window)
    assert _rel(out, ref) <= 1e-2
    assert torch.equal(out[int(cu[-1]):], torch.zeros_like(out[int(cu[-1]):]))


@pytest.mark.parametrize("B,splits", [(1, 8), (4, 16), (2, 64)])
def test_fused_combine_under_replay(B, splits):
    """FUSE_COMBINE on the GPU, where chunks finish in any order: 300 CUDA-graph replays
    (the counts must be back at zero after each) agree with the separate combine kernel
    and the float64 reference every time (a missed release/acquire would show as a
    stale or half-written partial in some replay)."""
    from braze.compiler.codegen.triton_attention.launch import attention_dense

    Hq, Hkv, L, D = 32, 8, 4096, 64
    q = torch.randn(B, 1, Hq, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    k = torch.randn(B, Hkv, L, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, L, D, device="cuda", dtype=torch.bfloat16)
    attrs = dict(scale=D ** -0.5, causal="bottom_right", groups=Hq // Hkv)
    cfg = {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK_GQA": True, "TMA": False,
           "SPLITS": splits}
    want = attention_dense(q, k, v, None, None, config=dict(cfg, FUSE_COMBINE=False), **attrs)
    ref = attention_reference(q.double(), k.double(), v.double(), None, None, **attrs)
    assert _rel(want, ref) <= 1e-2
    fused = dict(cfg, FUSE_COMBINE=True)
    attention_dense(q, k, v, None, None, config=fused, **attrs)     # compiled, counts allocated
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = attention_dense(q, k, v, None, None, config=fused, **attrs)
    worst = 0.0
    for _ in range(300):
        out.fill_(float("nan"))
        graph.replay()
        worst = max(worst, (out.float() - want.float()).abs().max().item())
    torch.cuda.synchronize()
    assert worst <= 1e-2, worst


def test_fused_combine_graph_survives_a_larger_count_buffer():
    """A graph captured while the count buffer was small replays correctly after a larger
    launch replaced that buffer (the old one must stay allocated: the graph writes it)."""
    from braze.compiler.codegen.triton_attention import launch

    def run(B, Hq, graph=False):
        q = torch.randn(B, 1, Hq, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        k = torch.randn(B, Hq, 2048, 64, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, Hq, 2048, 64, device="cuda", dtype=torch.bfloat16)
        cfg = {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "PACK_GQA": False, "TMA": False,
               "SPLITS": 8, "FUSE_COMBINE": True}
        attrs = dict(scale=0.125, causal="bottom_right", groups=1)
        ref = attention_reference(q.double(), k.double(), v.double(), None, None, **attrs)
        return q, k, v, cfg, attrs, ref

    q, k, v, cfg, attrs, ref = run(1, 8)
    launch._COUNTS.clear()
    launch.attention_dense(q, k, v, None, None, config=cfg, **attrs)
    small = launch._COUNTS[q.device].numel()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = launch.attention_dense(q, k, v, None, None, config=cfg, **attrs)
    q2, k2, v2, _, _, ref2 = run(64, 32)                 # 2048 programs: a larger buffer
    big = launch.attention_dense(q2, k2, v2, None, None, config=cfg, **attrs)
    assert launch._COUNTS[q.device].numel() > small
    assert _rel(big, ref2) <= 1e-2
    filler = [torch.full((1024,), 7, dtype=torch.int32, device="cuda") for _ in range(256)]
    for _ in range(20):
        out.fill_(float("nan"))                         # a merge that never fires leaves NaN
        graph.replay()
        torch.cuda.synchronize()
        assert _rel(out, ref) <= 1e-2
    del filler
