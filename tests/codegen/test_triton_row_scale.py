"""The GEMM template's row-scale prologue (RMSNorm folded into the projection that
reads it, ``compiler/codegen/triton/row_scale.py``) against the float64 reference."""
from __future__ import annotations

import pytest
import torch

from braze.compiler.codegen.triton.indexing import Unsupported
from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, rand, run_and_check

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

F32 = torch.float32
BASE = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "num_warps": 4, "num_stages": 1, "SPLIT_K": 1,
        "TMA": 0, "PERSISTENT": 0, "GEMV": 0}
GEMV = dict(BASE, BLOCK_M=1, BLOCK_N=4, BLOCK_K=64, GROUP_M=1, GEMV=1)
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (2e-2, 2e-2)}


def rms_norm(b, h, weight, eps=1e-6, square="pow"):
    """Hugging Face's LlamaRMSNorm after lowering: upcast, mean of squares, rsqrt, downcast, weight."""
    dtype = h.type.dtype
    hf = b.call("_to_copy", h, dtype=F32) if dtype != F32 else h
    sq = b.call("pow", hf, 2, overload="Tensor_Scalar") if square == "pow" else b.call("mul", hf, hf,
                                                                                         overload="Tensor")
    var = b.call("mean", sq, [-1], True, overload="dim")
    r = b.call("rsqrt", b.call("add", var, eps, overload="Tensor"))
    y = b.call("mul", hf, r, overload="Tensor")
    y = b.call("_to_copy", y, dtype=dtype) if dtype != F32 else y
    return b.call("mul", weight, y, overload="Tensor")


def norm_linear(dtype, rows, k, n, square="pow", residual=False):
    """``rms_norm(h) @ w^T`` (+ a residual) on decode-shaped rows ``[rows, 1, k]``."""
    b = Builder()
    h = b.input("h", (rows, 1, k), dtype)
    g = b.input("g", (k,), dtype)
    w = b.input("w", (n, k), dtype)
    x = b.call("reshape", rms_norm(b, h, g, square=square), (rows, k))
    y = b.call("mm", x, b.call("permute", w, (1, 0)))
    feed = {"h": rand(rows, 1, k, dtype=dtype), "g": 1 + 0.1 * rand(k, dtype=dtype), "w": rand(n, k, dtype=dtype)}
    if residual:
        res = b.input("res", (rows, n), dtype)
        y = b.call("add", y, res, overload="Tensor")
        feed["res"] = rand(rows, n, dtype=dtype)
    return b, y, feed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("rows,cfg", [(1, GEMV), (3, dict(GEMV, BLOCK_M=4, BLOCK_N=8, BLOCK_K=32)), (3, BASE),
                                      (2, dict(BASE, PERSISTENT=1)), (1, dict(GEMV, GEMV=2)),
                                      (3, dict(GEMV, BLOCK_M=4, BLOCK_N=8, BLOCK_K=32, GEMV=2)),
                                      (1, dict(GEMV, GEMV=2, PRO_PASS=1)),
                                      (3, dict(GEMV, BLOCK_M=4, BLOCK_N=8, BLOCK_K=32, GEMV=2, PRO_PASS=1))],
                         ids=["gemv-m1", "gemv-m3", "dot", "persistent", "runs-m1", "runs-m3", "pass-m1", "pass-m3"])
def test_rms_norm_prologue_with_residual(dtype, rows, cfg, device):
    """K = 72 is not a multiple of the K block: the masked last tile adds nothing to the squares
    (in the K loop, or in the pass over A before it: ``PRO_PASS``)."""
    from braze.compiler.codegen.triton import kernel_for

    b, y, feed = norm_linear(dtype, rows, 72, 30, residual=True)
    node = fused_node(b, [y], "gemm")
    k = kernel_for(node)
    assert "red_acc += tl.reduce(" in k.source and "red_acc / K" in k.source
    assert "if GEMV == 2 and PRO_PASS:" in k.source
    run_and_check(node, feed, cfg, device, tol=TOL[dtype], kernel=k)


def test_rms_norm_prologue_dual_gate_up_and_squares_as_a_product(device):
    """The gate/up GEMM (two accumulators) after ``post_attention_layernorm``, squares written ``x * x``."""
    dtype, inter, k = torch.bfloat16, 24, 96
    b = Builder()
    h = b.input("h", (1, 1, k), dtype)
    g = b.input("g", (k,), dtype)
    w = b.input("w", (2 * inter, k), dtype)
    x = b.call("reshape", rms_norm(b, h, g, square="mul"), (1, k))
    mm = b.call("mm", x, b.call("permute", w, (1, 0)))
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, inter)), b.call("slice", mm, 1, inter, 2 * inter),
               overload="Tensor")
    node = fused_node(b, [y], "gemm")
    feed = {"h": rand(1, 1, k, dtype=dtype), "g": rand(k, dtype=dtype), "w": rand(2 * inter, k, dtype=dtype)}
    run_and_check(node, feed, dict(GEMV, BLOCK_K=32), device, tol=TOL[dtype])
    run_and_check(node, feed, dict(GEMV, BLOCK_K=32, GEMV=2), device, tol=TOL[dtype])


