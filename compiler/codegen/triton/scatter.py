"""Scatter stores: a group's output written through ``unpack`` (padding elimination).

A reduction or GEMM group may end in ``unpack(x, dst, batch=B, seq=S)``
(``ir/padding.py``) where ``x`` is one of the group's row-shaped values,
``[T, F...]`` with one packed token per row of the kernel's domain. Instead
of writing ``x`` and then scattering it in a second pass, the kernel stores
row ``r`` straight to padded row ``dst[r]`` of the output: the packed value
is never written and never read again (the final norm of an encoder, the LM
head of a decoder).

The output is allocated with one row more than ``B * S`` and zero-filled
(padding positions are zero, as ``unpack`` documents); bucket rows, whose
``dst`` is ``B * S``, land in that extra row, and the launcher returns the
first ``B * S`` rows as ``[B, S, F...]``.
"""
from __future__ import annotations

from dataclasses import dataclass

from braze.compiler.codegen.triton.indexing import Unsupported, eq, prod, size
from braze.compiler.codegen.triton.kernel import dtype_code, shape_code
from braze.ir import Graph, Node, Value


@dataclass(frozen=True)
class Scatter:
    """Output ``j`` is ``unpack(src, dst)``: row ``r`` of ``src`` goes to row ``dst[r]``."""

    j: int
    src: Value
    dst: Node       # the subgraph input holding the destinations, i64[T]
    rows: int       # B * S
    feature: tuple  # the output's trailing dims, F...


def scatters(graph: Graph) -> dict[int, Scatter]:
    """The group's scatter outputs by output index (raises Unsupported where ``unpack`` is
    anything but the last step of an output)."""
    out: dict[int, Scatter] = {}
    outputs = set(graph.outputs)
    for n in graph.compute_nodes:
        if n.op != "unpack":
            continue
        if n.out() not in outputs or any(n.out() in m.inputs for m in graph.compute_nodes):
            raise Unsupported("unpack inside a group: only a group output may be unpacked")
        src, dst = n.args[0], n.args[1]
        if dst.node.op != "input":
            raise Unsupported("unpack destinations computed inside the group")
        batch, seq = n.attr("batch"), n.attr("seq")
        if not isinstance(batch, int) or not isinstance(seq, int):
            raise Unsupported(f"unpack to a symbolic [{batch}, {seq}] layout")
        if src.type.rank < 1 or not eq(size(src.type.shape[0]), size(dst.type.shape[0])):
            raise Unsupported(f"unpack of {src.type} with destinations {dst.type}")
        j = graph.outputs.index(n.out())
        out[j] = Scatter(j, src, dst.node, batch * seq, tuple(src.type.shape[1:]))
    return out


def domain_value(graph: Graph, j: int, sc: dict[int, Scatter]) -> Value:
    """The value the kernel computes for output ``j`` (the packed one for a scatter)."""
    return sc[j].src if j in sc else graph.outputs[j]


def check_rows(s: Scatter, rows, per_row) -> None:
    """A scatter moves whole rows of the kernel's domain: ``src`` is ``[rows, per_row]``."""
    if not (eq(size(s.src.type.shape[0]), size(rows)) and eq(prod(s.feature), size(per_row))):
        raise Unsupported(f"unpack of {s.src.type}: its rows are not the kernel's {rows} rows")


def dst_rows(em, s: Scatter, ops, rows: str = "r", rmask: str = "rmask") -> str:
    """Emit the load of the destination rows of the program's rows; returns the variable."""
    opd = ops[s.dst]
    name = f"dst{s.j}"
    em.line(f"{name} = tl.load({opd.ptr} + {rows} * {opd.strides[0]}, mask={rmask}, other=0)")
    return name


def alloc_lines(graph: Graph, sc: dict[int, Scatter], indent: str = "    ") -> list[str]:
    """Output allocations: ``torch.empty`` as usual, a zeroed ``[B * S + 1, F...]`` for a scatter."""
    lines = []
    for j, v in enumerate(graph.outputs):
        shape = shape_code((sc[j].rows + 1,) + sc[j].feature) if j in sc else shape_code(v.type.shape)
        fill = "zeros" if j in sc else "empty"
        lines.append(f"{indent}out{j} = torch.{fill}({shape}, dtype={dtype_code(v.type.dtype)}, device=in0.device)")
    return lines


def returned(graph: Graph, sc: dict[int, Scatter]) -> str:
    """The launcher's return expression: a scatter output drops its extra row."""
    outs = [f"out{j}[:-1].view({shape_code(graph.outputs[j].type.shape)})" if j in sc else f"out{j}"
            for j in range(len(graph.outputs))]
    return ", ".join(outs)


__all__ = ["Scatter", "scatters", "domain_value", "check_rows", "dst_rows", "alloc_lines", "returned"]
