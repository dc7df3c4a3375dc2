"""A GEMM group as the library GEMM followed by one generated epilogue kernel.

The GEMM template fuses a group's epilogue into its own tiles; where the
library GEMM is faster (cuBLAS on shapes the template does not win), the
op-by-op library candidate runs every epilogue op as its own kernel: the
gate/up projection's ``silu(y[:, :I]) * y[:, I:]`` is a GEMM, a SiLU and a
multiply. This candidate keeps the library GEMM and runs the whole epilogue
as one Triton pointwise kernel reading the product: two launches instead of
three or more. Offered only where the epilogue has at least two ops (with
one, it is the op-by-op call); selection measures it beside the template and
the library call.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch

from braze.autotune import compile_only
from braze.autotune.space import Config, Space
from braze.compiler.codegen.triton import pointwise
from braze.compiler.codegen.triton.indexing import Unsupported
from braze.compiler.codegen.triton.kernel import TritonKernel
from braze.ir import Graph, Node, print_graph
from braze.ir.fused import subgraph_of
from braze.ir.interpreter import interpret

GEMMS = ("mm", "addmm", "bmm")
VIEWS = ("reshape", "view", "permute", "expand", "slice", "select")


@dataclass
class SplitGemmKernel:
    """The library GEMM (``pre``: the GEMM and the views that feed it), then the
    epilogue's Triton kernel; ``epi_operands[i]`` is None for the product, else the
    group input slot the kernel's i-th operand comes from."""

    node: Node
    pre: Graph
    pre_slots: tuple
    epilogue: TritonKernel
    epi_operands: tuple
    backend: str = "triton"
    name: str = ""
    source: str = field(default="", repr=False)
    space: Space = field(default=None, repr=False)
    # NOTE: timed by the quick selection beside the library calls (autotune/select.py):
    # a library GEMM and a pointwise template kernel, no riskier than either alone
    quick_measure: bool = True

    def __post_init__(self):
        self.name = self.name or f"split_{self.epilogue.gen.name}"
        self.source = self.epilogue.source
        self.space = self.epilogue.space

    def key(self) -> str:
        return hashlib.sha256(f"split|{print_graph(self.pre)}|{self.epilogue.key()}".encode()).hexdigest()[:20]

    def problem(self, env: Mapping[str, int]) -> dict:
        return self.epilogue.problem(env)

    def compile(self, config: Config) -> Callable[..., Any]:
        epi = self.epilogue.compile(config)
        pre, pre_slots, ops = self.pre, self.pre_slots, self.epi_operands

        def run(*xs):
            operands = [xs[i] for i in pre_slots]
            if compile_only.active():
                # NOTE: a worker only builds the epilogue kernel: the product's shape, dtype
                # and strides are what it needs, not a GEMM on the CPU.
                (meta,) = interpret(pre, *(x.to("meta") for x in operands))
                product = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=operands[0].device)
            else:
                (product,) = interpret(pre, *operands)
            return epi(*(product if i is None else xs[i] for i in ops))
        run.__name__ = self.name
        return run


def split_kernel(node: Node) -> Optional[SplitGemmKernel]:
    """The split candidate of a ``gemm`` group, or None where it would not save a launch."""
    sub: Graph = node.attr("graph")
    gemms = [n for n in sub.compute_nodes if n.op in GEMMS]
    if len(gemms) != 1 or len(gemms[0].types) != 1:
        return None
    gemm = gemms[0]
    pre = {gemm}
    for n in reversed(sub.compute_nodes):   # the views only the GEMM reads
        if n.op in VIEWS and n not in pre and all(u in pre for u in _users(sub, n)):
            pre.add(n)
    epi_nodes = [n for n in sub.compute_nodes if n not in pre]
    if sum(n.op not in VIEWS for n in epi_nodes) < 2:
        return None
    slots = {inp.out(): i for i, inp in enumerate(sub.inputs)}
    pre_operands, pre_graph, pre_outs = subgraph_of(sub, [n for n in sub.compute_nodes if n in pre], "pre")
    if pre_outs != [gemm.out()] or any(v not in slots for v in pre_operands):
        return None
    epi_operands, epi_graph, epi_outs = subgraph_of(sub, epi_nodes, f"{sub.name}_epilogue")
    if list(epi_outs) != list(sub.outputs) or any(v != gemm.out() and v not in slots for v in epi_operands):
        return None
    try:
        gen = pointwise.generate(epi_graph)
    except Unsupported:
        return None
    return SplitGemmKernel(node, pre_graph, tuple(slots[v] for v in pre_operands), TritonKernel(None, epi_graph, gen),
                           tuple(None if v == gemm.out() else slots[v] for v in epi_operands))


def _users(sub: Graph, n: Node) -> list:
    out = n.out()
    return [m for m in sub.compute_nodes if out in m.inputs]
