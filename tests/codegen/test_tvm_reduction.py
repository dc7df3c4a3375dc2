"""TVM row-reduction groups on the CPU against the reference interpreter:
softmax (stable), log_softmax, LayerNorm, RMSNorm, add + RMSNorm with two
outputs, and reduced outputs (sum/mean/amax/amin/var), on odd row lengths."""
import pytest
import torch

pytest.importorskip("tvm")

from tests.codegen.tvm_groups import check, group, kernel_of, random_like  # noqa: E402

f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16


def layer_norm(b, x, w, bias):
    v, m = b.call("var_mean", x, [-1], correction=0, keepdim=True, overload="correction")
    r = b.call("rsqrt", b.call("add", v, 1e-5))
    return b.call("add", b.call("mul", b.call("mul", b.call("sub", x, m), r), w), bias)


def add_rmsnorm(b, x, res, w):
    y = b.call("add", x, res)
    m = b.call("mean", b.call("pow", y, 2.0, overload="Tensor_Scalar"), [-1], True, overload="dim")
    return [y, b.call("mul", b.call("mul", y, b.call("rsqrt", b.call("add", m, 1e-6))), w)]


def llama_rmsnorm(b, x, w):
    """HF Llama: float32 variance, cast back, then weight * x (weight in the model dtype)."""
    xf = b.call("_to_copy", x, dtype=f32)
    m = b.call("mean", b.call("pow", xf, 2, overload="Tensor_Scalar"), [-1], True, overload="dim")
    y = b.call("mul", xf, b.call("rsqrt", b.call("add", m, 1e-6)))
    return b.call("mul", w, b.call("_to_copy", y, dtype=x.type.dtype))


def test_softmax_stable_with_mask():
    """Scaled scores plus an additive mask with -inf entries; large logits."""
    g = group(lambda b, x, m: b.call("_softmax", b.call("add", b.call("mul", x, 0.125), m), -1, False),
              "reduction", [((2, 3, 5, 37), f32), ((2, 1, 1, 37), f32)])
    mask = torch.randn(2, 1, 1, 37)
    mask[..., 3:11] = -float("inf")
    check(g, inputs=[torch.randn(2, 3, 5, 37) * 400, mask])


def test_log_softmax_and_row_sum_two_nests():
    """A row-shaped and a reduced output: two loop nests in one kernel."""
    g = group(lambda b, x: [b.call("_log_softmax", x, -1, False), b.call("sum", x, [-1], overload="dim_IntList")],
              "reduction", [((6, 29), f32)])
    check(g, [(6, 29)])


def test_layer_norm_odd_width():
    g = group(layer_norm, "reduction", [((3, 7, 50), f32), ((50,), f32), ((50,), f32)])
    check(g, [(3, 7, 50), (50,), (50,)], tol=(1e-4, 1e-5))


def test_add_rmsnorm_two_outputs_and_reshaped_output():
    def build(b, x, res, w):
        y, n = add_rmsnorm(b, x, res, w)
        return [y, b.call("reshape", n, (10, 33))]
    g = group(build, "reduction", [((2, 5, 33), f32), ((2, 5, 33), f32), ((33,), f32)])
    check(g, [(2, 5, 33), (2, 5, 33), (33,)], tol=(1e-5, 1e-5))


@pytest.mark.parametrize("dtype", [bf16, f16])
def test_llama_rmsnorm_low_precision(dtype):
    g = group(llama_rmsnorm, "reduction", [((4, 3, 72), dtype), ((72,), dtype)])
    check(g, [(4, 3, 72), (72,)])


def test_reduced_outputs():
    def build(b, x):
        return [b.call("sum", x, [-1], overload="dim_IntList"),
                b.call("mean", x, [-1], True, overload="dim"),
                b.call("amax", x, [-1], True),
                b.call("amin", x, [1]),
                b.call("var", x, [-1], correction=1, keepdim=False, overload="correction")]
    g = group(build, "reduction", [((5, 1001), f32)])
    check(g, [(5, 1001)], tol=(1e-5, 1e-4))


def test_symbolic_rows_and_strided_rows():
    g = group(add_rmsnorm, "reduction", [(("s0", 40), f32), (("s0", 40), f32), ((40,), f32)])
    k = check(g, [(5, 40), (5, 40), (40,)])
    check(g, [(19, 40), (19, 40), (40,)], kernel=k)
    x = torch.randn(40, 9).t()  # rows of stride 1, elements of stride 9
    check(g, inputs=[x, torch.randn(9, 40), torch.randn(40)], kernel=k)


def test_reduction_knobs_keep_results():
    g = group(layer_norm, "reduction", [((9, 70), f32), ((70,), f32), ((70,), f32)])
    k = kernel_of(g)
    xs = [random_like(s, f32) for s in ((9, 70), (70,), (70,))]
    for cfg in ({"vec": 4, "unroll": 2, "parallel": True, "stage": False},
                {"vec": 32, "unroll": 1, "parallel": False, "stage": True}):
        check(g, inputs=xs, config=cfg, kernel=k, tol=(1e-4, 1e-5))


def test_symbolic_row_length():
    """The reduced dim itself symbolic: vector lanes over the whole vectors, then the tail."""
    g = group(lambda b, x: [b.call("_softmax", x, -1, False), b.call("amax", x, [-1])], "reduction",
              [((3, "s1"), f32)])
    k = check(g, [(3, 37)])
    check(g, [(3, 16)], kernel=k)
    check(g, [(3, 5)], kernel=k)


def test_empty_rows_follow_torch():
    """A symbolic row count of 0: the kernel is not launched, torch's semantics apply."""
    g = group(lambda b, x: b.call("sum", x, [-1], overload="dim_IntList"), "reduction", [(("s0", 8), f32)])
    k = check(g, [(3, 8)])
    from braze.autotune.space import device_info

    out = k.compile(k.space.default_config(k.problem({"s0": 4}), device_info("cpu")))(torch.randn(0, 8))
    assert out.shape == (0,)
