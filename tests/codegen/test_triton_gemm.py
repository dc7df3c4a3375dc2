"""GEMM Triton kernels with generated epilogues against the float64 reference."""
from __future__ import annotations

import pytest
import torch

from braze.ir import Builder
from braze.ir.types import dim_mul
from tests.codegen.triton_helpers import fused_node, rand, run_and_check

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

F32 = torch.float32
BASE = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "num_warps": 4, "num_stages": 1, "SPLIT_K": 1,
        "TMA": 0, "PERSISTENT": 0, "GEMV": 0}
SPLIT = dict(BASE, BLOCK_K=16, SPLIT_K=3)
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (2e-2, 2e-2)}


def linear(b, x, w, bias=None):
    """HF nn.Linear after lowering: permute the [out, in] weight, mm or addmm."""
    wt = b.call("permute", w, (1, 0))
    return b.call("addmm", bias, x, wt) if bias is not None else b.call("mm", x, wt)


@DTYPES
@pytest.mark.parametrize("cfg", [BASE, SPLIT], ids=["tiles", "splitk"])
def test_addmm_bias_gelu_transposed_weight(dtype, cfg, device):
    b = Builder()
    x = b.input("x", ("s0", 40), dtype)
    w = b.input("w", (50, 40), dtype)
    bias = b.input("bias", (50,), dtype)
    h = linear(b, x, w, bias)
    g = b.call("gelu", h)
    node = fused_node(b, [g, h], "gemm")    # two outputs: pre- and post-activation
    feed = {"x": rand(37, 40, dtype=dtype), "w": rand(50, 40, dtype=dtype), "bias": rand(50, dtype=dtype)}
    run_and_check(node, feed, cfg, device, tol=TOL[dtype])


@DTYPES
def test_mm_scale_residual_add_cast_with_reshape(dtype, device):
    """o_proj-like: [B, S, K] @ W^T viewed back as [B, S, N], scaled, + residual."""
    b = Builder()
    x = b.input("x", (2, "s0", 48), dtype)
    w = b.input("w", (24, 48), dtype)
    res = b.input("res", (2, "s0", 24), dtype)
    s0 = x.type.shape[1]
    h = linear(b, b.call("reshape", x, (dim_mul(2, s0), 48)), w)
    y = b.call("add", b.call("mul", b.call("reshape", h, (2, s0, 24)), 0.5, overload="Tensor"), res,
               overload="Tensor")
    yf = b.call("_to_copy", y, dtype=F32)
    node = fused_node(b, [y, yf], "gemm")
    feed = {"x": rand(2, 9, 48, dtype=dtype), "w": rand(24, 48, dtype=dtype), "res": rand(2, 9, 24, dtype=dtype)}
    run_and_check(node, feed, dict(BASE, GROUP_M=1), device, tol=TOL[dtype])


@DTYPES
@pytest.mark.parametrize("cfg", [BASE, dict(SPLIT, SPLIT_K=2)], ids=["tiles", "splitk"])
def test_dual_silu_gate_times_up_on_concatenated_weight(dtype, cfg, device):
    """Llama MLP as one GEMM on [Wg; Wu]: silu(mm[:, :I]) * mm[:, I:] in one kernel (two accumulators)."""
    from braze.compiler.codegen.triton import kernel_for

    inter = 40
    b = Builder()
    x = b.input("x", (2, "s0", 32), dtype)
    wgu = b.input("wgu", (2 * inter, 32), dtype)
    s0 = x.type.shape[1]
    mm = linear(b, b.call("reshape", x, (dim_mul(2, s0), 32)), wgu)
    gate = b.call("slice", mm, 1, 0, inter)
    up = b.call("slice", mm, 1, inter, 9223372036854775807)
    y = b.call("reshape", b.call("mul", b.call("silu", gate), up, overload="Tensor"), (2, s0, inter))
    node = fused_node(b, [y], "gemm")
    k = kernel_for(node)
    assert "acc1 = tl.dot(a, b1, acc1" in k.source           # gate and up share each A tile
    feed = {"x": rand(2, 11, 32, dtype=dtype), "wgu": rand(2 * inter, 32, dtype=dtype)}
    run_and_check(node, feed, cfg, device, tol=TOL[dtype], kernel=k)


