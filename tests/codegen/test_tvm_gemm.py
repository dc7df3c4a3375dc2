"""TVM GEMM groups (mm / addmm / bmm with epilogues) on the CPU, odd sizes."""
import pytest
import torch

pytest.importorskip("tvm")

from tvm_groups import check, group, kernel_of, random_like  # noqa: E402

from braze.autotune.space import device_info  # noqa: E402

f32, bf16 = torch.float32, torch.bfloat16
GEMM_TOL = (1e-4, 1e-4)


def test_linear_bias_gelu_residual():
    """nn.Linear (weight [N, K], transposed in the group) + bias + GELU + residual."""
    def build(b, x, w, bias, res):
        y = b.call("addmm", bias, x, b.call("permute", w, (1, 0)))
        return b.call("add", b.call("gelu", y), res)
    g = group(build, "gemm", [((37, 50), f32), ((29, 50), f32), ((29,), f32), ((37, 29), f32)])
    check(g, [(37, 50), (29, 50), (29,), (37, 29)], tol=GEMM_TOL)


def test_conv1d_style_mm_reshaped_output_two_outputs():
    """GPT-2's Conv1D (weight [K, N]), output viewed as [B, S, N], pre- and post-activation outputs."""
    def build(b, x, w, bias):
        y = b.call("addmm", bias, b.call("reshape", x, (14, 24)), w, beta=1.0, alpha=1.0)
        y3 = b.call("reshape", y, (2, 7, 40))
        return [y3, b.call("mul", b.call("tanh", y3), 0.5)]
    g = group(build, "gemm", [((2, 7, 24), f32), ((24, 40), f32), ((40,), f32)])
    check(g, [(2, 7, 24), (24, 40), (40,)], tol=GEMM_TOL)


def test_bmm_bf16_with_scale():
    g = group(lambda b, x, y: b.call("mul", b.call("bmm", x, y), 0.5), "gemm",
              [((3, 17, 20), bf16), ((3, 20, 33), bf16)])
    check(g, [(3, 17, 20), (3, 20, 33)])


def test_symbolic_m_and_strided_a():
    g = group(lambda b, x, w: b.call("silu", b.call("mm", x, w)), "gemm", [(("s0", 24), f32), ((24, 40), f32)])
    k = check(g, [(7, 24), (24, 40)], tol=GEMM_TOL)
    check(g, [(13, 24), (24, 40)], kernel=k, tol=GEMM_TOL)
    check(g, inputs=[torch.randn(24, 5).t(), torch.randn(24, 40)], kernel=k, tol=GEMM_TOL)


def test_gemm_knobs_keep_results():
    """Unpacked B, an mr that does not divide M, an nr that does not divide N,
    blocks of B panels and of rows, with and without a parallel loop."""
    g = group(lambda b, x, w, bias: b.call("addmm", bias, x, w), "gemm", [((19, 31), f32), ((31, 45), f32),
                                                                          ((45,), f32)])
    k = kernel_of(g)
    xs = [random_like(s, f32) for s in ((19, 31), (31, 45), (45,))]
    dev = device_info("cpu")
    prob = k.problem({})
    for cfg in ({"mr": 4, "nr": 32, "nb": 2, "mb": 0, "pack": False, "kunroll": 1, "parallel": False},
                {"mr": 8, "nr": 16, "nb": 1, "mb": 24, "pack": True, "kunroll": 8, "parallel": True},
                {"mr": 6, "nr": 16, "nb": 4, "mb": 48, "pack": True, "kunroll": 2, "parallel": True}):
        assert not k.space.violations(cfg, prob, dev), k.space.violations(cfg, prob, dev)
        check(g, inputs=xs, config=cfg, kernel=k, tol=GEMM_TOL)
