"""A networkx view of a Graph: topological order, reachability, DOT export."""
from __future__ import annotations

from typing import Iterable

import networkx as nx

from braze.ir.graph import Graph, Node
from braze.ir.printer import format_type


def to_networkx(graph: Graph) -> nx.DiGraph:
    """Nodes are the graph's Nodes; an edge u -> v when v reads an output of u."""
    g = nx.DiGraph()
    for n in graph.nodes:
        g.add_node(n, op=n.op)
    for n in graph.nodes:
        for v in n.inputs:
            g.add_edge(v.node, n, index=v.index)
    return g


def topological_order(graph: Graph) -> list[Node]:
    """Nodes in a topological order, stable with respect to the stored order."""
    pos = {n: i for i, n in enumerate(graph.nodes)}
    return list(nx.lexicographical_topological_sort(to_networkx(graph), key=lambda n: pos.get(n, -1)))


def find_cycle(graph: Graph) -> list[Node]:
    try:
        return [u for u, _ in nx.find_cycle(to_networkx(graph))]
    except nx.NetworkXNoCycle:
        return []


def reachable(g: nx.DiGraph, sources: Iterable[Node]) -> set[Node]:
    """All nodes reachable from ``sources`` (excluding the sources unless on a cycle)."""
    out: set[Node] = set()
    for s in sources:
        out |= nx.descendants(g, s)
    return out


def to_dot(graph: Graph, label_of=None) -> str:
    """Graphviz DOT text of the dataflow graph."""
    g = to_networkx(graph)
    ids = {n: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = [f'digraph "{graph.name}" {{', "  node [shape=box, fontname=monospace];"]
    for n in graph.nodes:
        label = label_of(n) if label_of else f"{n.name or n.op}\\n{n.op}\\n" + ", ".join(format_type(t) for t in n.types)
        shape = ' shape=ellipse' if n.op in ("input", "constant") else ""
        lines.append(f'  {ids[n]} [label="{label}"{shape}];')
    for u, v in g.edges:
        lines.append(f"  {ids[u]} -> {ids[v]};")
    lines.append("}")
    return "\n".join(lines)