def test_dual_epilogue_with_cat_of_weights_in_the_group(device):
    from braze.compiler.codegen.triton import kernel_for

    inter = 24
    b = Builder()
    x = b.input("x", ("s0", 32), F32)
    wg, wu = b.input("wg", (inter, 32), F32), b.input("wu", (inter, 32), F32)
    mm = linear(b, x, b.call("cat", (wg, wu), 0))
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, inter)), b.call("slice", mm, 1, inter, 2 * inter),
               overload="Tensor")
    node = fused_node(b, [y], "gemm")
    k = kernel_for(node)
    assert "tl.where" not in k.source.split("for k0")[1].split("if SPLIT_K")[0]  # cat branches pruned statically
    run_and_check(node, {"x": rand(19, 32), "wg": rand(inter, 32), "wu": rand(inter, 32)}, BASE, device, kernel=k)


@pytest.mark.parametrize("cfg", [BASE, SPLIT], ids=["tiles", "splitk"])
def test_bmm_attention_scores_with_permuted_operands(cfg, device):
    """q @ k^T with heads split and transposed by views, * scale + mask."""
    b = Builder()
    q = b.input("q", (2, "s0", 3, 16), F32)
    k = b.input("k", (2, "s0", 3, 16), F32)
    mask = b.input("mask", (2, 1, "s0", "s0"), F32)
    s0 = q.type.shape[1]
    qv = b.call("reshape", b.call("permute", q, (0, 2, 1, 3)), (6, s0, 16))
    kv = b.call("reshape", b.call("permute", k, (0, 2, 3, 1)), (6, 16, s0))
    s = b.call("reshape", b.call("bmm", qv, kv), (2, 3, s0, s0))
    out = b.call("add", b.call("mul", s, 0.25, overload="Tensor"), mask, overload="Tensor")
    node = fused_node(b, [out], "gemm")
    feed = {"q": rand(2, 11, 3, 16), "k": rand(2, 11, 3, 16), "mask": rand(2, 1, 11, 11)}
    run_and_check(node, feed, cfg, device)


@pytest.mark.parametrize("bt,m", [(4, 1), (1, 4), (1, 1)])
def test_bmm_and_mm_with_a_dim_of_one(bt, m, device):
    """A decode step's GEMMs: one token (M = 1), a batch of one: the dims of extent 1 drop out
    of the tile index (the batched case raised IndexError in gemm.py, the plain one failed
    tl.dot's shape check)."""
    b = Builder()
    x = b.input("x", (bt, m, 24))
    w = b.input("w", (bt, 24, 40))
    node = fused_node(b, [b.call("mul", b.call("bmm", x, w), 0.5, overload="Tensor")], "gemm")
    run_and_check(node, {"x": rand(bt, m, 24), "w": rand(bt, 24, 40)}, BASE, device)
    b = Builder()
    x = b.input("x", (m, 24))
    w = b.input("w", (40, 24))
    node = fused_node(b, [b.call("relu", b.call("mm", x, b.call("permute", w, (1, 0))))], "gemm")
    run_and_check(node, {"x": rand(m, 24), "w": rand(40, 24)}, BASE, device)


def test_bmm_outer_product_with_k_of_one(device):
    """Rotary's ``inv_freq[:, None] @ positions[None, :]`` per batch: K = 1 drops out of
    the tile index; the tile's columns past K must not repeat the one product (on the GPU
    the sum over BLOCK_K columns gave 16x the result)."""
    b = Builder()
    f = b.input("f", (2, 8, 1))
    p = b.input("p", (2, 1, 7))
    node = fused_node(b, [b.call("bmm", f, p)], "gemm")
    run_and_check(node, {"f": rand(2, 8, 1), "p": rand(2, 1, 7)}, dict(BASE, BLOCK_K=16), device)
    run_and_check(node, {"f": rand(2, 8, 1), "p": rand(2, 1, 7)}, dict(BASE, BLOCK_K=16, SPLIT_K=1, TMA=1), device)


def test_bmm_with_expanded_kv_heads(device):
    """GQA: one K head expanded over two Q heads (stride-0 batch dim in B)."""
    b = Builder()
    p = b.input("p", (4, 9, 9), F32)          # [B*Hq, S, S] probabilities
    v = b.input("v", (2, 1, 9, 16), F32)      # [B, Hkv, S, D]
    ve = b.call("reshape", b.call("expand", v, (2, 2, 9, 16)), (4, 9, 16))
    o = b.call("bmm", p, ve)
    node = fused_node(b, [b.call("_to_copy", o, dtype=torch.float16)], "gemm")
    run_and_check(node, {"p": torch.rand(4, 9, 9), "v": rand(2, 1, 9, 16)}, BASE, device, tol=(1e-2, 1e-2))


