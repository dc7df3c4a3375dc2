"""Scatter stores: reduction and GEMM groups ending in ``unpack`` write each packed
row at its padded position (zeros at padding, bucket rows discarded), against the
float64 reference of the same subgraph (``unpack_ref`` included)."""
from __future__ import annotations

import pytest
import torch

from braze.compiler.codegen.triton import Unsupported, generate_group, kernel_for
from braze.ir import Builder
from braze.ir.padding import padding_index_ref
from tests.codegen.test_triton_reduction import rmsnorm
from tests.codegen.triton_helpers import fused_node, rand, run_and_check

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

F32 = torch.float32
B, S = 3, 6
SINGLE = {"BLOCK_R": 2, "BLOCK_N": 128, "num_warps": 4}
LOOPED = {"BLOCK_R": 4, "BLOCK_N": 32, "num_warps": 4}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
# lengths per row, padding side, bucket (T rounded up to a multiple: extra rows go to row B * S)
MASKS = {
    "right": ([6, 1, 4], "right", 1),
    "left_bucketed": ([2, 6, 3], "left", 8),
    "no_padding": ([6, 6, 6], "right", 1),
}
MASK = pytest.mark.parametrize("mask", list(MASKS), ids=list(MASKS))


def _dst(mask: str) -> torch.Tensor:
    lengths, side, bucket = MASKS[mask]
    m = torch.zeros(B, S, dtype=torch.int64)
    for b, n in enumerate(lengths):
        if side == "right":
            m[b, :n] = 1
        else:
            m[b, S - n:] = 1
    return padding_index_ref(m, bucket=bucket)[4]


def _padding(dst: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros(B * S + 1, dtype=torch.bool)
    keep[dst] = True
    return ~keep[:-1].reshape(B, S)


@DTYPES
@MASK
@pytest.mark.parametrize("cfg", [SINGLE, LOOPED], ids=["single", "looped"])
def test_add_rmsnorm_scattered(dtype, mask, cfg, device):
    """The residual sum stays packed (a second output), the normalised value is scattered."""
    b = Builder()
    x = b.input("x", ("t", 100), dtype)
    res = b.input("res", ("t", 100), dtype)
    w = b.input("w", (100,), dtype)
    dst = b.input("dst", ("t",), torch.int64)
    h = b.call("add", x, res, overload="Tensor")
    out = b.call("unpack", rmsnorm(b, h, w, dtype), dst, batch=B, seq=S)
    node = fused_node(b, [h, out], "reduction")
    d = _dst(mask)
    t = d.numel()
    feed = {"x": rand(t, 100, dtype=dtype), "res": rand(t, 100, dtype=dtype), "w": rand(100, dtype=dtype), "dst": d}
    summed, normed = run_and_check(node, feed, cfg, device)
    assert summed.shape == (t, 100) and normed.shape == (B, S, 100)
    assert torch.count_nonzero(normed.cpu()[_padding(d)]) == 0


@MASK
def test_layernorm_scattered_through_a_reshape(mask, device):
    """BERT's final LayerNorm, unpacked through the [-1, F] view the capture leaves."""
    b = Builder()
    x = b.input("x", ("t", 72), F32)
    w = b.input("w", (72,), F32)
    bias = b.input("bias", (72,), F32)
    dst = b.input("dst", ("t",), torch.int64)
    var, mean = b.call("var_mean", x, [1], correction=0, keepdim=True, overload="correction")
    y = b.call("mul", b.call("sub", x, mean, overload="Tensor"),
               b.call("rsqrt", b.call("add", var, 1e-12, overload="Tensor")), overload="Tensor")
    y = b.call("add", b.call("mul", y, w, overload="Tensor"), bias, overload="Tensor")
    out = b.call("unpack", b.call("reshape", y, [-1, 72]), dst, batch=B, seq=S)
    node = fused_node(b, [out], "reduction")
    d = _dst(mask)
    out, = run_and_check(node, {"x": rand(d.numel(), 72), "w": rand(72), "bias": rand(72), "dst": d},
                         SINGLE, device)
    assert torch.count_nonzero(out.cpu()[_padding(d)]) == 0


GEMM_CFG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "num_warps": 4, "num_stages": 1,
            "SPLIT_K": 1, "TMA": 0, "PERSISTENT": 0, "GEMV": 0}


@DTYPES
@MASK
@pytest.mark.parametrize("split", [1, 2], ids=["plain", "split_k"])
def test_gemm_epilogue_scattered(dtype, mask, split, device):
    """An LM head with a bias and GELU, its logits unpacked (split-K: the second kernel scatters)."""
    b = Builder()
    x = b.input("x", ("t", 64), dtype)
    wt = b.input("wt", (40, 64), dtype)
    bias = b.input("bias", (40,), dtype)
    dst = b.input("dst", ("t",), torch.int64)
    y = b.call("addmm", bias, x, b.call("permute", wt, [1, 0]))
    out = b.call("unpack", b.call("gelu", y), dst, batch=B, seq=S)
    node = fused_node(b, [out], "gemm")
    d = _dst(mask)
    feed = {"x": rand(d.numel(), 64, dtype=dtype, scale=0.3), "wt": rand(40, 64, dtype=dtype, scale=0.3),
            "bias": rand(40, dtype=dtype), "dst": d}
    out, = run_and_check(node, feed, {**GEMM_CFG, "SPLIT_K": split}, device)
    assert out.shape == (B, S, 40)
    assert torch.count_nonzero(out.cpu()[_padding(d)]) == 0


