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
from braze.ir.padding import PaddedPositionRead, padding_index_ref

OUTPUT_NAMES = ("idx", "cu_seqlens", "pos", "batch", "dst")


def token_bucket(t: int) -> int:
    """Round-up step for T tokens: eight buckets per doubling, at least 64."""
    return max(64, 1 << max(t.bit_length() - 4, 0))


@dataclass(frozen=True)
class PaddingSplit:
    mask_input: int      # position of the mask among the graph's inputs
    symbol: str
    body: Graph          # the graph with padding_index's outputs as trailing inputs
    valid_positions: tuple = ()


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
    return PaddingSplit(graph.inputs.index(pi.args[0].node), pi.attr("symbol"), body,
                        tuple(pi.attr("valid_positions") or ()))


class PaddedProgram:
    """Runs the prologue, then the body program (CUDA-graph plans per bucket)."""

    def __init__(self, graph: Graph, split: PaddingSplit, body_program):
        self.graph = graph
        self.split = split
        self.body = body_program
        self.report = body_program.report

    def __call__(self, *inputs: torch.Tensor, sym_values: Sequence[int] = ()):
        mask = inputs[self.split.mask_input]
        extra = padding_index_ref(mask, symbol=self.split.symbol, bucket=token_bucket,
                                  valid_positions=self.split.valid_positions)
        return self.body(*inputs, *extra, sym_values=sym_values)

    @property
    def num_plans(self) -> int:
        return self.body.num_plans


def guarded_positions(graph: Graph) -> tuple:
    """The sequence positions ``graph``'s ``padding_index`` requires valid in every row."""
    return tuple(p for n in graph.compute_nodes if n.op == "padding_index" for p in n.attr("valid_positions") or ())


class PositionGuarded:
    """A padding-eliminated program whose graph reads fixed sequence positions in the padded
    layout (a pooler's token 0): where one is padding in some row (left padding),
    ``padding_index`` raises :class:`PaddedPositionRead` before anything is computed, and the
    graph runs without padding elimination (``dense()``, compiled on first need)."""

    def __init__(self, program, dense):
        self.program = program
        self.positions = guarded_positions(program.graph)
        self._dense_factory = dense
        self._dense = None
        self.fallbacks = 0

    def __getattr__(self, name):           # graph, report, launchers, num_plans: the packed program's
        program = self.__dict__.get("program")
        if program is None:
            raise AttributeError(name)
        return getattr(program, name)

    def dense(self):
        if self._dense is None:
            self._dense = self._dense_factory()
        return self._dense

    def __call__(self, *inputs: torch.Tensor, sym_values: Sequence[int] = ()):
        try:
            return self.program(*inputs, sym_values=sym_values)
        except PaddedPositionRead:
            self.fallbacks += 1
            return self.dense()(*inputs, sym_values=sym_values)

    def run(self, inputs, sym_values: Sequence[int] = ()):
        return self(*inputs, sym_values=sym_values)