def test_odd_sizes_and_non_contiguous_activation(device):
    b = Builder()
    x = b.input("x", (33, 47), F32)
    w = b.input("w", (47, 29), F32)
    node = fused_node(b, [b.call("relu", b.call("mm", x, w))], "gemm")
    xin = rand(47, 33).t()
    for cfg in (BASE, dict(BASE, BLOCK_M=32, BLOCK_N=16, BLOCK_K=64, GROUP_M=1), dict(SPLIT, SPLIT_K=4)):
        run_and_check(node, {"x": xin, "w": rand(47, 29)}, cfg, device)


def test_default_config_and_symbolic_m(device):
    from braze.compiler.codegen.triton import kernel_for

    b = Builder()
    x = b.input("x", ("s0", 64), torch.bfloat16)
    w = b.input("w", (48, 64), torch.bfloat16)
    node = fused_node(b, [b.call("silu", linear(b, x, w))], "gemm")
    k = kernel_for(node)
    for m in (1, 5, 40):
        run_and_check(node, {"x": rand(m, 64, dtype=torch.bfloat16), "w": rand(48, 64, dtype=torch.bfloat16)}, None,
                      device, tol=TOL[torch.bfloat16], kernel=k)


def test_declines_computed_operand_and_two_gemms():
    from braze.compiler.codegen.triton import supports, why_not

    b = Builder()
    x = b.input("x", (8, 16), F32)
    w = b.input("w", (16, 16), F32)
    node = fused_node(b, [b.call("mm", b.call("exp", x), w)], "gemm")
    assert "computed by exp" in why_not("gemm", node.attr("graph"), "cuda")
    b = Builder()
    x = b.input("x", (8, 16), F32)
    w = b.input("w", (16, 16), F32)
    node = fused_node(b, [b.call("mm", b.call("mm", x, w), w)], "gemm")
    assert not supports("gemm", node.attr("graph"), "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_tma_path_for_plain_views_and_pointer_fallback(dtype, device):
    """Row-major A and transposed or row-major B go through TMA descriptors (zero-filled edges);
    operands that are not such views (unaligned strides) fall back to pointer loads."""
    from braze.compiler.codegen.triton import kernel_for

    inter = 40
    cfg = dict(BASE, TMA=1)
    b = Builder()
    x = b.input("x", ("s0", 32), dtype)
    wgu = b.input("wgu", (2 * inter, 32), dtype)
    bias = b.input("bias", (2 * inter,), dtype)
    mm = b.call("addmm", bias, x, b.call("permute", wgu, (1, 0)))
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, inter)), b.call("slice", mm, 1, inter, 2 * inter),
               overload="Tensor")
    node = fused_node(b, [y], "gemm")
    k = kernel_for(node)
    assert "_tma(" in k.source and "b_desc.load" in k.source
    feed = {"x": rand(37, 32, dtype=dtype), "wgu": rand(2 * inter, 32, dtype=dtype), "bias": rand(2 * inter, dtype=dtype)}
    for c in (cfg, dict(cfg, SPLIT_K=2, BLOCK_K=16)):
        run_and_check(node, feed, c, device, tol=TOL[dtype], kernel=k)
        assert k.module()._LAST_PATH[0] == "tma"
    b = Builder()
    x = b.input("x", ("s0", 48), dtype)
    w = b.input("w", (48, 24), dtype)       # B row-major [K, N]
    node = fused_node(b, [b.call("relu", b.call("mm", x, w))], "gemm")
    k = kernel_for(node)
    run_and_check(node, {"x": rand(21, 48, dtype=dtype), "w": rand(48, 24, dtype=dtype)}, cfg, device,
                  tol=TOL[dtype], kernel=k)
    assert k.module()._LAST_PATH[0] == "tma"
    # a column slice of a wider tensor: row stride 47 elements is not 16-byte aligned -> pointer kernel
    # (made on the device: .to() would copy the view into a contiguous tensor)
    run_and_check(node, {"x": rand(21, 47 + 48, dtype=dtype).to(device)[:, :48], "w": rand(48, 24, dtype=dtype)},
                  cfg, device,
                  tol=TOL[dtype], kernel=k)
    assert k.module()._LAST_PATH[0] == "pointer"


PERSISTENT = dict(BASE, PERSISTENT=1)


