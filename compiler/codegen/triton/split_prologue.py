"""A GEMM group with a row-scale prologue as the norm's own kernel, then the library.

A decode GEMM group may hold the norm that computes its A operand
(``row_scale.py``); the template then runs norm and GEMM in one kernel. Where
the library GEMM is the faster one (cuBLAS on the LM head at one token), the
op-by-op library candidate would run the norm as five or six torch kernels.
This candidate runs the prologue as one generated Triton reduction kernel
(what the norm was before it joined the group) and the rest of the group, the
GEMM and its epilogue, through the library: the launches of the unfused graph.
Selection measures it beside the template and the op-by-op call.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch

from braze.autotune import compile_only
from braze.autotune.space import Config, Space
from braze.compiler.codegen.triton import reduction
from braze.compiler.codegen.triton.indexing import Unsupported
from braze.compiler.codegen.triton.kernel import TritonKernel
from braze.compiler.codegen.triton.row_scale import row_scale
from braze.ir import Graph, Node, print_graph
from braze.ir.fused import subgraph_of
from braze.ir.interpreter import interpret

GEMMS = ("mm", "addmm", "quant_linear")


@dataclass
class SplitPrologueKernel:
    """The prologue's Triton kernel (reading group inputs ``pre_slots``) writes A's
    rows; ``rest`` (the GEMM and its epilogue) runs through the library on
    ``rest_operands``: None for those rows, else a group input slot."""

    node: Node
    prologue: TritonKernel
    pre_slots: tuple
    rest: Graph
    rest_operands: tuple
    backend: str = "triton"
    name: str = ""
    source: str = field(default="", repr=False)
    space: Space = field(default=None, repr=False)
    # NOTE: timed by the quick selection beside the library calls (autotune/select.py):
    # a reduction template kernel and library calls, no riskier than either alone
    quick_measure: bool = True

    def __post_init__(self):
        self.name = self.name or f"split_{self.prologue.gen.name}"
        self.source = self.prologue.source
        self.space = self.prologue.space

    def key(self) -> str:
        return hashlib.sha256(f"split-prologue|{print_graph(self.rest)}|{self.prologue.key()}".encode()).hexdigest()[:20]

    def problem(self, env: Mapping[str, int]) -> dict:
        return self.prologue.problem(env)

    def compile(self, config: Config) -> Callable[..., Any]:
        pre = self.prologue.compile(config)
        rest, pre_slots, ops, single = self.rest, self.pre_slots, self.rest_operands, len(self.rest.outputs) == 1

        def run(*xs):
            rows = pre(*(xs[i] for i in pre_slots))
            operands = [rows if i is None else xs[i] for i in ops]
            if compile_only.active():
                # NOTE: a worker only builds the prologue's kernel; the library part needs shapes only.
                outs = [torch.empty_strided(m.shape, m.stride(), dtype=m.dtype, device=xs[0].device)
                        for m in interpret(rest, *(x.to("meta") for x in operands))]
            else:
                outs = interpret(rest, *operands)
            return outs[0] if single else tuple(outs)
        run.__name__ = self.name
        return run


def split_kernel(node: Node) -> Optional[SplitPrologueKernel]:
    """The split candidate of a ``gemm`` group with a row-scale prologue, else None."""
    sub: Graph = node.attr("graph")
    gemms = [n for n in sub.compute_nodes if n.op in GEMMS]
    if len(gemms) != 1:
        return None
    g = gemms[0]
    a = g.args[1] if g.op == "addmm" else g.args[0]
    k = a.type.shape[-1]
    try:
        rs = row_scale(sub, g, a, k)
    except Unsupported:
        return None
    if rs is None:
        return None
    slots = {inp.out(): i for i, inp in enumerate(sub.inputs)}
    pre_nodes = [n for n in sub.compute_nodes if n in rs.nodes and n not in rs.views]
    pre_operands, pre_graph, pre_outs = subgraph_of(sub, pre_nodes, f"{sub.name}_prologue")
    if pre_outs != [rs.base] or any(v not in slots for v in pre_operands):
        return None
    rest_nodes = [n for n in sub.compute_nodes if n not in pre_nodes]
    rest_operands, rest_graph, rest_outs = subgraph_of(sub, rest_nodes, f"{sub.name}_rest")
    if list(rest_outs) != list(sub.outputs) or any(v != rs.base and v not in slots for v in rest_operands):
        return None
    try:
        gen = reduction.generate(pre_graph)
    except Unsupported:
        return None
    return SplitPrologueKernel(node, TritonKernel(None, pre_graph, gen), tuple(slots[v] for v in pre_operands),
                               rest_graph, tuple(None if v == rs.base else slots[v] for v in rest_operands))
