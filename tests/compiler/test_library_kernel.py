"""The library candidate of a node: its ops run through torch, a group of one op as a direct call."""
from __future__ import annotations

import torch

from braze.compiler.kernels import LibraryKernel
from braze.ir import Builder
from braze.ir.fused import fuse_groups


def _group(build, inputs, kind="gemm"):
    b = Builder()
    xs = [b.input(name, shape) for name, shape in inputs]
    g = b.graph([build(b, *xs)])
    fg = fuse_groups(g, [(list(g.compute_nodes), kind)])
    return next(n for n in fg.nodes if n.op == "fused")


def _operands(node, tensors):
    return [tensors[v.node.name] for v in node.inputs]


def test_a_gemm_alone_is_called_directly():
    node = _group(lambda b, bias, x, w: b.call("addmm", bias, x, w), [("b", (6,)), ("x", (5, 4)), ("w", (4, 6))])
    t = {"b": torch.randn(6), "x": torch.randn(5, 4), "w": torch.randn(4, 6)}
    fn = LibraryKernel(node).compile({})
    assert fn.__name__ == "run_flat"  # no interpreter between the plan and the op
    torch.testing.assert_close(fn(*_operands(node, t)), torch.addmm(t["b"], t["x"], t["w"]))


def test_groups_with_several_ops_or_symbols_go_through_the_interpreter():
    node = _group(lambda b, x, w: b.call("relu", b.call("mm", x, w)), [("x", ("s", 4)), ("w", (4, 6))])
    sym = _group(lambda b, x: b.call("reshape", x, (x.type.shape[0], 2, 2)), [("x", ("s", 4))], "pointwise")
    x, w = torch.randn(7, 4), torch.randn(4, 6)
    fn = LibraryKernel(node).compile({})
    assert fn.__name__ == "run"
    torch.testing.assert_close(fn(*_operands(node, {"x": x, "w": w})), torch.relu(x @ w))
    fs = LibraryKernel(sym).compile({})
    assert fs.__name__ == "run" and fs(x).shape == (7, 2, 2)