@DTYPES
def test_persistent_programs_loop_over_tiles(dtype, device):
    """A persistent grid (three programs under the interpreter) covers every tile of a
    ragged M x N (7 x 4 tiles here), two outputs and a bias, with pointer or TMA loads."""
    from braze.compiler.codegen.triton import kernel_for

    b = Builder()
    x = b.input("x", ("s0", 40), dtype)
    w = b.input("w", (120, 40), dtype)
    bias = b.input("bias", (120,), dtype)
    h = linear(b, x, w, bias)
    node = fused_node(b, [b.call("gelu", h), h], "gemm")
    k = kernel_for(node)
    assert "for tile in range(tl.program_id(0), tiles * Bt, tl.num_programs(0))" in k.source
    feed = {"x": rand(101, 40, dtype=dtype), "w": rand(120, 40, dtype=dtype), "bias": rand(120, dtype=dtype)}
    for cfg in (PERSISTENT, dict(PERSISTENT, TMA=1, GROUP_M=4)):
        run_and_check(node, feed, cfg, device, tol=TOL[dtype], kernel=k)


def test_persistent_bmm_and_dual_epilogue(device):
    """Tiles of every batch of a bmm, and the two-accumulator gate/up epilogue."""
    b = Builder()
    q = b.input("q", (5, 19, 16), F32)
    kt = b.input("kt", (5, 16, 23), F32)
    node = fused_node(b, [b.call("mul", b.call("bmm", q, kt), 0.5, overload="Tensor")], "gemm")
    run_and_check(node, {"q": rand(5, 19, 16), "kt": rand(5, 16, 23)}, PERSISTENT, device)
    inter = 40
    b = Builder()
    x = b.input("x", ("s0", 32), F32)
    wgu = b.input("wgu", (2 * inter, 32), F32)
    mm = linear(b, x, wgu)
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, inter)), b.call("slice", mm, 1, inter, 2 * inter),
               overload="Tensor")
    run_and_check(fused_node(b, [y], "gemm"), {"x": rand(50, 32), "wgu": rand(2 * inter, 32)}, PERSISTENT, device)


def test_persistent_config_never_splits_k():
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton.gemm import SPACE

    problem = {"M": 64, "N": 64, "K": 4096, "B": 1, "nacc": 1, "elt": 2}
    dev = DeviceInfo(kind="cuda", name="test", capability=(9, 0), sm_count=132)
    ok = dict(BASE, GROUP_M=4, PERSISTENT=1)
    assert SPACE.violations(ok, problem, dev) == []
    assert SPACE.violations(dict(ok, SPLIT_K=4), problem, dev) == ["persistent programs do not split K"]


GEMV = dict(BASE, BLOCK_M=1, BLOCK_N=4, BLOCK_K=64, GROUP_M=1, GEMV=1)


@DTYPES
@pytest.mark.parametrize("rows,cfg", [(1, GEMV), (3, dict(GEMV, BLOCK_M=4, BLOCK_N=8)),
                                      (1, dict(GEMV, BLOCK_K=16, SPLIT_K=3)), (1, dict(GEMV, GEMV=2)),
                                      (3, dict(GEMV, BLOCK_M=4, BLOCK_N=8, GEMV=2)),
                                      (1, dict(GEMV, BLOCK_K=16, SPLIT_K=3, GEMV=2))],
                         ids=["m1", "m3", "m1-splitk", "runs-m1", "runs-m3", "runs-m1-splitk"])
def test_gemv_rows_with_residual_epilogue(dtype, rows, cfg, device):
    """Decode rows through the multiply-reduce forms (GEMV=1, and the runs form GEMV=2):
    o_proj + residual on a transposed weight, N not a multiple of BLOCK_N, K not a multiple
    of BLOCK_K."""
    b = Builder()
    x = b.input("x", ("s0", 72), dtype)
    w = b.input("w", (30, 72), dtype)
    res = b.input("res", ("s0", 30), dtype)
    node = fused_node(b, [b.call("add", linear(b, x, w), res, overload="Tensor")], "gemm")
    feed = {"x": rand(rows, 72, dtype=dtype), "w": rand(30, 72, dtype=dtype), "res": rand(rows, 30, dtype=dtype)}
    run_and_check(node, feed, cfg, device, tol=TOL[dtype])


