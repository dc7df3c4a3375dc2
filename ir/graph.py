"""Nodes, values and graphs of the braze IR.

A :class:`Node` is a small immutable record: an op name (a key of the op
registry), positional ``args`` and keyword ``kwargs`` in which tensor operands
appear as :class:`Value` references (nested in tuples where the op takes a
list), and the :class:`TensorType` of each of its outputs. A :class:`Graph`
holds its nodes in topological order; passes build new nodes and new graphs
rather than mutating shared ones.
"""
from __future__ import annotations

from functools import cached_property
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Optional

import torch

from braze.ir.types import Sym, TensorType


@dataclass(frozen=True)
class Value:
    """Output ``index`` of ``node``."""

    node: "Node"
    index: int = 0

    @property
    def type(self) -> TensorType:
        return self.node.types[self.index]

    @property
    def op(self) -> str:
        return self.node.op

    def __repr__(self) -> str:
        return f"Value({self.node.op}#{id(self.node) & 0xffff:x}:{self.index})"


@dataclass(frozen=True, eq=False)
class Node:
    """One operation. Identity is object identity (``eq=False``)."""

    op: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    types: tuple[TensorType, ...] = ()
    overload: str = ""
    name: str = ""

    def __post_init__(self):
        if isinstance(self.kwargs, dict):
            object.__setattr__(self, "kwargs", tuple(self.kwargs.items()))
        if not isinstance(self.args, tuple):
            object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.types, tuple):
            object.__setattr__(self, "types", tuple(self.types))

    # --- outputs ---------------------------------------------------------
    def out(self, index: int = 0) -> Value:
        return Value(self, index)

    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(Value(self, i) for i in range(len(self.types)))

    @property
    def type(self) -> TensorType:
        if len(self.types) != 1:
            raise ValueError(f"{self.op} has {len(self.types)} outputs, not one")
        return self.types[0]

    # --- operands --------------------------------------------------------
    @cached_property
    def inputs(self) -> tuple[Value, ...]:
        """Tensor operands, in order of appearance in args then kwargs.

        NOTE: cached (a node never changes after construction; rewrites make new
        nodes): passes read it millions of times on a 16-layer model."""
        return tuple(iter_values((self.args, tuple(v for _, v in self.kwargs))))

    @property
    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.kwargs:
            if k == key:
                return v
        return default

    def with_args(self, args: tuple, kwargs: Optional[tuple] = None) -> "Node":
        kwargs = self.kwargs if kwargs is None else kwargs
        if args == self.args and kwargs == self.kwargs:
            return self
        return replace(self, args=tuple(args), kwargs=tuple(kwargs))

    def __repr__(self) -> str:
        return f"Node({self.name or self.op}: {self.op}, types={[str(t) for t in self.types]})"


def iter_values(obj: Any) -> Iterator[Value]:
    """All Values in a nested structure of tuples/lists."""
    if isinstance(obj, Value):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from iter_values(o)


def map_values(obj: Any, fn: Callable[[Value], Any]) -> Any:
    """Rebuild a nested structure of tuples with ``fn`` applied to each Value."""
    if isinstance(obj, Value):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return tuple(map_values(o, fn) for o in obj)
    return obj


def map_syms(obj: Any, fn: Callable[[Sym], Any]) -> Any:
    if isinstance(obj, Sym):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return tuple(map_syms(o, fn) for o in obj)
    return obj


def has_syms(obj: Any) -> bool:
    if isinstance(obj, Sym):
        return True
    if isinstance(obj, (tuple, list)):
        return any(has_syms(o) for o in obj)
    return False


@dataclass(frozen=True, eq=False)
class Graph:
    """A function: input nodes, nodes in topological order, output values.

    ``constants`` maps the key of each ``constant`` node to its tensor
    (parameters and buffers of the captured module). ``sym_inputs`` names the
    symbols the caller passes as plain integers, after the tensor inputs.
    """

    nodes: tuple[Node, ...]
    inputs: tuple[Node, ...]
    outputs: tuple[Value, ...]
    constants: Mapping[str, torch.Tensor] = field(default_factory=dict)
    sym_inputs: tuple[str, ...] = ()
    name: str = "graph"
    # Symbols a node defines at run time (e.g. the valid-token count of
    # padding elimination), each with an upper bound used for planning.
    sym_bounds: tuple[tuple[str, Any], ...] = ()
    # Side effects on the caller's tensors: (i, j) says that after a call
    # graph input i holds the value of output j (a KV cache, a step counter).
    # The runtime writes it back unless the write already happened in place
    # (an op whose OpDef.writes names that input, see passes/reinplace.py).
    writes: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        for f in ("nodes", "inputs", "outputs", "sym_inputs", "sym_bounds", "writes"):
            v = getattr(self, f)
            if not isinstance(v, tuple):
                object.__setattr__(self, f, tuple(v))

    @property
    def input_values(self) -> tuple[Value, ...]:
        return tuple(n.out() for n in self.inputs)

    @property
    def compute_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op not in ("input", "constant"))

    def users(self) -> dict[Node, list[Node]]:
        """Consumers of each node (a node appears once per consumer)."""
        out: dict[Node, list[Node]] = {n: [] for n in self.nodes}
        for n in self.nodes:
            for v in set(n.inputs):
                out.setdefault(v.node, []).append(n)
        return out

    def value_users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in set(n.inputs):
                out.setdefault(v, []).append(n)
        return out

    def constant(self, node: Node) -> torch.Tensor:
        return self.constants[node.args[0]]

    def with_nodes(self, nodes, outputs=None, constants=None) -> "Graph":
        return replace(self, nodes=tuple(nodes), outputs=tuple(self.outputs if outputs is None else outputs),
                       constants=self.constants if constants is None else constants)

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.compute_nodes:
            out[n.op] = out.get(n.op, 0) + 1
        return out

    # NOTE: str(graph) is the printer's text; ir/__init__.py installs it (the printer imports this module).
