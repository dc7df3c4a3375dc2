"""TVM pointwise groups on the CPU against the reference interpreter.

Many ops share one multi-output group, so that a handful of compiles covers
the op table; shapes are odd (not multiples of the vector width)."""
import math

import pytest
import torch

pytest.importorskip("tvm")

from tests.codegen.tvm_groups import check, group, kernel_of, random_like  # noqa: E402

from braze.compiler.codegen.tvm.ops import POINTWISE  # noqa: E402
from braze.ir import sym  # noqa: E402

f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16

UNARY = ["abs", "neg", "exp", "exp2", "expm1", "log1p", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh",
         "sigmoid", "erf", "erfc", "floor", "ceil", "trunc", "round", "frac", "sign", "relu", "relu6", "silu",
         "mish", "square", "hardsigmoid", "hardswish", "atan", "sinh", "asinh"]


def test_unary_ops_f32():
    def build(b, x, y):
        pos = b.call("add", b.call("abs", y), 0.5)
        outs = [b.call(op, x) for op in UNARY]
        outs += [b.call("log", pos), b.call("log2", pos), b.call("log10", pos)]
        outs += [b.call("gelu", x), b.call("gelu", x, approximate="tanh"), b.call("elu", x),
                 b.call("leaky_relu", x, 0.1), b.call("softplus", x), b.call("hardtanh", x, -0.5, 0.7)]
        return outs
    g = group(build, "pointwise", [((5, 37), f32), ((5, 37), f32)])
    check(g, [(5, 37), (5, 37)], scale=3.0)


def test_binary_compare_where_casts():
    def build(b, x, y, m, i):
        outs = [b.call("add", x, y, alpha=2.0), b.call("sub", x, 1.5), b.call("mul", x, y), b.call("div", x, y),
                b.call("div", x, y, rounding_mode="floor"), b.call("maximum", x, y), b.call("minimum", x, y),
                b.call("pow", x, 2.0, overload="Tensor_Scalar"), b.call("pow", x, 3, overload="Tensor_Scalar"),
                b.call("pow", b.call("abs", x), 0.7, overload="Tensor_Scalar"),
                b.call("clamp", x, -0.5, 0.5), b.call("clamp_min", x, 0.1), b.call("atan2", x, y),
                b.call("remainder", x, 0.7), b.call("fmod", x, 0.7),
                b.call("lt", x, y), b.call("ge", x, 0.0), b.call("eq", i, 3), b.call("ne", x, y),
                b.call("where", m, x, y), b.call("where", m, x, 0.25), b.call("masked_fill", x, m, -1e4),
                b.call("logical_and", m, b.call("gt", x, 0.0)), b.call("logical_not", m),
                b.call("bitwise_and", m, b.call("lt", y, 0.0)),
                b.call("_to_copy", x, dtype=f16), b.call("_to_copy", x, dtype=bf16), b.call("_to_copy", x, dtype=torch.int32),
                b.call("_to_copy", i, dtype=f32), b.call("_to_copy", m, dtype=f32), b.call("mul", i, 3),
                b.call("add", i, i), b.call("div", i, 3), b.call("neg", i), b.call("abs", i),
                b.call("isnan", b.call("div", x, y)), b.call("lerp", x, y, 0.3)]
        return outs
    g = group(build, "pointwise", [((3, 21), f32), ((3, 21), f32), ((3, 21), torch.bool), ((3, 21), torch.int64)])
    check(g, [(3, 21), (3, 21), (3, 21), (3, 21)])


@pytest.mark.parametrize("dtype", [bf16, f16])
def test_low_precision_silu_mul(dtype):
    """SiLU(g) * u in bf16/f16: loads widen to f32, the store rounds."""
    g = group(lambda b, x, y: b.call("mul", b.call("silu", x), y), "pointwise",
              [((7, 45), dtype), ((7, 45), dtype)])
    check(g, [(7, 45), (7, 45)])


def test_broadcast_scalars_and_zero_d_tensor():
    def build(b, x, w, s):
        return b.call("add", b.call("mul", x, b.call("reshape", w, (1, 1, 13))), b.call("mul", s, 2.0))
    g = group(build, "pointwise", [((2, 3, 13), f32), ((13,), f32), ((), f32)])
    check(g, [(2, 3, 13), (13,), ()])


def test_layout_ops_fold_into_indices():
    """permute, reshape (merge and split), expand, slice with step, select, and
    a second output of another shape but the same size (handed back as a view)."""
    def build(b, x, y):
        p = b.call("permute", x, (0, 2, 1))                          # [2, 5, 12]
        r = b.call("reshape", p, (2, 5, 3, 4))                       # split a dim
        e = b.call("expand", b.call("reshape", y, (1, 5, 1, 4)), (2, 5, 3, 4))
        s = b.call("slice", r, 2, 0, 3, 1, overload="Tensor")
        sel = b.call("select", b.call("slice", e, 3, 0, 4, 2, overload="Tensor"), 3, 1, overload="int")  # [2,5,3]
        out = b.call("add", s, b.call("reshape", sel, (2, 5, 3, 1)))
        return [out, b.call("reshape", out, (10, 12))]
    g = group(build, "pointwise", [((2, 12, 5), f32), ((5, 4), f32)])
    check(g, [(2, 12, 5), (5, 4)])


