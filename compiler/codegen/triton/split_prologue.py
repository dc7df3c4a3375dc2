"""A GEMM group with a row-scale prologue as the norm's own kernel, then the GEMM.

A decode GEMM group may hold the norm that computes its A operand
(``row_scale.py``); the template then runs norm and GEMM in one kernel. Where
the library GEMM is the faster one (cuBLAS on the LM head at one token), the
op-by-op library candidate would run the norm as five or six torch kernels.
This candidate runs the prologue as one generated Triton reduction kernel
(what the norm was before it joined the group) and the rest of the group, the
GEMM and its epilogue, through the library: the launches of the unfused graph.
Selection measures it beside the template and the op-by-op call.

Quantized weights (``quant_linear``) have no library GEMM worth the name (it
dequantizes the whole matrix each call: 4.6 ms for the int4 LM head on an
H200): there the rest runs through the GEMM template, without the prologue,
at its default config for the shape. Measured on an H200 (seventh session),
the int8 LM head with its norm folded in took 139.5 us at best, the same GEMV
without it 82.8 us (int4: 140.2 against 102.6): the folded norm rebuilds A for
every weight element of the runs form, which costs most where N is largest.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch

from braze.autotune import compile_only
from braze.autotune.space import Config, Space
from braze.compiler.codegen.triton import gemm, reduction
from braze.compiler.codegen.triton.indexing import Unsupported
from braze.compiler.codegen.triton.kernel import TritonKernel
from braze.compiler.codegen.triton.row_scale import row_scale
from braze.ir import Graph, Node, print_graph
from braze.ir.fused import subgraph_of
from braze.ir.interpreter import bind_symbols, interpret

GEMMS = ("mm", "addmm", "quant_linear")


@dataclass
class SplitPrologueKernel:
    """The prologue's Triton kernel (reading group inputs ``pre_slots``) writes A's
    rows; ``rest`` (the GEMM and its epilogue) runs on ``rest_operands`` (None for
    those rows, else a group input slot) through the library, or through
    ``rest_kernel`` (the GEMM template) at its default config on ``device``."""

    node: Node
    prologue: TritonKernel
    pre_slots: tuple
    rest: Graph
    rest_operands: tuple
    rest_kernel: Optional[TritonKernel] = None
    device: Any = None
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
        rest = print_graph(self.rest) if self.rest_kernel is None else f"template|{self.rest_kernel.key()}"
        return hashlib.sha256(f"split-prologue|{rest}|{self.prologue.key()}".encode()).hexdigest()[:20]

    def problem(self, env: Mapping[str, int]) -> dict:
        return self.prologue.problem(env)

    def compile(self, config: Config) -> Callable[..., Any]:
        pre = self.prologue.compile(config)
        rest = self._rest_runner()
        pre_slots, ops, single = self.pre_slots, self.rest_operands, len(self.rest.outputs) == 1

        def run(*xs):
            rows = pre(*(xs[i] for i in pre_slots))
            outs = rest([rows if i is None else xs[i] for i in ops])
            return outs[0] if single else tuple(outs)
        run.__name__ = self.name
        return run

    def _rest_runner(self) -> Callable[[list], Any]:
        """``rest`` on its operands: the template's kernel at its default config for
        the operands' shapes (compiled once per shape), or the library."""
        rest, kernel = self.rest, self.rest_kernel
        if kernel is None:
            def library(operands):
                if compile_only.active():
                    # NOTE: a worker only builds the prologue's kernel; the library part needs shapes only.
                    return [torch.empty_strided(m.shape, m.stride(), dtype=m.dtype, device=operands[0].device)
                            for m in interpret(rest, *(x.to("meta") for x in operands))]
                return interpret(rest, *operands)
            return library
        compiled: dict = {}

        def template(operands):
            shapes = tuple((x.shape, x.dtype) for x in operands)
            fn = compiled.get(shapes)
            if fn is None:
                env = bind_symbols(rest, operands, check=False)
                fn = compiled[shapes] = kernel.compile(kernel.default_config(env, self.device))
            out = fn(*operands)   # under compile_only: builds the kernel (the worker's job), runs nothing
            return out if isinstance(out, tuple) else (out,)
        return template


def split_kernel(node: Node, device=None) -> Optional[SplitPrologueKernel]:
    """The split candidate of a ``gemm`` group with a row-scale prologue, else None; its
    GEMM through the template on ``device`` (a ``DeviceInfo``) where the weights are
    quantized, else through the library."""
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
        rest_kernel = TritonKernel(None, rest_graph, gemm.generate(rest_graph)) if g.op == "quant_linear" else None
    except Unsupported:
        return None
    if rest_kernel is not None and device is None:
        return None
    return SplitPrologueKernel(node, TritonKernel(None, pre_graph, gen), tuple(slots[v] for v in pre_operands),
                               rest_graph, tuple(None if v == rs.base else slots[v] for v in rest_operands),
                               rest_kernel, device)