def test_prologue_problem_never_splits_k(device):
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import kernel_for

    b, y, feed = norm_linear(torch.bfloat16, 1, 64, 16)
    k = kernel_for(fused_node(b, [y], "gemm"))
    p = k.problem({})
    assert p["prologue"] == 1
    dev = DeviceInfo(kind="cuda", name="test", capability=(9, 0), sm_count=132, smem_per_block=232448)
    for m in (1, 16, 64):
        assert k.space.default_config(dict(p, M=m), dev)["SPLIT_K"] == 1
    assert "a row-scale prologue reduces whole rows in one program" in k.space.violations(
        dict(BASE, GROUP_M=1, SPLIT_K=2), p, dev)
    with pytest.raises(ValueError, match="SPLIT_K = 1"):
        k.compile(dict(BASE, BLOCK_K=16, SPLIT_K=2))(*[feed[v.node.name].to(device) for v in k.node.inputs])


def _why(b, outputs) -> str:
    from braze.compiler.codegen.triton import why_not

    return why_not("gemm", fused_node(b, outputs, "gemm").attr("graph"), "cuda")


def test_declines_what_does_not_factor_out():
    # LayerNorm: the mean is subtracted, not a factor
    b = Builder()
    h = b.input("h", (1, 32), F32)
    w = b.input("w", (16, 32), F32)
    mu = b.call("mean", h, [-1], True, overload="dim")
    x = b.call("sub", h, mu, overload="Tensor")
    assert "through sub" in _why(b, [b.call("mm", x, b.call("permute", w, (1, 0)))])
    # the normalised row is also an output of the group
    b, y, _ = norm_linear(F32, 1, 32, 16)
    normed = y.node.args[0]
    assert "read outside the GEMM's A operand" in _why(b, [y, normed])
    # a reduction over the rows, not along them
    b = Builder()
    h = b.input("h", (4, 32), F32)
    w = b.input("w", (16, 32), F32)
    s = b.call("mean", h, [0], True, overload="dim")
    assert "reduces the last dim only" in _why(b, [b.call("mm", b.call("mul", h, s, overload="Tensor"),
                                                            b.call("permute", w, (1, 0)))])


def test_row_scale_analysis_finds_the_factor():
    from braze.compiler.codegen.triton.row_scale import row_scale

    b, y, _ = norm_linear(torch.bfloat16, 1, 64, 16)
    node = fused_node(b, [y], "gemm")
    sub = node.attr("graph")
    mm = next(n for n in sub.nodes if n.op == "mm")
    rs = row_scale(sub, mm, mm.args[0], 64)
    assert rs.factor.op == "rsqrt" and rs.reduction.op == "mean" and rs.operand.node.op == "pow"
    assert [v.op for v in rs.views] == ["reshape"]
    with pytest.raises(Unsupported):
        row_scale(sub, mm, mm.args[0], 32)


@pytest.mark.parametrize("residual", [False, True], ids=["lm-head", "residual"])
def test_split_prologue_runs_the_norm_kernel_then_the_library(residual, device):
    """The fallback candidate of a prologue group: the norm's reduction kernel, then
    the GEMM (and its epilogue) through the library; equal to the group in float64."""
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton.split_prologue import split_kernel
    from tests.codegen.triton_helpers import reference

    b, y, feed = norm_linear(torch.bfloat16, 2, 64, 24, residual=residual)
    node = fused_node(b, [y], "gemm")
    k = split_kernel(node)
    assert k is not None and k.name.startswith("split_") and k.prologue.gen.kind == "reduction"
    assert [n.op for n in k.rest.compute_nodes if n.op != "permute"] == ["reshape", "mm"] + (["add"] if residual
                                                                                             else [])
    xs = [feed[v.node.name].to(device) for v in node.inputs]
    out = k.compile(k.space.default_config(k.problem({}), device_info(device)))(*xs)
    (want,) = reference(node, [x.cpu() for x in xs])
    want = want.to(torch.bfloat16).double()
    scale = max(1.0, float(want.abs().max()))      # bf16 products of 64 terms: the tolerance scales with them
    torch.testing.assert_close(out.cpu().double(), want, rtol=2e-2, atol=2e-2 * scale)
    plain = Builder()
    x, w = plain.input("x", (2, 64)), plain.input("w", (64, 24))
    assert split_kernel(fused_node(plain, [plain.call("mm", x, w)], "gemm")) is None


