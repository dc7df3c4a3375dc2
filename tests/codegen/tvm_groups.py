"""Helpers of the TVM codegen tests: fused groups built with ``braze.ir.Builder``
and checked against the reference interpreter on fresh random inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from braze.autotune.space import device_info
from braze.ir import Builder, Graph, Node
from braze.ir.fused import fuse_groups
from braze.ir.interpreter import interpret

# (rtol, atol) against a float64 reference (float32 groups) or torch's own
# low-precision result (f16/bf16 groups)
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10), torch.float16: (1e-2, 1e-2),
       torch.bfloat16: (2e-2, 2e-2)}


@dataclass
class Group:
    """A fused node and the dtypes of the builder inputs ``x0, x1, ...`` it was made from."""

    node: Node
    dtypes: list

    @property
    def kind(self) -> str:
        return self.node.attr("kind")

    @property
    def sub(self) -> Graph:
        return self.node.attr("graph")


def group(build: Callable, kind: str, inputs: Sequence[tuple]) -> Group:
    """The ``fused`` node made of every compute node that ``build(b, *xs)`` adds,
    with ``xs`` inputs of ``(shape, dtype)`` (shape entries may be symbol names)."""
    b = Builder()
    xs = [b.input(f"x{i}", shape, dtype) for i, (shape, dtype) in enumerate(inputs)]
    outs = build(b, *xs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    g = b.graph(outs)
    g2 = fuse_groups(g, [(list(g.compute_nodes), kind)])
    node = [n for n in g2.nodes if n.op == "fused"][0]
    return Group(node, [dtype for _, dtype in inputs])


def random_like(shape, dtype, scale: float = 1.0):
    if dtype.is_floating_point:
        return (torch.randn(shape) * scale).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    return torch.randint(-8, 9, shape).to(dtype)


def kernel_of(g: Group):
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    return TVMKernel(g.node, g.kind, "cpu")


def env_of(g: Group, inputs) -> dict:
    env = {}
    for v, x in zip(g.node.args, operands(g, inputs)):
        for d, s in zip(v.type.shape, x.shape):
            if not isinstance(d, int):
                env[str(d)] = int(s)
    return env


def operands(g: Group, inputs: Sequence[torch.Tensor]) -> list:
    """The builder-ordered ``inputs`` in the fused node's operand order (first use)."""
    return [inputs[int(v.node.name[1:])] for v in g.node.args]


def check(g: Group, shapes: Optional[Sequence] = None, config: Optional[dict] = None, tol=None, inputs=None,
          kernel=None, scale: float = 1.0):
    """Run the TVM kernel of ``g`` (default config unless given) on fresh
    random inputs of ``shapes`` (or ``inputs``, in builder order) and compare
    every output with the interpreter: float32 groups against float64
    (inputs widened), others against torch at their own precision."""
    if inputs is None:
        inputs = [random_like(s, t, scale) for s, t in zip(shapes, g.dtypes)]
    xs = operands(g, inputs)
    k = kernel or kernel_of(g)
    cfg = config or k.space.default_config(k.problem(env_of(g, inputs)), device_info("cpu"))
    fn = k.compile(cfg)
    got = fn(*xs)
    got = got if isinstance(got, tuple) else (got,)
    ref = interpret(g.sub, *xs)
    all_f32 = all(x.dtype == torch.float32 for x in xs if x.dtype.is_floating_point)
    ref64 = interpret(g.sub, *[x.double() if x.dtype.is_floating_point else x for x in xs]) if all_f32 else ref
    assert len(got) == len(ref)
    for i, (a, r, r64) in enumerate(zip(got, ref, ref64)):
        assert a.shape == r.shape, f"output {i}: shape {tuple(a.shape)} != {tuple(r.shape)}"
        assert a.dtype == r.dtype, f"output {i}: dtype {a.dtype} != {r.dtype}"
        if r.dtype.is_floating_point:
            rtol, atol = tol or TOL[r.dtype]
            want = r64 if r64.dtype == torch.float64 else r
            torch.testing.assert_close(a.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True,
                                       msg=lambda m: f"output {i}: {m}")
        else:
            torch.testing.assert_close(a, r, msg=lambda m: f"output {i}: {m}")
    return k