def test_rotary_cat_of_slices():
    """q * cos + rotate_half(q) * sin, rotate_half = cat(-q[..., d/2:], q[..., :d/2])."""
    def build(b, q, cos, sin):
        x1 = b.call("slice", q, -1, 0, 12, overload="Tensor")
        x2 = b.call("slice", q, -1, 12, 24, overload="Tensor")
        rot = b.call("cat", [b.call("neg", x2), x1], -1)
        c = b.call("reshape", cos, (1, 1, 7, 24))
        s = b.call("reshape", sin, (1, 1, 7, 24))
        return b.call("add", b.call("mul", q, c), b.call("mul", rot, s))
    g = group(build, "pointwise", [((2, 3, 7, 24), f32), ((7, 24), f32), ((7, 24), f32)])
    check(g, [(2, 3, 7, 24), (7, 24), (7, 24)])


def test_symbolic_dims_and_strided_operand():
    """One shape-generic kernel serves several sizes; a transposed operand goes
    through the strided variant (no copy)."""
    def build(b, x, y):
        z = b.call("reshape", b.call("mul", x, y), (sym("2*s0"), 8))
        return b.call("relu", z)
    g = group(build, "pointwise", [(("s0", 2, 8), f32), ((2, 8), f32)])
    k = check(g, [(3, 2, 8), (2, 8)])
    check(g, [(11, 2, 8), (2, 8)], kernel=k)
    x = torch.randn(8, 2, 5).permute(2, 1, 0)
    assert not x.is_contiguous()
    check(g, inputs=[x, torch.randn(2, 8)], kernel=k)


def test_tuning_knobs_keep_results():
    """Every knob of the pointwise space changes the code, never the values."""
    g = group(lambda b, x: b.call("mul", b.call("tanh", x), 0.5), "pointwise", [((9, 33), f32)])
    k = kernel_of(g)
    x = random_like((9, 33), f32)
    for cfg in ({"vec": 4, "unroll": 2, "parallel": True, "flat": True},
                {"vec": 32, "unroll": 1, "parallel": False, "flat": False}):
        check(g, inputs=[x], config=cfg, kernel=k)


def test_fastmath_accuracy():
    """The vectorisable exp/tanh/erf/sigmoid against float64 over wide ranges."""
    x = torch.cat([torch.linspace(-90, 90, 4001), torch.tensor([0.0, 1e-7, -1e-7, 1e-3, -0.05, 0.05])])
    g = group(lambda b, t: [b.call("exp", t), b.call("tanh", t), b.call("erf", t), b.call("sigmoid", t)],
              "pointwise", [((x.numel(),), f32)])
    got = kernel_of(g).compile({"vec": 16, "unroll": 1, "parallel": False, "flat": True})(x)
    xd = x.double()
    e = torch.exp(xd)
    ok = (e > 1e-37) & (e < 3e38)
    assert ((got[0].double() - e).abs() / e)[ok].max() < 3e-7
    assert torch.isinf(got[0][x > 88.8]).all() and (got[0][x < -88] < 1e-37).all()
    assert (got[1].double() - torch.tanh(xd)).abs().max() < 3e-7
    assert (got[2].double() - torch.erf(xd)).abs().max() < 5e-7
    assert (got[3].double() - torch.sigmoid(xd)).abs().max() < 3e-7
    nan = group(lambda b, t: b.call("exp", t), "pointwise", [((3,), f32)])
    out = kernel_of(nan).compile({"vec": 4, "unroll": 1, "parallel": False, "flat": True})(
        torch.tensor([math.nan, math.inf, -math.inf]))
    assert math.isnan(out[0]) and out[1] == math.inf and out[2] == 0.0


def test_every_listed_op_has_a_lowering():
    from braze.compiler.codegen.tvm import pointwise

    handled = set(pointwise.UNARY) | set(pointwise.BINARY) | set(pointwise.COMPARE) | set(pointwise.LOGICAL) \
        | set(pointwise.BITWISE)
    special = {"add", "sub", "div", "pow", "logical_not", "bitwise_not", "isnan", "isinf", "isfinite", "signbit",
               "_to_copy", "prims::convert_element_type", "where", "masked_fill", "fill", "clamp", "clamp_min",
               "clamp_max", "hardtanh", "gelu", "leaky_relu", "elu", "softplus", "threshold", "lerp",
               "nan_to_num", "triu", "tril"}
    assert POINTWISE <= handled | special, sorted(POINTWISE - handled - special)


def test_misaligned_operand_views_are_safe():
    """A contiguous view at an odd offset (TVM assumes aligned buffers) gives the right result."""
    import braze

    def f(x, y):
        return torch.relu(x) * y + 1

    fast = braze.jit(f, backend="tvm", strict=True)
    base = torch.randn(5 * 33 + 3)
    x = base[3:].view(5, 33)          # 12 bytes past an aligned allocation
    y = torch.randn(5 * 33 + 1)[1:].view(5, 33)
    assert x.data_ptr() % 64 and y.data_ptr() % 64
    for _ in range(2):
        torch.testing.assert_close(fast(x, y), f(x, y))
