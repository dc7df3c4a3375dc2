"""Kernel selection for the nodes of an optimised graph.

Code generators are tried in order for each fused group; the first that
accepts it supplies the launcher. A group no generator accepts runs through
the reference implementation of its ops.
"""
from __future__ import annotations

from typing import Any

from braze.compiler.report import GraphReport
from braze.ir import Graph, Node

# Each generator: (name, fn(node, graph, options) -> launcher | None).
GENERATORS: list = []


def kernels_for(graph: Graph, options, report: GraphReport) -> dict[Node, Any]:
    launchers: dict[Node, Any] = {}
    if options.backend == "torch":
        return launchers
    for n in graph.compute_nodes:
        for name, gen in GENERATORS:
            k = gen(n, graph, options)
            if k is not None:
                launchers[n] = k
                report.kernels.append(k.record())
                break
    return launchers
