"""braze's own ops: graph inputs and constants, and the fused group.

Passes add more of their own (attention, pack/unpack) in their modules under
``ir/``; each is registered here or there with its category, type rule and
torch reference.
"""
from __future__ import annotations

from braze.ir.registry import Category, OpDef, register


def _io_ref(*args, **kwargs):
    raise RuntimeError("input and constant nodes are bound by the interpreter, not called")


def _io_infer(*args, **kwargs):
    raise TypeError("input and constant nodes carry their declared type")


register(OpDef("input", Category.IO, _io_ref, infer=_io_infer, doc="a graph input, args=(name,)"))
register(OpDef("constant", Category.IO, _io_ref, infer=_io_infer,
               doc="a parameter or buffer, args=(key in Graph.constants,)"))


def _fused_ref(*inputs, graph, kind="", **_):
    """Run the fused group's subgraph with the reference interpreter."""
    from braze.ir.interpreter import interpret

    outs = interpret(graph, *inputs)
    return outs if len(outs) > 1 else outs[0]


def _fused_infer(*inputs, graph, **_):
    return tuple(v.type for v in graph.outputs)


register(OpDef("fused", Category.FUSED, _fused_ref, infer=_fused_infer,
               doc="a fusion group: kwargs graph=<subgraph>, kind=<pointwise|reduction|gemm|...>"))
