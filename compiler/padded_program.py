"""Padding-eliminated programs replayed from CUDA graphs.

A graph whose padding was eliminated synchronises once per call to count
the valid tokens T, so one CUDA graph cannot hold it. With ``cuda_graphs``
the driver splits it: the prologue (``padding_index`` on the mask input) runs
eagerly and rounds T up to a bucket (eight buckets per doubling, at least
64 tokens); the body, whose shapes are then fixed per bucket, is an ordinary
program whose plans are captured and replayed per bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from braze.ir import Graph, Node, rewrite
from braze.ir.padding import padding_index_ref

OUTPUT_NAMES = ("idx", "cu_seqlens", "pos", "batch", "dst")


def token_bucket(t: int) -> int:
    """Round-up step for T tokens: eight buckets per doubling, at least 64."""
    return max(64, 1 << max(t.bit_length() - 4, 0))


@dataclass(frozen=True)
class PaddingSplit:
    mask_input: int      # position of the mask among the graph's inputs
    symbol: str
    body: Graph          # the graph with padding_index's outputs as trailing inputs


def split_padding_prologue(graph: Graph) -> Optional[PaddingSplit]:
    pis = [n for n in graph.compute_nodes if n.op == "padding_index"]
    if len(pis) != 1 or pis[0].args[0].node not in graph.inputs:
        return None
    pi = pis[0]
    new = [Node("input", (f"padding.{name}",), types=(t,), name=f"padding_{name}")
           for name, t in zip(OUTPUT_NAMES, pi.types)]
    last_input = max(graph.nodes.index(n) for n in graph.inputs)
    nodes = graph.nodes[:last_input + 1] + tuple(new) + graph.nodes[last_input + 1:]
    widened = replace(graph, nodes=nodes, inputs=graph.inputs + tuple(new), sym_bounds=())

    def rule(n, b):
        return tuple(x.out() for x in new) if b.current is pi else None

    body = rewrite(widened, rule)
    return PaddingSplit(graph.inputs.index(pi.args[0].node), pi.attr("symbol"), body)


class PaddedProgram:
    """Runs the prologue, then the body program (CUDA-graph plans per bucket)."""

    def __init__(self, graph: Graph, split: PaddingSplit, body_program):
        self.graph = graph
        self.split = split
        self.body = body_program
        self.report = body_program.report

    def __call__(self, *inputs: torch.Tensor, sym_values: Sequence[int] = ()):
        mask = inputs[self.split.mask_input]
        extra = padding_index_ref(mask, symbol=self.split.symbol, bucket=token_bucket)
        return self.body(*inputs, *extra, sym_values=sym_values)

    @property
    def num_plans(self) -> int:
        return self.body.num_plans