def test_rms_norm_prologue_of_an_int8_projection(device):
    """Weight-only int8 decode: input_layernorm folded into the int8 QKV GEMV (the norm's
    factor and the per-channel scales both applied after the K loop)."""
    from braze.compiler.quantize import quantize_weight

    dtype, k, n = torch.bfloat16, 96, 40
    q, s = quantize_weight(rand(n, k, dtype=dtype), 8)[:2]
    b = Builder()
    h = b.input("h", (1, 1, k), dtype)
    g = b.input("g", (k,), dtype)
    qi = b.input("q", (n, k), torch.int8)
    si = b.input("s", (n,), s.dtype)
    x = b.call("reshape", rms_norm(b, h, g), (1, k))
    y = b.call("quant_linear", x, qi, si, None, None, bits=8, group_size=0)
    node = fused_node(b, [y], "gemm")
    feed = {"h": rand(1, 1, k, dtype=dtype), "g": rand(k, dtype=dtype), "q": q, "s": s}
    for cfg in (dict(GEMV, BLOCK_K=32), dict(GEMV, BLOCK_K=32, PRO_PASS=1), BASE):
        run_and_check(node, feed, cfg, device, tol=TOL[dtype])


def test_rms_norm_prologue_of_an_int4_projection(device):
    """Weight-only int4 (groups of 32): the norm folded into the GEMV, its squares per element in
    the K loop or in a pass of their own (``PRO_PASS``), a K loop of several groups a block."""
    from braze.compiler.quantize import quantize_weight

    dtype, k, n, group = torch.bfloat16, 128, 24, 32
    q, s, z = quantize_weight(rand(n, k, dtype=dtype), 4, group)
    b = Builder()
    h = b.input("h", (1, 1, k), dtype)
    g = b.input("g", (k,), dtype)
    x = b.call("reshape", rms_norm(b, h, g), (1, k))
    y = b.call("quant_linear", x, b.input("q", (n, k // 2), torch.uint8), b.input("s", (n, k // group), dtype),
               b.input("z", (n, k // group), dtype), None, bits=4, group_size=group)
    node = fused_node(b, [y], "gemm")
    feed = {"h": rand(1, 1, k, dtype=dtype), "g": rand(k, dtype=dtype), "q": q, "s": s, "z": z}
    for cfg in (dict(GEMV, BLOCK_K=64), dict(GEMV, BLOCK_K=64, PRO_PASS=1), dict(GEMV, BLOCK_K=32, PRO_PASS=1),
                dict(GEMV, BLOCK_K=64, RUN_SCALE=1), dict(GEMV, BLOCK_K=32, PRO_PASS=1, RUN_SCALE=1)):
        run_and_check(node, feed, cfg, device, tol=TOL[dtype])


@pytest.mark.parametrize("bits", [8, 4], ids=["int8", "int4"])
def test_split_prologue_of_a_quantized_head_runs_the_template(bits, device, monkeypatch):
    """Quantized weights: the split candidate's GEMM is the template's GEMV (no prologue) at
    its default config for the shape, not the library (which dequantizes the whole matrix
    each call); equal to the group in float64, and keyed apart from a library split."""
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton.split_prologue import split_kernel
    from braze.compiler.quantize import quantize_weight
    from tests.codegen.triton_helpers import reference

    dtype, k, n, group = torch.bfloat16, 128, 40, 32
    q, s, z = quantize_weight(rand(n, k, dtype=dtype), bits, group if bits == 4 else 0)[:3]
    b = Builder()
    h = b.input("h", (1, 1, k), dtype)
    g = b.input("g", (k,), dtype)
    x = b.call("reshape", rms_norm(b, h, g), (1, k))
    if bits == 8:
        y = b.call("quant_linear", x, b.input("q", (n, k), torch.int8), b.input("s", (n,), s.dtype), None, None,
                   bits=8, group_size=0)
        feed = {"h": rand(1, 1, k, dtype=dtype), "g": 1 + 0.1 * rand(k, dtype=dtype), "q": q, "s": s}
    else:
        y = b.call("quant_linear", x, b.input("q", (n, k // 2), torch.uint8), b.input("s", (n, k // group), dtype),
                   b.input("z", (n, k // group), dtype), None, bits=4, group_size=group)
        feed = {"h": rand(1, 1, k, dtype=dtype), "g": 1 + 0.1 * rand(k, dtype=dtype), "q": q, "s": s, "z": z}
    node = fused_node(b, [y], "gemm")
    dev = device_info(device)
    assert split_kernel(node) is None       # the template's config needs the device
    kern = split_kernel(node, dev)
    assert kern is not None and kern.rest_kernel is not None and kern.rest_kernel.gen.kind == "gemm"
    assert "prologue" not in kern.rest_kernel.problem({})
    xs = [feed[v.node.name].to(device) for v in node.inputs]
    from braze.compiler.codegen.triton import split_prologue

    def no_library(*a, **k):
        raise AssertionError("the quantized GEMM ran through the library")
    monkeypatch.setattr(split_prologue, "interpret", no_library)
    run = kern.compile(kern.space.default_config(kern.problem({}), dev))
    out = run(*xs)
    (want,) = reference(node, [x.cpu() for x in xs])
    want = want.to(dtype).double()
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(out.cpu().double(), want, rtol=2e-2, atol=2e-2 * scale)
    torch.testing.assert_close(run(*xs).cpu(), out.cpu(), rtol=0, atol=0)    # the compiled GEMV, reused
    library = type(kern)(node, kern.prologue, kern.pre_slots, kern.rest, kern.rest_operands)
    assert library.key() != kern.key()
