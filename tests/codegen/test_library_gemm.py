"""The addmm library candidate of GEMM + residual groups (``codegen/library_gemm.py``)."""
from __future__ import annotations

import pytest
import torch

from braze.compiler.codegen.library_gemm import AddmmKernel, generate, match
from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, reference


def _group(transposed_w: bool, reshape: bool, residual_first: bool, dtype=torch.float32):
    b = Builder()
    x = b.input("x", (5, 32), dtype)
    w = b.input("w", (48, 32) if transposed_w else (32, 48), dtype)
    r = b.input("r", (5, 1, 48) if reshape else (5, 48), dtype)
    mm = b.call("mm", x, b.call("permute", w, (1, 0)) if transposed_w else w)
    y = b.call("reshape", mm, (5, 1, 48)) if reshape else mm
    out = b.call("add", r, y, overload="Tensor") if residual_first else b.call("add", y, r, overload="Tensor")
    return fused_node(b, [out], "gemm")


@pytest.mark.parametrize("transposed_w,reshape,residual_first", [(True, True, True), (False, False, False),
                                                                   (True, False, True)])
def test_addmm_equals_the_group(transposed_w, reshape, residual_first):
    node = _group(transposed_w, reshape, residual_first)
    (k,) = generate(node, node.attr("graph"), None, None)
    assert isinstance(k, AddmmKernel) and k.backend == "library"
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(tuple(5 if not isinstance(d, int) else d for d in v.type.shape), generator=g)
          for v in node.inputs]
    out = k.compile({})(*xs)
    (want,) = reference(node, xs)
    assert out.shape == want.shape
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_other_gemm_groups_get_no_addmm():
    b = Builder()
    x, w, r = b.input("x", (4, 32)), b.input("w", (32, 48)), b.input("r", (4, 48))
    mm = b.call("mm", x, w)
    scaled = fused_node(b, [b.call("add", b.call("mul", mm, 2.0, overload="Tensor"), r, overload="Tensor")], "gemm")
    assert match(scaled.attr("graph")) is None                       # an epilogue op besides the add
    b = Builder()
    x, w, bias = b.input("x", (4, 32)), b.input("w", (32, 48)), b.input("bias", (48,))
    bcast = fused_node(b, [b.call("add", b.call("mm", x, w), bias, overload="Tensor")], "gemm")
    assert match(bcast.attr("graph")) is None                        # a broadcast bias is not a C matrix
    b = Builder()
    x, w, r = b.input("x", (4, 32), torch.float16), b.input("w", (32, 48), torch.float16), b.input("r", (4, 48))
    mixed = fused_node(b, [b.call("add", b.call("mm", x, w), r, overload="Tensor")], "gemm")
    assert match(mixed.attr("graph")) is None                        # float16 product + float32 residual
