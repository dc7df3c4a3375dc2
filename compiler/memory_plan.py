"""Liveness of a program's intermediates, and the memory it implies.

A plan (``compiler/runtime.build_plan``) runs the nodes in order and drops
each intermediate right after its last reader, so the caching allocator
hands the block to the next allocation of that size: buffers are reused by
liveness. This module is that rule, computed once per graph:

- ``lifetimes(graph)``: for every value a node produces, the index of the
  node that makes it and of the last node that reads it (the graph's
  outputs live to the end);
- ``storages(graph)``: values that share memory (a view and its base) form
  one storage, alive while any of them is;
- ``peak_bytes(graph, env)``: the largest sum of live storages over the
  node sequence, for one binding of the symbols (what ``braze.explain``
  reports beside eager's peak).

NOTE: a value is never dropped before its last reader has run, whatever its
storage: a view keeps its base's memory alive by itself (PyTorch refcounts
the storage), so dropping names early is safe and dropping them late only
costs memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from braze.ir import Category, Graph, Value, get_op
from braze.ir.types import eval_dim

# Ops whose output may share its first operand's memory (PyTorch views).
_ALIASING = {"reshape", "view", "_unsafe_view", "permute", "transpose", "t", "expand", "slice", "select",
             "unsqueeze", "squeeze", "alias", "detach", "diagonal", "as_strided", "narrow", "unflatten",
             "flatten", "split", "split_with_sizes", "unbind", "chunk", "movedim", "contiguous", "expand_as"}


@dataclass(frozen=True)
class Lifetime:
    value: Value
    first: int            # index of the node that produces it
    last: int             # index of the last node that reads it (len(nodes) for an output)


def lifetimes(graph: Graph) -> dict[Value, Lifetime]:
    """Every value produced by a compute node, with its first and last node index."""
    end = len(graph.nodes)
    out: dict[Value, Lifetime] = {}
    for i, n in enumerate(graph.nodes):
        if n.op in ("input", "constant"):
            continue
        for v in n.outputs:
            out[v] = Lifetime(v, i, i)
        for v in n.inputs:
            if v in out:
                out[v] = Lifetime(v, out[v].first, i)
    for v in graph.outputs:
        if v in out:
            out[v] = Lifetime(v, out[v].first, end)
    return out


def drops_after(graph: Graph) -> dict[int, list[Value]]:
    """Node index -> the values whose last reader it is (dropped right after it runs)."""
    keep = set(graph.outputs)
    out: dict[int, list[Value]] = {}
    for v, life in lifetimes(graph).items():
        if v not in keep:
            out.setdefault(life.last, []).append(v)
    return out


def storages(graph: Graph) -> dict[Value, Value]:
    """Value -> the value owning its memory (itself unless it is a view of another value)."""
    owner: dict[Value, Value] = {}
    for n in graph.nodes:
        for v in n.outputs:
            base = n.args[0] if n.args else None
            aliasing = n.op in _ALIASING or get_op(n.op).writes is not None
            if aliasing and isinstance(base, Value):
                owner[v] = owner.get(base, base)
            else:
                owner[v] = v
    return owner


def _bytes(v: Value, env: Mapping[str, int]) -> Optional[int]:
    n = v.type.dtype.itemsize
    for d in v.type.shape:
        try:
            n *= eval_dim(d, env)
        except KeyError:
            return None
    return n


def peak_bytes(graph: Graph, env: Mapping[str, int] = {}) -> int:
    """Largest total size of live intermediate storages (inputs and constants excluded)."""
    owner = storages(graph)
    lives = lifetimes(graph)
    span: dict[Value, list[int]] = {}
    for v, life in lives.items():
        o = owner.get(v, v)
        if o.node.op in ("input", "constant") or get_op(o.node.op).category == Category.IO:
            continue
        s = span.setdefault(o, [life.first, life.last])
        s[0], s[1] = min(s[0], life.first), max(s[1], life.last)
    events: list[tuple[int, int]] = []
    for o, (a, b) in span.items():
        size = _bytes(o, env) or 0
        events.append((a, size))
        events.append((b + 1, -size))
    peak = cur = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        cur += delta
        peak = max(peak, cur)
    return peak
