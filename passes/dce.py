"""Dead-code elimination: drop nodes no output depends on."""
from __future__ import annotations

from braze.ir import Graph, eliminate_dead


def dce(graph: Graph, ctx=None) -> Graph:
    return eliminate_dead(graph)
