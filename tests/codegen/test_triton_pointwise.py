"""Pointwise Triton kernels against the float64 reference: the op table, dtypes,
broadcasting, strided operands, layout ops folded into indexing, several outputs."""
from __future__ import annotations

import pytest
import torch

from braze.ir import Builder
from braze.ir.types import dim_mul
from tests.codegen.triton_helpers import fused_node, rand, run_and_check

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

F32 = torch.float32
CFG = {"BLOCK_R": 4, "BLOCK_C": 16, "num_warps": 4}


def _pos(shape):
    return torch.rand(*shape) + 0.25


# (name, builder fn(b, x, y) -> value, input maker)
UNARY = ["exp", "exp2", "expm1", "sin", "cos", "tan", "tanh", "sinh", "cosh", "sigmoid", "silu", "mish", "erf", "erfc",
         "floor", "ceil", "trunc", "frac", "relu", "relu6", "hardsigmoid", "hardswish", "square", "neg", "abs",
         "sign", "asinh"]
POSITIVE = ["log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal", "acosh"]


@pytest.mark.parametrize("op", UNARY + POSITIVE + ["atanh"])
def test_unary_ops(op, device):
    b = Builder()
    x = b.input("x", (5, 37), F32)
    y = b.call(op, x)
    node = fused_node(b, [y], "pointwise")
    if op in POSITIVE:
        xin = _pos((5, 37)) + (1.0 if op == "acosh" else 0.0)
    elif op == "atanh":
        xin = torch.rand(5, 37) * 1.8 - 0.9
    else:
        xin = rand(5, 37, scale=2.0)
    xin[0, :4] = torch.tensor([0.0, 1e-3, -1e-3, 0.05])[: 4] * (0 if op in POSITIVE + ["atanh"] else 1) + \
        (xin[0, :4] if op in POSITIVE + ["atanh"] else 0)
    run_and_check(node, {"x": xin}, CFG, device)


BINARY = [
    ("add", dict(overload="Tensor", alpha=2)), ("sub", dict(overload="Tensor", alpha=0.5)), ("mul", dict(overload="Tensor")),
    ("div", dict(overload="Tensor")), ("div", dict(overload="Tensor_mode", rounding_mode="floor")),
    ("div", dict(overload="Tensor_mode", rounding_mode="trunc")), ("maximum", {}), ("minimum", {}),
    ("fmod", dict(overload="Tensor")), ("remainder", dict(overload="Tensor")),
    ("floor_divide", {}),
]


@pytest.mark.parametrize("op,kw", BINARY, ids=[f"{o}-{k.get('rounding_mode', k.get('overload', ''))}" for o, k in BINARY])
def test_binary_ops_with_broadcast(op, kw, device):
    b = Builder()
    x = b.input("x", (3, 5, 37), F32)
    y = b.input("y", (5, 1), F32)
    z = b.call(op, x, y, **kw)
    node = fused_node(b, [z], "pointwise")
    yin = rand(5, 1)
    yin = torch.where(yin.abs() < 0.2, torch.full_like(yin, 0.7), yin)
    run_and_check(node, {"x": rand(3, 5, 37, scale=3.0), "y": yin}, CFG, device)


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1, -0.5, 2.5, 4.0])
def test_pow_scalar_exponents(exponent, device):
    b = Builder()
    x = b.input("x", (4, 33), F32)
    y = b.call("pow", x, exponent, overload="Tensor_Scalar")
    node = fused_node(b, [y], "pointwise")
    xin = _pos((4, 33)) if exponent not in (2, 3, -1, 4.0) else rand(4, 33)
    if exponent == -1:
        xin = torch.where(xin.abs() < 0.2, torch.full_like(xin, 0.5), xin)
    run_and_check(node, {"x": xin}, CFG, device)


def test_pow_scalar_base_and_clamps(device):
    b = Builder()
    x = b.input("x", (4, 33), F32)
    y = b.call("pow", 10000.0, x, overload="Scalar")
    c = b.call("clamp", x, -0.5, 0.75)
    lo = b.call("clamp_min", x, -0.25)
    hi = b.call("clamp_max", x, 0.25)
    ht = b.call("hardtanh", x, -0.3, 0.3)
    node = fused_node(b, [y, c, lo, hi, ht], "pointwise")
    run_and_check(node, {"x": torch.rand(4, 33) - 0.5}, CFG, device)


def test_activation_parameters(device):
    b = Builder()
    x = b.input("x", (4, 45), F32)
    outs = [b.call("gelu", x), b.call("gelu", x, approximate="tanh"), b.call("leaky_relu", x, 0.2),
            b.call("elu", x, 1.5), b.call("softplus", x, 2.0, 5.0), b.call("add", x, 3, overload="Scalar")]
    node = fused_node(b, outs, "pointwise")
    run_and_check(node, {"x": rand(4, 45, scale=4.0)}, CFG, device)