def test_gemv_dual_silu_gate_times_up(device):
    """The gate/up dual epilogue (two accumulators) in the multiply-reduce form, bf16, one row."""
    from braze.compiler.codegen.triton import kernel_for

    dtype, inter = torch.bfloat16, 24
    b = Builder()
    x = b.input("x", ("s0", 96), dtype)
    wgu = b.input("wgu", (2 * inter, 96), dtype)
    mm = linear(b, x, wgu)
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, inter)), b.call("slice", mm, 1, inter, 2 * inter),
               overload="Tensor")
    node = fused_node(b, [y], "gemm")
    k = kernel_for(node)
    assert "acc1 += tl.reduce(a.to(tl.float32)[:, None, :] * b1.to(tl.float32)[None, :, :], 2, _add)" in k.source
    feed = {"x": rand(1, 96, dtype=dtype), "wgu": rand(2 * inter, 96, dtype=dtype)}
    run_and_check(node, feed, dict(GEMV, BLOCK_K=32), device, tol=TOL[dtype], kernel=k)
    run_and_check(node, feed, dict(GEMV, BLOCK_K=32, GEMV=2), device, tol=TOL[dtype], kernel=k)


def test_gemv_space_defaults_and_constraints():
    """Up to four rows on a GPU default to GEMV (4 columns, K chunks up to 1024, no split);
    narrow tiles are only valid with GEMV, and GEMV never with TMA or persistent programs."""
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton.gemm import SPACE

    dev = DeviceInfo(kind="cuda", name="test", capability=(9, 0), sm_count=132, smem_per_block=232448)
    one = {"M": 1, "N": 8192, "K": 2048, "B": 1, "nacc": 2, "elt": 2}
    cfg = SPACE.default_config(one, dev)
    assert (cfg["GEMV"], cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["SPLIT_K"]) == (1, 1, 4, 1024, 1)
    three = SPACE.default_config(dict(one, M=3), dev)
    assert (three["BLOCK_M"], three["BLOCK_K"]) == (4, 512)
    assert SPACE.default_config(dict(one, M=8), dev)["GEMV"] == 0     # tensor cores from 8 rows on
    assert SPACE.default_config(one, DeviceInfo(kind="cpu", name="cpu"))["GEMV"] == 0
    assert "tl.dot tiles are at least 16 x 16 x 16 (narrower ones only with GEMV)" in SPACE.violations(
        dict(cfg, GEMV=0), one, dev)
    assert SPACE.violations(dict(cfg, TMA=1), one, dev) == ["GEMV: at most 8 rows, pointer loads, one program per tile"]
    assert "GEMV: the multiply-reduce tile fits the registers (128 fp32 per thread)" in SPACE.violations(
        dict(cfg, BLOCK_N=64), one, dev)


def _int8_weight(n, k, dtype):
    from braze.compiler.quantize import quantize_weight

    return quantize_weight(rand(n, k, dtype=dtype), 8)


@DTYPES
@pytest.mark.parametrize("rows,cfg", [(1, GEMV), (1, dict(GEMV, BLOCK_K=16, SPLIT_K=3)), (37, BASE),
                                      (37, dict(SPLIT, SPLIT_K=2))], ids=["gemv", "gemv-splitk", "tiles", "splitk"])
def test_int8_quant_linear_with_bias_and_residual_epilogue(dtype, rows, cfg, device):
    """quant_linear on int8 per-channel weights as the GEMM of a group: the int8 tile is
    loaded in the K loop, the product scaled per output column in the epilogue, then the
    bias and the residual add; no dequantized weight exists."""
    from braze.compiler.codegen.triton import kernel_for

    qw = _int8_weight(30, 72, dtype)
    b = Builder()
    x = b.input("x", ("s0", 72), dtype)
    q = b.input("q", (30, 72), torch.int8)
    s = b.input("s", (30,), qw[1].dtype)
    bias = b.input("bias", (30,), dtype)
    res = b.input("res", ("s0", 30), dtype)
    y = b.call("quant_linear", x, q, s, None, bias, bits=8, group_size=0)
    node = fused_node(b, [b.call("add", y, res, overload="Tensor")], "gemm")
    k = kernel_for(node)
    assert "tl.dot" in k.source and " = acc0 * " in k.source     # scaled once per output, after the K loop
    feed = {"x": rand(rows, 72, dtype=dtype), "q": qw[0], "s": qw[1], "bias": rand(30, dtype=dtype),
            "res": rand(rows, 30, dtype=dtype)}
    run_and_check(node, feed, cfg, device, tol=TOL[dtype], kernel=k)