def test_nothing_valid_gives_zeros(device):
    """T = 0 (every position is padding): the kernel does not run, the output is all zeros."""
    b = Builder()
    x = b.input("x", ("t", 16), F32)
    w = b.input("w", (16,), F32)
    dst = b.input("dst", ("t",), torch.int64)
    node = fused_node(b, [b.call("unpack", rmsnorm(b, x, w, F32), dst, batch=2, seq=3)], "reduction")
    out = kernel_for(node).compile(SINGLE)(torch.zeros(0, 16).to(device), rand(16).to(device),
                                           torch.zeros(0, dtype=torch.int64).to(device))
    assert out.shape == (2, 3, 16) and torch.count_nonzero(out) == 0


def _declined(kind: str, b: Builder, outputs) -> str:
    node = fused_node(b, outputs, kind)
    with pytest.raises(Unsupported) as e:
        generate_group(kind, node.attr("graph"))
    return str(e.value)


def test_unpack_of_rows_that_are_not_tokens_is_declined():
    """A softmax over heads' rows ([T, H, D] reduced over D) has T * H rows: not one token per row."""
    b = Builder()
    x = b.input("x", ("t", 4, 8), F32)
    dst = b.input("dst", ("t",), torch.int64)
    sm = b.call("_softmax", x, -1, False)
    assert "not the kernel's" in _declined("reduction", b, [b.call("unpack", sm, dst, batch=B, seq=S)])


def test_unpack_read_inside_the_group_is_declined():
    b = Builder()
    x = b.input("x", ("t", 16), F32)
    w = b.input("w", (16,), F32)
    dst = b.input("dst", ("t",), torch.int64)
    up = b.call("unpack", rmsnorm(b, x, w, F32), dst, batch=B, seq=S)
    assert "only a group output" in _declined("reduction", b, [b.call("mul", up, 2.0, overload="Tensor")])


def test_unpack_of_a_bmm_is_declined():
    b = Builder()
    q = b.input("q", ("t", 4, 8), F32)
    k = b.input("k", ("t", 8, 5), F32)
    dst = b.input("dst", ("t",), torch.int64)
    assert "bmm" in _declined("gemm", b, [b.call("unpack", b.call("bmm", q, k), dst, batch=B, seq=S)])


@MASK
def test_padding_rows_are_zeroed_and_valid_rows_left_to_the_kernel(mask, device):
    """The launcher zeroes exactly the rows no destination names (the kernel writes the
    others once); checked on a buffer of sevens, since a fresh allocation may be zero."""
    b = Builder()
    x = b.input("x", ("t", 16), F32)
    w = b.input("w", (16,), F32)
    dst = b.input("dst", ("t",), torch.int64)
    node = fused_node(b, [b.call("unpack", rmsnorm(b, x, w, F32), dst, batch=B, seq=S)], "reduction")
    d = _dst(mask)
    out = torch.full((B * S + 1, 1100), 7.0, device=device)   # F > BLOCK_F: two column blocks
    kernel_for(node).module()._zero_padding_rows(out, d.to(device), B * S)
    pad = torch.cat([_padding(d).reshape(-1), torch.tensor([False])])
    assert torch.count_nonzero(out.cpu()[pad]) == 0
    assert bool((out.cpu()[~pad] == 7.0).all())


@pytest.mark.parametrize("kind", ["reduction", "gemm"])
def test_tuning_inputs_hold_valid_destinations_and_the_kernel_passes_its_check(kind, device):
    """The tuner measures a candidate on random operands: a scatter's destinations must be
    distinct rows in range (random integers would make rows race or write out of bounds,
    and the kernel would be rejected as wrong, or worse)."""
    from braze.autotune.measure import Bench, MeasureSpec, measure

    b = Builder()
    x = b.input("x", ("t", 32), F32)
    w = b.input("w", (24, 32), F32)
    dst = b.input("dst", ("t",), torch.int64)
    y = b.call("mm", x, b.call("permute", w, (1, 0))) if kind == "gemm" else rmsnorm(b, x, b.input("g", (32,)), F32)
    node = fused_node(b, [b.call("unpack", y, dst, batch=5, seq=4)], kind)
    for t in (13, 20, 26):   # fewer, as many, and more rows (bucket rows) than the 20 positions
        bench = Bench(node, {"t": t}, device)
        d = bench.inputs[[v.node.name for v in node.inputs].index("dst")].cpu()
        real = d[d < 20]
        assert d.shape == (t,) and bool((d[:real.numel()] == real).all()) and bool((d[real.numel():] == 20).all())
        assert real.unique().numel() == real.numel() == min(t, 20) and bool((real[1:] > real[:-1]).all())
        k = kernel_for(node)
        cfg = GEMM_CFG if kind == "gemm" else SINGLE
        m = measure(k, cfg, bench, MeasureSpec(warmup=1, reps=1))
        assert m.status == "ok", m.error
