"""The KV-cache write kernel (``index_copy_many_`` of two buffers) against index_copy_,
under ``TRITON_INTERPRET=1`` on the CPU (``BRAZE_TEST_DEVICE=cuda``: compiled on a GPU)."""
from __future__ import annotations

import pytest
import torch

from braze.autotune.space import DeviceInfo
from braze.compiler.codegen.triton_cache.candidates import SPACE, TritonIndexCopyPair, generate, why_not
from braze.ir import Builder
from braze.ir.decline import Decline

CUDA = DeviceInfo("cuda", "test GPU", (9, 0), 132)


def _node(B, H, S, D, n, dtype, dim=2):
    b = Builder()
    kc = b.input("kc", (B, H, S, D), dtype)
    vc = b.input("vc", (B, H, S, D), dtype)
    idx = b.input("idx", (n,), torch.int64)
    k = b.input("k", (B, H, n, D), dtype)
    v = b.input("v", (B, H, n, D), dtype)
    ys = b.call("index_copy_many_", (kc, vc), dim, idx, (k, v))
    b.graph(list(ys))
    return ys[0].node


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("n", [1, 3])
def test_both_caches_get_exactly_the_new_rows(dtype, n, device):
    B, H, S, D = 2, 3, 16, 40
    node = _node(B, H, S, D, n, dtype)
    kern = TritonIndexCopyPair(node)
    cfg = SPACE.default_config(kern.problem({}), CUDA)
    kc, vc = torch.randn(B, H, S, D).to(dtype), torch.randn(B, H, S, D).to(dtype)
    idx = torch.tensor([5, 0, 15][:n])
    # the values as the QKV GEMM leaves them: a permuted view, not contiguous
    k = torch.randn(B, n, H, D).to(dtype).transpose(1, 2)
    v = torch.randn(B, n, H, D).to(dtype).transpose(1, 2)
    want_k, want_v = kc.clone().index_copy_(2, idx, k), vc.clone().index_copy_(2, idx, v)
    dk, dv = kc.to(device), vc.to(device)
    out = kern.compile(cfg)(dk, dv, idx.to(device), k.to(device), v.to(device))
    assert out[0] is dk and out[1] is dv                        # written in place
    assert torch.equal(dk.cpu(), want_k) and torch.equal(dv.cpu(), want_v)


def test_generator_takes_hf_caches_and_declines_the_rest(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    node = _node(1, 8, 64, 64, 1, torch.bfloat16)
    (cand,) = generate(node, None, None, CUDA)
    assert isinstance(cand, TritonIndexCopyPair)
    assert cand.problem({})["D"] == 64 and cand.problem({})["rows"] == 8
    other = _node(1, 8, 64, 64, 1, torch.bfloat16, dim=1)
    assert "dim 1" in why_not(other)
    assert isinstance(generate(other, None, None, CUDA), Decline)


@pytest.mark.parametrize("n,S", [(512, 2048), (16, 16), (1, 8)])
def test_checker_operands_name_each_row_once(n, S):
    """The selection's random operands keep index_copy_'s contract: a prefill's 512 rows
    of a 2048-row cache are distinct (randint's repeats made every candidate, the library
    call included, differ from the reference on a GPU, where repeated rows land in any
    order)."""
    from braze.autotune.measure import random_operands

    node = _node(1, 2, S, 8, n, torch.bfloat16)
    for seed in range(3):
        idx = random_operands(node, {}, "cpu", seed)[2]
        assert idx.dtype == torch.int64 and idx.shape == (n,)
        assert idx.unique().numel() == n and 0 <= int(idx.min()) and int(idx.max()) < S
