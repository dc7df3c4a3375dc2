"""ATen's layer_norm for LayerNorm groups on the CPU (``codegen/library_norm.py``)."""
from __future__ import annotations

import pytest
import torch

from braze.autotune.space import DeviceInfo
from braze.compiler.codegen import library_norm as ln
from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, reference

CPU = DeviceInfo("cpu", "test cpu", (0, 0), 2)
R, N = 9, 48


def _group(residual: bool = False, affine: str = "wb", correction: int = 0, dim: int = -1, both: bool = False,
           eps_first: bool = False):
    b = Builder()
    x = b.input("x", (R, N))
    h = b.call("add", x, b.input("r", (R, N)), overload="Tensor") if residual else x
    var, mean = b.call("var_mean", h, [dim], correction=correction, keepdim=True, overload="correction")
    eps = b.call("add", var, 1e-5, overload="Tensor")
    y = b.call("mul", b.call("sub", h, mean, overload="Tensor"), b.call("rsqrt", eps), overload="Tensor")
    if "w" in affine:
        y = b.call("mul", b.input("w", (N,)), y, overload="Tensor")
    if "b" in affine:
        y = b.call("add", y, b.input("b", (N,)), overload="Tensor")
    return fused_node(b, [y, h] if both else [y], "reduction")


@pytest.mark.parametrize("residual,affine,both", [(False, "wb", False), (True, "wb", True), (False, "", False),
                                                  (True, "w", False)])
def test_layer_norm_equals_the_group(residual, affine, both):
    node = _group(residual, affine, both=both)
    (k,) = ln.generate(node, node.attr("graph"), None, CPU)
    assert k.backend == "library" and k.form.eps == 1e-5
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(tuple(v.type.shape), generator=g) * 3 + 1 for v in node.inputs]
    out = k.compile({})(*xs)
    want = reference(node, xs)
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(want)
    for o, w in zip(outs, want):
        torch.testing.assert_close(o.double(), w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(correction=1), dict(dim=0)])
def test_other_reductions_get_no_layer_norm(kw):
    node = _group(**kw)
    assert ln.generate(node, node.attr("graph"), None, CPU) == []


def test_only_on_the_cpu():
    node = _group()
    assert ln.generate(node, node.attr("graph"), None, DeviceInfo("cuda", "gpu", (9, 0), 132)) == []
