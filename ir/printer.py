"""Readable text form of a Graph (parsed back by ``ir/parser.py``).

    graph llama(%input_ids: i64[2, s81]) {
      %w = constant("model.embed_tokens.weight") : f32[128, 64]
      %emb = embedding(%w, %input_ids) : f32[2, s81, 64]
      %var, %mean = var_mean.correction(%emb, [-1], correction=0, keepdim=True) : f32[2, s81, 1], f32[2, s81, 1]
      %f = fused(%emb, graph=@fused_0, kind="pointwise") : f32[2, s81, 64]
      return %f
    }
    graph fused_0(...) { ... }

Subgraphs (the ``graph=`` of fused nodes) follow their parent as separate
``graph`` blocks referenced by ``@name``. Devices other than the CPU follow
the type: ``bf16[8, 64]@cuda:0``.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from braze.ir.graph import Graph, Node, Value
from braze.ir.types import DTYPE_NAMES, Sym, TensorType

_IDENT = re.compile(r"^[A-Za-z_]\w*$")


def format_type(t: TensorType) -> str:
    s = str(t)
    return s if t.device == "cpu" else f"{s}@{t.device}"


class _Namer:
    def __init__(self):
        self.used: set[str] = set()
        self.names: dict[Value, str] = {}

    def fresh(self, hint: str) -> str:
        base = hint if hint and _IDENT.match(hint) else "v"
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def name_node(self, n: Node) -> list[str]:
        hint = n.name or n.op.replace("::", "_").lstrip("_")
        if len(n.types) == 1:
            names = [self.fresh(hint)]
        else:
            names = [self.fresh(f"{hint}_{i}") for i in range(len(n.types))]
        for i, nm in enumerate(names):
            self.names[Value(n, i)] = nm
        return names


def format_arg(a: Any, names: dict[Value, str], subgraphs: dict) -> str:
    if isinstance(a, Value):
        return "%" + names.get(a, f"<dangling {a.node.op}>")
    if isinstance(a, Sym):
        return a.expr
    if isinstance(a, bool) or a is None:
        return repr(a)
    if isinstance(a, float):
        if math.isinf(a) or math.isnan(a):
            return f"float('{a}')"
        return repr(a)
    if isinstance(a, (int, str)):
        return repr(a)
    if isinstance(a, torch.dtype):
        return str(a)
    if isinstance(a, torch.device):
        return f"device('{a}')"
    if isinstance(a, (torch.layout, torch.memory_format)):
        return str(a)
    if isinstance(a, (tuple, list)):
        return "[" + ", ".join(format_arg(x, names, subgraphs) for x in a) + "]"
    if isinstance(a, Graph):
        if a not in subgraphs:
            subgraphs[a] = _unique_graph_name(a.name, subgraphs)
        return "@" + subgraphs[a]
    raise TypeError(f"cannot print argument {a!r} of type {type(a).__name__}")


def _unique_graph_name(base: str, subgraphs: dict) -> str:
    taken = set(subgraphs.values())
    name, i = base or "sub", 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def format_node(n: Node, names: dict[Value, str], subgraphs: dict) -> str:
    lhs = ", ".join("%" + names[Value(n, i)] for i in range(len(n.types)))
    parts = [format_arg(a, names, subgraphs) for a in n.args]
    parts += [f"{k}={format_arg(v, names, subgraphs)}" for k, v in n.kwargs]
    op = n.op + (f".{n.overload}" if n.overload else "")
    types = ", ".join(format_type(t) for t in n.types)
    return f"{lhs} = {op}({', '.join(parts)}) : {types}"


def print_graph(g: Graph) -> str:
    subgraphs: dict[Graph, str] = {g: g.name or "graph"}
    blocks = []
    done: set = set()
    pending = [g]
    while pending:
        cur = pending.pop(0)
        if cur in done:
            continue
        done.add(cur)
        blocks.append(_print_one(cur, subgraphs[cur], subgraphs))
        pending.extend(s for s in subgraphs if s not in done)
    return "\n".join(blocks)


def _print_one(g: Graph, name: str, subgraphs: dict) -> str:
    namer = _Namer()
    for n in g.nodes:
        namer.name_node(n)
    names = namer.names
    params = ", ".join(f"%{names[n.out()]}: {format_type(n.type)}" for n in g.inputs)
    header = f"graph {name}({params})"
    if g.sym_inputs:
        header += " syms(" + ", ".join(g.sym_inputs) + ")"
    if g.sym_bounds:
        header += " bounds(" + ", ".join(f"{s} <= {b}" for s, b in g.sym_bounds) + ")"
    lines = [header + " {"]
    input_set = set(g.inputs)
    for n in g.nodes:
        if n in input_set:
            continue
        lines.append("  " + format_node(n, names, subgraphs))
    if g.writes:
        lines.append("  writes " + ", ".join(f"{i} <- {j}" for i, j in g.writes))
    outs = ", ".join(format_arg(v, names, subgraphs) for v in g.outputs)
    lines.append(f"  return {outs}".rstrip())
    lines.append("}")
    return "\n".join(lines)


DTYPE_TEXT = DTYPE_NAMES
