"""The TVM CPU attention kernel against ``attention_reference``."""
import pytest
import torch

pytest.importorskip("tvm")

from braze.autotune.space import device_info  # noqa: E402
from braze.ir import Builder  # noqa: E402
from braze.ir.attention import attention_reference  # noqa: E402


def attention_node(q, k, v, mask=None, **kw):
    b = Builder()
    args = [b.input("q", tuple(q.shape), q.dtype), b.input("k", tuple(k.shape), k.dtype),
            b.input("v", tuple(v.shape), v.dtype)]
    if mask is not None:
        args.append(b.input("m", tuple(mask.shape), mask.dtype))
    return b.call("attention", *args, **kw).node


def run(q, k, v, mask=None, config=None, **kw):
    from braze.compiler.codegen.tvm.attention import TVMAttentionKernel
    from braze.compiler.codegen.tvm.support import supports_attention

    node = attention_node(q, k, v, mask, **kw)
    assert supports_attention(node, "cpu") is None
    kern = TVMAttentionKernel(node)
    cfg = config or kern.space.default_config(kern.problem({}), device_info("cpu"))
    xs = [q, k, v] + ([mask] if mask is not None else [])
    got = kern.compile(cfg)(*xs)
    wide = [x.double() if x.dtype.is_floating_point else x for x in xs]
    ref = attention_reference(*wide, **kw)
    tol = 1e-5 if q.dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double(), ref.double(), rtol=tol, atol=tol)
    return kern


def rnd(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def test_plain_and_gqa():
    run(rnd(2, 4, 9, 16), rnd(2, 4, 9, 16), rnd(2, 4, 9, 16), scale=0.25)
    run(rnd(1, 6, 11, 8), rnd(1, 2, 11, 8), rnd(1, 2, 11, 8), scale=0.3, groups=3, causal="top_left")


def test_causal_bottom_right_bool_mask_with_empty_rows():
    mask = torch.rand(2, 1, 5, 13) > 0.4
    mask[0, 0, 2] = False  # a query row with no visible key -> zeros
    run(rnd(2, 4, 5, 8), rnd(2, 2, 13, 8), rnd(2, 2, 13, 8), mask, scale=0.35, groups=2, causal="bottom_right",
        mask_kind="bool")


def test_additive_padding_mask_strided_qkv():
    """q/k/v as HF makes them: [B, S, H, D] transposed to [B, H, S, D] (not contiguous)."""
    def heads(S, H):
        return torch.randn(2, S, H, 32).transpose(1, 2)
    mask = torch.zeros(2, 1, 1, 33)
    mask[1, ..., 20:] = torch.finfo(torch.float32).min
    run(heads(33, 6), heads(33, 2), heads(33, 2), mask, scale=32 ** -0.5, groups=3, causal="top_left",
        mask_kind="additive")


def test_sliding_window_and_bf16():
    run(rnd(1, 2, 17, 16), rnd(1, 2, 17, 16), rnd(1, 2, 17, 16), scale=0.25, causal="top_left", window=5)
    run(rnd(1, 2, 7, 16, dtype=torch.bfloat16), rnd(1, 1, 7, 16, dtype=torch.bfloat16),
        rnd(1, 1, 7, 16, dtype=torch.bfloat16), scale=0.25, groups=2, causal="top_left")


def test_knobs_keep_results():
    q, k, v = rnd(1, 2, 21, 16), rnd(1, 2, 21, 16), rnd(1, 2, 21, 16)
    run(q, k, v, scale=0.25, causal="top_left", config={"bq": 4, "vec": 8, "parallel": False})


def test_declines_slopes_and_gpu():
    from braze.compiler.codegen.tvm.support import supports_attention

    b = Builder()
    q = b.input("q", (1, 2, 4, 8))
    s = b.input("s", (2,))
    n = b.call("attention", q, q, q, None, s, scale=1.0).node
    assert supports_attention(n, "cpu") is not None
    n2 = attention_node(rnd(1, 2, 4, 8), rnd(1, 2, 4, 8), rnd(1, 2, 4, 8), scale=1.0)
    assert supports_attention(n2, "cuda") is not None


def test_reference_fallback_runs_the_op():
    """What runs if TVM cannot build a config (or operands are empty): the op's own semantics."""
    from braze.compiler.codegen.tvm.attention import TVMAttentionKernel

    q, k, v = rnd(1, 2, 5, 8), rnd(1, 2, 5, 8), rnd(1, 2, 5, 8)
    mask = torch.rand(1, 1, 5, 5) > 0.3
    node = attention_node(q, k, v, mask, scale=0.3, causal="top_left", mask_kind="bool")
    got = TVMAttentionKernel(node)._reference()(q, k, v, mask)
    ref = attention_reference(q, k, v, mask, scale=0.3, causal="top_left", mask_kind="bool")
    torch.testing.assert_close(got, ref)