def test_comparisons_logic_where_masked_fill(device):
    b = Builder()
    x = b.input("x", (6, 29), F32)
    y = b.input("y", (29,), F32)
    m = b.input("m", (6, 1), torch.bool)
    lt = b.call("lt", x, y, overload="Tensor")
    ge = b.call("ge", x, 0.1, overload="Scalar")
    eq = b.call("eq", x, y, overload="Tensor")
    ne = b.call("ne", x, 0.0, overload="Scalar")
    land = b.call("logical_and", lt, m)
    lor = b.call("logical_or", ge, m)
    lx = b.call("logical_xor", lt, ge)
    ln = b.call("logical_not", lt)
    bn = b.call("bitwise_not", ge)
    ba = b.call("bitwise_and", lt, ge, overload="Tensor")
    w = b.call("where", land, x, y, overload="self")
    w2 = b.call("where", ge, x, -1.5, overload="ScalarOther")
    mf = b.call("masked_fill", x, m, float("-inf"), overload="Scalar")
    le = b.call("le", x, y, overload="Tensor")
    gt = b.call("gt", x, y, overload="Tensor")
    node = fused_node(b, [land, lor, lx, ln, bn, ba, w, w2, mf, eq, ne, le, gt], "pointwise")
    xin = rand(6, 29)
    yin = rand(29)
    xin[:, 3] = yin[3]
    run_and_check(node, {"x": xin, "y": yin, "m": torch.rand(6, 1) > 0.5}, CFG, device)


