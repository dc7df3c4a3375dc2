"""What the library candidates of one matched form share (``library_gemm.py``,
``onednn_linear.py``, ``library_norm.py``): finding a group's operands among its
inputs, walking its op tree from an output, and the kernel protocol's plumbing
(a library call needs no config, its key is its name over the group's structure).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from braze.autotune.contract import problem_of, structural_key
from braze.autotune.space import EMPTY, Space
from braze.ir import Graph, Node, Value


def input_slot(sub: Graph, v) -> Optional[int]:
    """The group input slot whose value is ``v``, or None."""
    for i, inp in enumerate(sub.inputs):
        if inp.out() == v:
            return i
    return None


class OpTree:
    """The group's single-output nodes by the value they make: ``op(v, name)`` is the node of
    that op making ``v`` (positional arguments only), or None."""

    def __init__(self, sub: Graph):
        self.by_out = {n.out(): n for n in sub.compute_nodes if len(n.types) == 1}

    def op(self, v, name: str, overload: Optional[str] = None) -> Optional[Node]:
        n = self.by_out.get(v) if isinstance(v, Value) else None
        if n is None or n.op != name or n.kwargs or (overload is not None and n.overload != overload):
            return None
        return n


@dataclass
class FormKernel:
    """A library call for a group of one matched ``form`` (subclasses add ``compile``)."""

    node: Node
    form: Any
    name: str = "library"
    backend: str = "library"
    space: Space = EMPTY
    source: str = ""

    def key(self) -> str:
        return structural_key(self.node, self.name)

    def problem(self, env: Mapping[str, int]) -> dict:
        return problem_of(self.node, env)


__all__ = ["input_slot", "OpTree", "FormKernel"]
