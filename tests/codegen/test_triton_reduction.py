"""Row-reduction Triton kernels against the float64 reference: HF norms, softmax,
single-pass and looped forms, several outputs, reduced-shaped outputs."""
from __future__ import annotations

import pytest
import torch

from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, rand, run_and_check

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

F32 = torch.float32
# NOTE: BLOCK_N >= N runs the single-pass kernel, BLOCK_N < N the looped one.
SINGLE = {"BLOCK_R": 2, "BLOCK_N": 128, "num_warps": 4}
LOOPED = {"BLOCK_R": 2, "BLOCK_N": 32, "num_warps": 4}
MODES = pytest.mark.parametrize("cfg", [SINGLE, LOOPED], ids=["single", "looped"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])


def rmsnorm(b, h, w, dtype, eps=1e-6):
    """HF LlamaRMSNorm: to f32, pow 2, mean -1 keepdim, + eps, rsqrt, mul, back, * weight."""
    hf = b.call("_to_copy", h, dtype=F32)
    var = b.call("mean", b.call("pow", hf, 2, overload="Tensor_Scalar"), [-1], True, overload="dim")
    y = b.call("mul", hf, b.call("rsqrt", b.call("add", var, eps, overload="Tensor")), overload="Tensor")
    return b.call("mul", w, b.call("_to_copy", y, dtype=dtype), overload="Tensor")


@DTYPES
@MODES
def test_rmsnorm_hf_llama(dtype, cfg, device):
    b = Builder()
    x = b.input("x", (3, "s0", 100), dtype)
    w = b.input("w", (100,), dtype)
    node = fused_node(b, [rmsnorm(b, x, w, dtype)], "reduction")
    run_and_check(node, {"x": rand(3, 5, 100, dtype=dtype), "w": rand(100, dtype=dtype)}, cfg, device)


@DTYPES
@MODES
def test_add_rmsnorm_two_outputs(dtype, cfg, device):
    b = Builder()
    x = b.input("x", ("s0", 100), dtype)
    res = b.input("res", ("s0", 100), dtype)
    w = b.input("w", (100,), dtype)
    h = b.call("add", x, res, overload="Tensor")
    node = fused_node(b, [h, rmsnorm(b, h, w, dtype)], "reduction")
    feed = {"x": rand(7, 100, dtype=dtype), "res": rand(7, 100, dtype=dtype), "w": rand(100, dtype=dtype)}
    run_and_check(node, feed, cfg, device)


@DTYPES
@MODES
def test_layernorm_var_mean(dtype, cfg, device):
    b = Builder()
    x = b.input("x", (2, 5, 72), dtype)
    w = b.input("w", (72,), dtype)
    bias = b.input("bias", (72,), dtype)
    xf = b.call("_to_copy", x, dtype=F32)
    var, mean = b.call("var_mean", xf, [2], correction=0, keepdim=True, overload="correction")
    rs = b.call("rsqrt", b.call("add", var, 1e-5, overload="Tensor"))
    y = b.call("mul", b.call("sub", xf, mean, overload="Tensor"), rs, overload="Tensor")
    y = b.call("add", b.call("mul", y, b.call("_to_copy", w, dtype=F32), overload="Tensor"),
               b.call("_to_copy", bias, dtype=F32), overload="Tensor")
    out = b.call("_to_copy", y, dtype=dtype)
    node = fused_node(b, [out, mean, rs], "reduction")
    feed = {"x": rand(2, 5, 72, dtype=dtype, scale=3.0) + 2.0, "w": rand(72, dtype=dtype), "bias": rand(72, dtype=dtype)}
    run_and_check(node, feed, cfg, device)


@DTYPES
@MODES
def test_masked_softmax_with_large_values(dtype, cfg, device):
    """add mask (HF additive mask with finfo.min) then _softmax, with casts; logits up to 1e4."""
    b = Builder()
    s = b.input("s", (2, 3, 5, 90), dtype)
    mask = b.input("mask", (2, 1, 5, 90), dtype)
    a = b.call("add", b.call("mul", s, 0.125, overload="Tensor"), mask, overload="Tensor")
    p = b.call("_softmax", b.call("_to_copy", a, dtype=F32), -1, False)
    out = b.call("_to_copy", p, dtype=dtype)
    node = fused_node(b, [out], "reduction")
    m = torch.zeros(2, 1, 5, 90)
    m[..., 60:] = torch.finfo(dtype).min
    feed = {"s": rand(2, 3, 5, 90, scale=3e3).to(dtype), "mask": m.to(dtype)}
    run_and_check(node, feed, cfg, device)


@MODES
def test_log_softmax_and_fully_masked_rows(cfg, device):
    b = Builder()
    x = b.input("x", (6, 50), F32)
    ls = b.call("_log_softmax", x, 1, False)
    sm = b.call("_softmax", x, -1, False)
    node = fused_node(b, [ls, sm], "reduction")
    xin = rand(6, 50, scale=30.0)
    xin[2] = float("-inf")     # softmax of an all -inf row is NaN in torch too
    run_and_check(node, {"x": xin}, cfg, device)


@MODES
def test_reductions_sum_amax_amin_var_std(cfg, device):
    b = Builder()
    x = b.input("x", (4, 3, 45), F32)
    outs = [b.call("sum", x, [-1], overload="dim_IntList"),
            b.call("sum", x, [2], True, overload="dim_IntList"),
            b.call("amax", x, [-1], True),
            b.call("amin", x, [-1]),
            b.call("var", x, [-1], correction=1, keepdim=True, overload="correction"),
            b.call("std", x, [-1], correction=0, overload="correction"),
            b.call("mean", x, [-1], overload="dim")]
    node = fused_node(b, outs, "reduction")
    run_and_check(node, {"x": rand(4, 3, 45, scale=2.0) + 1.0}, cfg, device)


@MODES
def test_two_stage_layernorm_and_strided_input(cfg, device):
    """mean, then the variance of (x - mean): the second reduction depends on the first."""
    b = Builder()
    x = b.input("x", (5, 70), F32)
    mean = b.call("mean", x, [-1], True, overload="dim")
    d = b.call("sub", x, mean, overload="Tensor")
    var = b.call("mean", b.call("mul", d, d, overload="Tensor"), [-1], True, overload="dim")
    y = b.call("mul", d, b.call("rsqrt", b.call("add", var, 1e-5, overload="Tensor")), overload="Tensor")
    node = fused_node(b, [y, var], "reduction")
    xin = rand(70, 5).t()          # transposed: rows are strided
    assert not xin.is_contiguous()
    run_and_check(node, {"x": xin * 3 + 5}, cfg, device)


def test_long_rows_default_config_is_looped(device):
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton import kernel_for

    b = Builder()
    x = b.input("x", (2, 20000), F32)
    node = fused_node(b, [b.call("_softmax", x, -1, False)], "reduction")
    k = kernel_for(node)
    cfg = k.space.default_config(k.problem({}), device_info("cpu"))
    assert cfg["BLOCK_N"] < 20000  # looped
    run_and_check(node, {"x": rand(2, 20000, scale=10.0)}, {"BLOCK_R": 1, "BLOCK_N": 4096, "num_warps": 8}, device)


def test_declines_non_last_dim_reduction():
    from braze.compiler.codegen.triton import supports

    b = Builder()
    x = b.input("x", (4, 8), F32)
    node = fused_node(b, [b.call("sum", x, [0], overload="dim_IntList")], "reduction")
    assert not supports("reduction", node.attr("graph"), "cuda")
