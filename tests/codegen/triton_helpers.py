"""Shared helpers of the Triton codegen tests: build a fused group with the
Builder, run its kernel and compare with the subgraph interpreted in float64."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

from braze.ir import Builder, Graph, Node, interpret
from braze.ir.fused import fuse_groups

TOL = {torch.float32: (1e-4, 1e-4), torch.float64: (1e-9, 1e-9), torch.float16: (5e-3, 5e-3),
       torch.bfloat16: (2e-2, 2e-2)}


def fused_node(b: Builder, outputs: Sequence, kind: str, exclude: Sequence = ()) -> Node:
    """The ``fused`` node made of every compute node of ``b`` (except ``exclude``)."""
    g = b.graph(list(outputs))
    skip = {v.node for v in exclude}
    nodes = [n for n in g.nodes if n.op not in ("input", "constant") and n not in skip]
    fg = fuse_groups(g, [(nodes, kind)])
    fused = [n for n in fg.nodes if n.op == "fused"]
    assert len(fused) == 1
    return fused[0]


def gate_up_node(rows="s0", k: int = 256, inter: int = 256, dtype=torch.bfloat16) -> Node:
    """A gate/up GEMM group: ``silu(y[:, :inter]) * y[:, inter:]`` of ``y = x @ w^T``
    (inputs ``x`` [rows, k] and ``w`` [2 inter, k])."""
    b = Builder()
    x = b.input("x", (rows, k), dtype)
    w = b.input("w", (2 * inter, k), dtype)
    mm = b.call("mm", x, b.call("permute", w, (1, 0)))
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, inter)), b.call("slice", mm, 1, inter, 2 * inter),
               overload="Tensor")
    return fused_node(b, [y], "gemm")


def reference(node: Node, xs: Sequence[torch.Tensor]) -> tuple:
    sub: Graph = node.attr("graph")
    up = [x.double() if x.is_floating_point() else x for x in xs]
    return interpret(sub, *up)


def run_and_check(node: Node, feed: Mapping[str, torch.Tensor], config: Optional[dict] = None, device: str = "cpu",
                  tol: Optional[tuple] = None, kernel=None):
    """Run the Triton kernel of ``node`` on ``feed`` (by outer input name) and compare with float64."""
    from braze.autotune.space import device_info
    from braze.compiler.codegen.triton import kernel_for

    k = kernel or kernel_for(node)
    xs = [feed[v.node.name].to(device) for v in node.inputs]
    if config is None:
        env = _env(node, xs)
        config = k.space.default_config(k.problem(env), device_info(device))
    out = k.compile(config)(*xs)
    out = out if isinstance(out, tuple) else (out,)
    ref = reference(node, [x.cpu() for x in xs])
    assert len(out) == len(ref)
    low = lowest_precision(node)
    for o, r, t in zip(out, ref, node.types):
        assert o.dtype == t.dtype, (o.dtype, t.dtype)
        assert tuple(o.shape) == tuple(r.shape)
        assert o.device.type == torch.device(device).type
        rt, at = tol or TOL.get(low if o.dtype.is_floating_point else o.dtype, (0, 0))
        o = o.cpu()
        if o.dtype.is_floating_point:
            want = r.to(o.dtype).double()
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            torch.testing.assert_close(o.double(), want, rtol=rt, atol=at * scale, equal_nan=True)
        else:
            torch.testing.assert_close(o, r.to(o.dtype))
    return out


def lowest_precision(node: Node) -> torch.dtype:
    """The least precise float dtype in the group: it bounds the error of every output."""
    order = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
    seen = {t.dtype for n in node.attr("graph").nodes for t in n.types if t.dtype in order}
    return next((d for d in order if d in seen), torch.float32)


def _env(node: Node, xs):
    from braze.ir.interpreter import bind_symbols

    return bind_symbols(node.attr("graph"), xs, check=False)


def rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape) * scale).to(dtype)