def test_int8_quant_linear_dual_gate_up_gemv(device):
    """A gate/up pair quantized and concatenated (fold_dequantize's horizontal merge):
    silu(y[:, :I]) * y[:, I:] with each half scaled by its own columns' scales."""
    dtype, inter = torch.bfloat16, 24
    q, s = _int8_weight(2 * inter, 64, dtype)[:2]
    b = Builder()
    x = b.input("x", ("s0", 64), dtype)
    qi = b.input("q", (2 * inter, 64), torch.int8)
    si = b.input("s", (2 * inter,), s.dtype)
    y = b.call("quant_linear", x, qi, si, None, None, bits=8, group_size=0)
    out = b.call("mul", b.call("silu", b.call("slice", y, 1, 0, inter)), b.call("slice", y, 1, inter, 2 * inter),
                 overload="Tensor")
    node = fused_node(b, [out], "gemm")
    for rows, cfg in ((1, dict(GEMV, BLOCK_K=32)), (20, BASE)):
        run_and_check(node, {"x": rand(rows, 64, dtype=dtype), "q": q, "s": s}, cfg, device, tol=TOL[dtype])


def _int4_weight(n, k, group, dtype):
    from braze.compiler.quantize import quantize_weight

    return quantize_weight(rand(n, k, dtype=dtype), 4, group)