def test_special_values_and_integer_casts(device):
    b = Builder()
    x = b.input("x", (3, 20), F32)
    i = b.input("i", (3, 20), torch.int64)
    y = b.input("y", (3, 20), F32)          # finite: a NaN or inf cast to int32 is undefined (CPU != GPU)
    outs = [b.call("isnan", x), b.call("isinf", x), b.call("isfinite", x),
            b.call("_to_copy", y, dtype=torch.int32), b.call("_to_copy", i, dtype=F32),
            b.call("_to_copy", x, dtype=torch.bool), b.call("mul", i, 3, overload="Tensor"),
            b.call("add", i, x, overload="Tensor"), b.call("lerp", x, b.call("neg", x), 0.25, overload="Scalar")]
    node = fused_node(b, outs, "pointwise")
    xin = rand(3, 20, scale=5.0)
    xin[0, 0], xin[0, 1], xin[0, 2] = float("nan"), float("inf"), float("-inf")
    xin[1, :3] = 0.0
    run_and_check(node, {"x": xin, "i": torch.randint(-50, 50, (3, 20)), "y": rand(3, 20, scale=5.0)}, CFG, device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_half_types_compute_in_fp32_and_round_at_casts(dtype, device):
    b = Builder()
    x = b.input("x", (7, 70), dtype)
    w = b.input("w", (70,), dtype)
    h = b.call("add", x, w, overload="Tensor")
    f = b.call("_to_copy", h, dtype=F32)
    s = b.call("mul", b.call("silu", f), 1.5, overload="Tensor")
    back = b.call("_to_copy", s, dtype=dtype)
    node = fused_node(b, [back, h, f], "pointwise")
    run_and_check(node, {"x": rand(7, 70, dtype=dtype), "w": rand(70, dtype=dtype)}, {"BLOCK_R": 2, "BLOCK_C": 32,
                                                                                          "num_warps": 2}, device)


def test_non_contiguous_operands_and_odd_sizes(device):
    """Permuted, sliced and expanded operands: strides are kernel arguments."""
    b = Builder()
    x = b.input("x", (5, 7, 9), F32)
    y = b.input("y", (5, 7, 9), F32)
    z = b.call("mul", b.call("add", x, y, overload="Tensor"), y, overload="Tensor")
    node = fused_node(b, [z], "pointwise")
    xin = rand(9, 7, 5).permute(2, 1, 0)            # fully transposed
    yin = rand(5, 14, 9)[:, ::2, :]                  # strided slice
    assert not xin.is_contiguous() and not yin.is_contiguous()
    run_and_check(node, {"x": xin, "y": yin}, {"BLOCK_R": 8, "BLOCK_C": 4, "num_warps": 1}, device)
    run_and_check(node, {"x": rand(5, 7, 9).expand(5, 7, 9), "y": rand(1, 7, 9).expand(5, 7, 9)},
                  {"BLOCK_R": 16, "BLOCK_C": 16, "num_warps": 4}, device)


def test_layout_ops_folded_into_indexing(device):
    """reshape, permute, expand, slice, select and cat produce no copies."""
    b = Builder()
    x = b.input("x", (2, 6, 8), F32)       # [B, S, H*D]
    v = b.input("v", (4, 3, 6), F32)
    xh = b.call("reshape", x, (2, 6, 2, 4))
    xt = b.call("permute", xh, (0, 2, 1, 3))       # [2, 2, 6, 4]
    head0 = b.call("select", xt, 1, -1)            # [2, 6, 4]
    left = b.call("slice", head0, 2, 0, 2)
    right = b.call("slice", head0, 2, 2, 9223372036854775807)
    swapped = b.call("cat", (right, left), -1)     # [2, 6, 4]
    ve = b.call("expand", b.call("reshape", b.call("slice", v, 0, 1, 3), (2, 1, 3, 6)), (2, 4, 3, 6))
    vt = b.call("permute", ve, (0, 2, 3, 1))       # [2, 3, 6, 4]
    stepped = b.call("slice", x, 2, 1, 8, 2)       # [2, 6, 4]
    out = b.call("add", b.call("mul", swapped, stepped, overload="Tensor"), b.call("select", vt, 1, 1),
                 overload="Tensor")
    node = fused_node(b, [out], "pointwise")
    run_and_check(node, {"x": rand(2, 6, 8), "v": rand(4, 3, 6)}, {"BLOCK_R": 4, "BLOCK_C": 4, "num_warps": 1}, device)


def test_several_outputs_and_reshaped_output(device):
    b = Builder()
    x = b.input("x", (6, 10), F32)
    a = b.call("exp", x)
    s = b.call("reshape", b.call("neg", a), (3, 2, 10))
    c = b.call("reshape", b.call("add", a, 1.0, overload="Tensor"), (60,))
    node = fused_node(b, [a, s, c], "pointwise")
    run_and_check(node, {"x": rand(6, 10)}, CFG, device)


def test_rotary_embedding_hf_llama(device):
    """q/k rotary as HF Llama computes it: view heads, transpose, x*cos + rotate_half(x)*sin."""
    B, S, H, D = 2, 5, 3, 8
    for dtype in (torch.float32, torch.bfloat16):
        b = Builder()
        q = b.input("q", (B, "s0", H * D), dtype)
        cos = b.input("cos", (B, "s0", D), dtype)
        sin = b.input("sin", (B, "s0", D), dtype)
        s0 = q.type.shape[1]
        qh = b.call("permute", b.call("reshape", q, (B, s0, H, D)), (0, 2, 1, 3))
        c4 = b.call("reshape", cos, (B, 1, s0, D))
        s4 = b.call("reshape", sin, (B, 1, s0, D))
        x1 = b.call("slice", qh, 3, 0, D // 2)
        x2 = b.call("slice", qh, 3, D // 2, 9223372036854775807)
        rot = b.call("cat", (b.call("neg", x2), x1), -1)
        out = b.call("add", b.call("mul", qh, c4, overload="Tensor"), b.call("mul", rot, s4, overload="Tensor"),
                     overload="Tensor")
        node = fused_node(b, [out], "pointwise")
        feed = {"q": rand(B, S, H * D, dtype=dtype), "cos": rand(B, S, D, dtype=dtype), "sin": rand(B, S, D, dtype=dtype)}
        run_and_check(node, feed, {"BLOCK_R": 4, "BLOCK_C": 8, "num_warps": 1}, device)


def test_symbolic_sizes_any_concrete_size(device):
    b = Builder()
    x = b.input("x", ("s0", "s1"), F32)
    y = b.input("y", ("s1",), F32)
    z = b.call("reshape", b.call("mul", x, y, overload="Tensor"), (dim_mul(x.type.shape[0], x.type.shape[1]),))
    node = fused_node(b, [z], "pointwise")
    from braze.compiler.codegen.triton import kernel_for

    k = kernel_for(node)
    for m, n in ((3, 17), (1, 1), (9, 40)):
        run_and_check(node, {"x": rand(m, n), "y": rand(n)}, CFG, device, kernel=k)


def test_default_config_runs_untuned(device):
    b = Builder()
    x = b.input("x", (33, 65), torch.bfloat16)
    node = fused_node(b, [b.call("silu", x)], "pointwise")
    run_and_check(node, {"x": rand(33, 65, dtype=torch.bfloat16)}, None, device)


def test_permuted_and_expanded_computed_values_and_scalar_tensor(device):
    """Layout ops on computed values (not only on inputs) and a 0-d tensor operand."""
    b = Builder()
    x = b.input("x", (5, 7), F32)
    s = b.input("s", (), F32)
    row = b.input("row", (1, 7), F32)
    e = b.call("permute", b.call("exp", x), (1, 0))                           # [7, 5]
    ex = b.call("expand", b.call("neg", row), (5, 7))
    out = b.call("mul", b.call("add", b.call("permute", e, (1, 0)), ex, overload="Tensor"), s, overload="Tensor")
    node = fused_node(b, [out], "pointwise")
    run_and_check(node, {"x": rand(5, 7), "s": torch.tensor(1.7), "row": rand(1, 7)}, CFG, device)
    b = Builder()
    x = b.input("x", (5, 7), F32)
    node = fused_node(b, [b.call("permute", b.call("exp", x), (1, 0))], "pointwise")    # output [7, 5]
    run_and_check(node, {"x": rand(5, 7)}, CFG, device)
