"""Building graphs and rewriting them node by node."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Optional, Sequence, Union

import torch

from braze.ir.graph import Graph, Node, Value, map_values
from braze.ir.infer import infer_types
from braze.ir.types import TensorType, sym


class Builder:
    """Accumulates nodes in topological order (each node after its operands)."""

    def __init__(self, constants: Optional[dict] = None):
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self.constants: dict[str, torch.Tensor] = dict(constants or {})
        # NOTE: during ``rewrite``, the original (not remapped) node being visited.
        self.current: Optional[Node] = None

    def input(self, name: str, type_or_shape, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Value:
        t = type_or_shape if isinstance(type_or_shape, TensorType) else TensorType(
            tuple(sym(d) if isinstance(d, str) else d for d in type_or_shape), dtype, device)
        n = Node("input", (name,), types=(t,), name=name)
        self.inputs.append(n)
        self.nodes.append(n)
        return n.out()

    def constant(self, tensor: torch.Tensor, key: Optional[str] = None) -> Value:
        key = key or f"c{len(self.constants)}"
        while key in self.constants and self.constants[key] is not tensor:
            key = key + "_"
        self.constants[key] = tensor
        n = Node("constant", (key,), types=(TensorType.of(tensor),), name=key.replace(".", "_"))
        self.nodes.append(n)
        return n.out()

    def call(self, op: str, *args, overload: str = "", name: str = "", **kwargs) -> Union[Value, tuple[Value, ...]]:
        """Append ``op(*args, **kwargs)`` with types from its type rule."""
        kw = tuple(kwargs.items())
        types = infer_types(op, args, kw, overload)
        n = self.append(Node(op, tuple(args), kw, types, overload=overload, name=name))
        return n.out() if len(types) == 1 else n.outputs

    def append(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def graph(self, outputs: Sequence[Value], sym_inputs: Iterable[str] = (), name: str = "graph") -> Graph:
        return Graph(tuple(self.nodes), tuple(self.inputs), tuple(outputs), self.constants, tuple(sym_inputs), name)


Rule = Callable[[Node, Builder], Optional[Sequence[Value]]]


def rewrite(graph: Graph, rule: Rule, dce: bool = True) -> Graph:
    """Rebuild ``graph`` node by node.

    For each node (its operands already remapped), ``rule(node, builder)``
    returns ``None`` to keep it, or the Values that replace its outputs,
    appending any new nodes to ``builder``. Unused nodes are dropped.
    """
    env: dict[Value, Value] = {}
    b = Builder(graph.constants)

    def remap(v: Value) -> Value:
        return env.get(v, v)

    for n in graph.nodes:
        if n.op == "input":
            b.inputs.append(n)
            b.append(n)
            continue
        n2 = n.with_args(map_values(n.args, remap), map_values(n.kwargs, remap))
        b.current = n
        repl = None if n.op == "constant" else rule(n2, b)
        if repl is None:
            b.append(n2)
            if n2 is not n:
                for i in range(len(n.types)):
                    env[Value(n, i)] = Value(n2, i)
        else:
            repl = tuple(repl)
            if len(repl) != len(n.types):
                raise ValueError(f"rewrite of {n.op} gave {len(repl)} values for {len(n.types)} outputs")
            for i, r in enumerate(repl):
                env[Value(n, i)] = r
    out = replace(graph, nodes=tuple(b.nodes), inputs=tuple(b.inputs), outputs=tuple(remap(v) for v in graph.outputs),
                  constants=b.constants)
    return eliminate_dead(out) if dce else out


def ancestors(values: Iterable[Value]) -> set[Node]:
    """The nodes of ``values`` and every node they depend on."""
    seen: set[Node] = set()
    stack = [v.node for v in values]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(v.node for v in n.inputs)
    return seen


def eliminate_dead(graph: Graph) -> Graph:
    """Drop nodes no output depends on (inputs always stay), and unused constants."""
    live = ancestors(graph.outputs)
    nodes = tuple(n for n in graph.nodes if n in live or n.op == "input")
    if len(nodes) == len(graph.nodes):
        return graph
    used = {n.args[0] for n in nodes if n.op == "constant"}
    consts = {k: v for k, v in graph.constants.items() if k in used}
    return replace(graph, nodes=nodes, constants=consts)