def _int4_group(dtype, rows_sym, k, n, group, bias=False):
    """``quant_linear(x, q, s, z) (+ bias) + res`` on int4 weights (groups of ``group``)."""
    b = Builder()
    x = b.input("x", (rows_sym, k), dtype)
    qi = b.input("q", (n, k // 2), torch.uint8)
    si = b.input("s", (n, k // group), dtype)
    zi = b.input("z", (n, k // group), dtype)
    bi = b.input("bias", (n,), dtype) if bias else None
    res = b.input("res", (rows_sym, n), dtype)
    y = b.call("quant_linear", x, qi, si, zi, bi, bits=4, group_size=group)
    return b, b.call("add", y, res, overload="Tensor")


@DTYPES
@pytest.mark.parametrize("rows,cfg", [(1, dict(GEMV, BLOCK_K=32, BLOCK_N=8)), (3, dict(GEMV, BLOCK_M=4, BLOCK_K=64)),
                                      (1, dict(GEMV, BLOCK_K=64, SPLIT_K=3)), (2, dict(GEMV, BLOCK_M=2, BLOCK_K=128)),
                                      (1, dict(GEMV, BLOCK_K=256, SPLIT_K=1)), (37, dict(BASE, BLOCK_K=64)),
                                      (37, dict(SPLIT, BLOCK_K=32, SPLIT_K=2)),
                                      (1, dict(GEMV, BLOCK_K=128, BLOCK_N=8, RUN_SCALE=1)),
                                      (3, dict(GEMV, BLOCK_M=4, BLOCK_K=64, SPLIT_K=3, RUN_SCALE=1))],
                         ids=["gemv", "gemv-m3", "gemv-splitk", "gemv-groups-tail", "gemv-past-k", "tiles", "splitk",
                              "run-scale-tail", "run-scale-m3-splitk"])
def test_int4_quant_linear_with_bias_and_residual_epilogue(dtype, rows, cfg, device):
    """quant_linear on int4 group-wise weights (zero points, the chunked nibble layout) as
    the GEMM of a group: bytes loaded in the K loop, each K block dequantized with its
    group's scale and zero point in registers, then the bias and the residual add."""
    from braze.compiler.codegen.triton import kernel_for

    k, n, group = 192, 30, 64
    q, s, z = _int4_weight(n, k, group, dtype)
    b, out = _int4_group(dtype, "s0", k, n, group, bias=True)
    node = fused_node(b, [out], "gemm")
    kern = kernel_for(node)
    assert "_nibble(" in kern.source and "tl.dot(a_hi" in kern.source
    feed = {"x": rand(rows, k, dtype=dtype), "q": q, "s": s, "z": z, "bias": rand(n, dtype=dtype),
            "res": rand(rows, n, dtype=dtype)}
    run_and_check(node, feed, cfg, device, tol=TOL[dtype], kernel=kern)


def test_untuned_gemv_selection_times_the_alternates_of_each_weight_format():
    """On a GPU, one to four rows: the selection times the default and the data table's
    alternates (all valid, each once, the int4 ones in whole groups); more rows, or the CPU:
    the default alone."""
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton.gemm import GEMV_ALTERNATES, SPACE

    dev = DeviceInfo(kind="cuda", name="test", capability=(9, 0), sm_count=132, smem_per_block=232448)
    one = {"M": 1, "N": 16384, "K": 2048, "B": 1, "nacc": 2, "elt": 2}
    for fmt, p in (("float", one), ("int8", dict(one, bits=8)), ("int4", dict(one, group=128))):
        cfgs = SPACE.quick_configs(p, dev)
        assert cfgs[0] == SPACE.default_config(p, dev)
        # PRO_PASS alternates only where a norm is folded in as a prologue
        plain = [a for a in GEMV_ALTERNATES[fmt] if not a.get("PRO_PASS")]
        assert len(cfgs) == 1 + len(plain), (fmt, cfgs)
        with_norm = SPACE.quick_configs(dict(p, prologue=1), dev)
        assert len(with_norm) == 1 + len(GEMV_ALTERNATES[fmt])
        assert sum(c["PRO_PASS"] for c in with_norm) == len(GEMV_ALTERNATES[fmt]) - len(plain) >= 1
        assert len({tuple(c.items()) for c in cfgs}) == len(cfgs)
        assert all(SPACE.valid(c, p, dev) and c["GEMV"] for c in cfgs)
    assert {c["GEMV"] for c in SPACE.quick_configs(one, dev)} == {1, 2}
    assert all(c["BLOCK_K"] % 128 == 0 for c in SPACE.quick_configs(dict(one, group=128), dev))
    eight = dict(one, M=8)    # a batch-8 step: the tensor-core default, then the GEMV forms (quantized: runs)
    assert [c["GEMV"] for c in SPACE.quick_configs(eight, dev)] == [0, 1, 2]
    assert [c["GEMV"] for c in SPACE.quick_configs(dict(eight, group=128), dev)] == [0, 2]
    assert len(SPACE.quick_configs(dict(one, M=16), dev)) == 1
    assert len(SPACE.quick_configs(one, DeviceInfo(kind="cpu", name="cpu"))) == 1


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4"])
@pytest.mark.parametrize("rows", [1, 8])
def test_every_config_the_untuned_gpu_selection_times_runs_right(fmt, rows, device):
    """Each GEMV config the selection would time on an H100 (the default and the table's
    alternates, one and eight rows) computes the group correctly: the selection checks a
    candidate before timing it, but a table entry that could never run should not reach it."""
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import kernel_for

    h100 = DeviceInfo(kind="cuda", name="H100", capability=(9, 0), sm_count=132, smem_per_block=232448)
    dtype, n, k = torch.bfloat16, 24, 1024
    if fmt == "int4":
        b, out = _int4_group(dtype, "s0", k, n, 128)
        q, s, z = _int4_weight(n, k, 128, dtype)
        feed = {"q": q, "s": s, "z": z}
    else:
        b = Builder()
        x = b.input("x", ("s0", k), dtype)
        res = b.input("res", ("s0", n), dtype)
        if fmt == "int8":
            q8, s8 = _int8_weight(n, k, dtype)[:2]
            y = b.call("quant_linear", x, b.input("q", (n, k), torch.int8), b.input("s", (n,), s8.dtype), None, None,
                       bits=8, group_size=0)
            feed = {"q": q8, "s": s8}
        else:
            y = linear(b, x, b.input("w", (n, k), dtype))
            feed = {"w": rand(n, k, dtype=dtype)}
        out = b.call("add", y, res, overload="Tensor")
    node = fused_node(b, [out], "gemm")
    kern = kernel_for(node)
    feed.update(x=rand(rows, k, dtype=dtype), res=rand(rows, n, dtype=dtype))
    configs = kern.space.quick_configs(kern.problem({"s0": rows}), h100)
    assert len(configs) > 1
    for cfg in configs:
        run_and_check(node, feed, cfg, device, tol=TOL[dtype], kernel=kern)


def test_int4_fractional_zero_points_and_default_configs(device):
    """Zero points need not be integers (the format allows any); the default
    configuration of the problem (GEMV and tiles) runs."""
    dtype, k, n, group = torch.float16, 256, 24, 128
    q, s, z = _int4_weight(n, k, group, dtype)
    z = (z.float() + torch.rand(z.shape) - 0.5).to(dtype)
    b, out = _int4_group(dtype, "s0", k, n, group)
    node = fused_node(b, [out], "gemm")
    for rows in (1, 20):
        feed = {"x": rand(rows, k, dtype=dtype), "q": q, "s": s, "z": z, "res": rand(rows, n, dtype=dtype)}
        run_and_check(node, feed, None, device, tol=TOL[dtype])
    # each run's sum scaled once (RUN_SCALE): q - z in two adds keeps a fractional zero point
    feed = {"x": rand(1, k, dtype=dtype), "q": q, "s": s, "z": z, "res": rand(1, n, dtype=dtype)}
    run_and_check(node, feed, dict(GEMV, BLOCK_K=256, RUN_SCALE=1), device, tol=TOL[dtype])


def test_int4_quant_linear_dual_gate_up(device):
    """The concatenated int4 gate/up pair: silu(y[:, :I]) * y[:, I:], each half with its
    own rows of scales and zero points (the second accumulator at row offset I)."""
    dtype, inter, k, group = torch.bfloat16, 24, 64, 32
    q, s, z = _int4_weight(2 * inter, k, group, dtype)
    b = Builder()
    x = b.input("x", ("s0", k), dtype)
    qi = b.input("q", (2 * inter, k // 2), torch.uint8)
    si = b.input("s", (2 * inter, k // group), dtype)
    zi = b.input("z", (2 * inter, k // group), dtype)
    y = b.call("quant_linear", x, qi, si, zi, None, bits=4, group_size=group)
    out = b.call("mul", b.call("silu", b.call("slice", y, 1, 0, inter)), b.call("slice", y, 1, inter, 2 * inter),
                 overload="Tensor")
    node = fused_node(b, [out], "gemm")
    for rows, cfg in ((1, dict(GEMV, BLOCK_K=32)), (1, dict(GEMV, BLOCK_K=64, RUN_SCALE=1)), (20, dict(BASE, BLOCK_K=32))):
        run_and_check(node, {"x": rand(rows, k, dtype=dtype), "q": q, "s": s, "z": z}, cfg, device, tol=TOL[dtype])


def test_int4_space_and_launcher_keep_k_blocks_inside_a_group():
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import kernel_for
    from braze.compiler.codegen.triton.gemm import SPACE

    dev = DeviceInfo(kind="cuda", name="test", capability=(9, 0), sm_count=132, smem_per_block=232448)
    one = {"M": 1, "N": 3072, "K": 2048, "B": 1, "nacc": 1, "elt": 2, "group": 128}
    cfg = SPACE.default_config(one, dev)
    assert (cfg["GEMV"], cfg["BLOCK_K"], cfg["BLOCK_N"]) == (1, 2048, 4) and not SPACE.violations(cfg, one, dev)
    assert SPACE.default_config(dict(one, M=3), dev)["BLOCK_K"] == 512
    assert SPACE.default_config(dict(one, group=96), dev)["BLOCK_K"] == 32
    assert SPACE.default_config(dict(one, M=512, group=32), dev)["BLOCK_K"] == 32
    rule = "an int4 K block: a multiple of 32 channels inside one group (GEMV: or whole groups)"
    assert rule in SPACE.violations(dict(cfg, GEMV=0, BLOCK_N=16, BLOCK_K=256), dict(one, M=16), dev)
    assert rule in SPACE.violations(dict(cfg, BLOCK_K=16), one, dev)
    assert rule in SPACE.violations(dict(cfg, BLOCK_K=256), dict(one, group=96), dev)
    assert rule not in SPACE.violations(dict(cfg, BLOCK_K=256), one, dev)
    dtype, k, n, group = torch.float32, 128, 8, 64
    q, s, z = _int4_weight(n, k, group, dtype)
    b, out = _int4_group(dtype, 2, k, n, group)
    kern = kernel_for(fused_node(b, [out], "gemm"))
    with pytest.raises(ValueError, match="int4 K block 96 must be a multiple of 32 dividing the group size 64"):
        kern.compile(dict(GEMV, BLOCK_K=96))(rand(2, k), q, s, z, rand(2, n))
    with pytest.raises(ValueError, match="int4 K block 128"):
        kern.compile(dict(BASE, BLOCK_K=128))(rand(2, k), q, s, z, rand(2, n))


def test_int3_quant_linear_is_not_a_template_gemm():
    from braze.compiler.codegen.triton.indexing import Unsupported
    from braze.compiler.codegen.triton.gemm import Template

    b = Builder()
    x = b.input("x", ("s0", 64), torch.bfloat16)
    q = b.input("q", (16, 32), torch.uint8)
    s = b.input("s", (16, 4), torch.bfloat16)
    z = b.input("z", (16, 4), torch.bfloat16)
    y = b.call("quant_linear", x, q, s, z, None, bits=4, group_size=16)
    node = fused_node(b, [y], "gemm")
    with pytest.raises(Unsupported, match="group 16"):
        Template(node.attr("graph"))
