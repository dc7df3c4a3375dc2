"""Helpers of the TVM codegen tests: fused groups built with ``braze.ir.Builder``
and checked against the reference interpreter."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from braze.autotune.space import device_info
from braze.ir import Builder, Graph, Node
from braze.ir.fused import fuse_groups
from braze.ir.interpreter import interpret

TOL = {torch.float32: (2e-5, 2e-5), torch.float64: (1e-10, 1e-10), torch.float16: (1e-2, 1e-2),
       torch.bfloat16: (2e-2, 2e-2)}


def fused_node(build: Callable, kind: str, inputs: Sequence[tuple], syms: Sequence[str] = ()) -> Node:
    """The one ``fused`` node made of every compute node that ``build(b, *inputs)`` adds."""
    b = Builder()
    xs = [b.input(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(inputs)]
    outs = build(b, *xs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    g = b.graph(outs, sym_inputs=())
    g2 = fuse_groups(g, [(list(g.compute_nodes), kind)])
    node = [n for n in g2.nodes if n.op == "fused"][0]
    object.__setattr__(node, "outer_dtypes", [dtype for _, dtype in inputs])
    return node


def random_like(shape, dtype, gen=None):
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    return torch.randint(-8, 9, shape, generator=gen).to(dtype)


def check(node: Node, shapes: Sequence[Sequence[int]], config: dict | None = None, tol=None, inputs=None,
          kernel=None):
    """Run the TVM kernel of ``node`` on fresh random inputs of ``shapes`` and
    compare every output with the interpreter in float64. Returns the kernel."""
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    sub: Graph = node.attr("graph")
    if inputs is None:
        inputs = [random_like(s, t) for s, t in zip(shapes, node.outer_dtypes)]
    # the fused node's operands are in first-use order: map them from the builder's inputs x0, x1, ...
    inputs = [inputs[int(v.node.name[1:])] for v in node.args]
    k = kernel or TVMKernel(node, node.attr("kind"), "cpu")
    env = {}
    for n, x in zip(sub.inputs, inputs):
        for d, s in zip(n.type.shape, x.shape):
            if not isinstance(d, int):
                env[str(d)] = s
    cfg = config or k.space.default_config(k.problem(env), device_info("cpu"))
    fn = k.compile(cfg)
    got = fn(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    wide = [x.double() if x.dtype.is_floating_point else x for x in inputs]
    ref64 = interpret(_retyped(sub, wide), *wide) if any(x.dtype in (torch.float16, torch.bfloat16, torch.float32)
                                                        for x in inputs) else interpret(sub, *inputs)
    ref = interpret(sub, *inputs)
    assert len(got) == len(ref)
    for g, r, r64 in zip(got, ref, ref64):
        assert g.shape == r.shape, (g.shape, r.shape)
        assert g.dtype == r.dtype, (g.dtype, r.dtype)
        if r.dtype.is_floating_point:
            rtol, atol = tol or TOL[r.dtype]
            torch.testing.assert_close(g.double(), r64.double(), rtol=rtol, atol=atol, equal_nan=True)
        else:
            torch.testing.assert_close(g, r)
    return k


def _retyped(sub: Graph, inputs) -> Graph:
    """``sub`` re-run in float64: the interpreter follows the inputs' dtypes
    for most ops; casts to low precision are kept (they are part of the semantics)."""
    return sub
