"""Scatter stores: a group's output written through ``unpack`` (padding elimination).

A reduction or GEMM group may end in ``unpack(x, dst, batch=B, seq=S)``
(``ir/padding.py``) where ``x`` is one of the group's row-shaped values,
``[T, F...]`` with one packed token per row of the kernel's domain. Instead
of writing ``x`` and then scattering it in a second pass, the kernel stores
row ``r`` straight to padded row ``dst[r]`` of the output: the packed value
is never written and never read again (the final norm of an encoder, the LM
head of a decoder).

The output is allocated with one row more than ``B * S``; bucket rows, whose
``dst`` is ``B * S``, land in that extra row, and the launcher returns the
first ``B * S`` rows as ``[B, S, F...]``. Before the kernel, the rows no packed
row goes to (padding positions: zero, as ``unpack`` documents) are zeroed by
``_zero_padding_rows``, so valid rows are written once (a zero-filled buffer
would write them twice: 2.2 GB more for the LM head of the 1B model on 8 x 2048).
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


def dst_rows(em, s: Scatter, rows: str = "r", rmask: str = "rmask") -> str:
    """Emit the load of the destination rows of the program's rows; returns the variable."""
    opd = em.operands[s.dst]
    name = f"dst{s.j}"
    em.line(f"{name} = tl.load({opd.ptr} + {rows} * {opd.strides[0]}, mask={rmask}, other=0)")
    return name


def alloc_lines(graph: Graph, sc: dict[int, Scatter], indent: str = "    ") -> list[str]:
    """Output allocations; a scatter output is ``[B * S + 1, F...]`` with its padding rows zeroed."""
    lines = []
    for j, v in enumerate(graph.outputs):
        shape = shape_code((sc[j].rows + 1,) + sc[j].feature) if j in sc else shape_code(v.type.shape)
        lines.append(f"{indent}out{j} = torch.empty({shape}, dtype={dtype_code(v.type.dtype)}, device=in0.device)")
        if j in sc:
            lines.append(f"{indent}_zero_padding_rows(out{j}, in{graph.inputs.index(sc[j].dst)}, {sc[j].rows})")
    return lines


HOST = '''
@triton.jit
def zero_padding_rows_kernel(OUT, WRITTEN, ROWS, F, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    """Zeros in the rows of OUT ([ROWS, F], row-major) whose WRITTEN flag is 0."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    written = tl.load(WRITTEN + r, mask=r < ROWS, other=1)
    ptrs = OUT + r.to(tl.int64)[:, None] * F + f[None, :]
    zero = tl.full((BLOCK_R, BLOCK_F), 0, OUT.dtype.element_ty)
    tl.store(ptrs, zero, mask=(written == 0)[:, None] & (f < F)[None, :])


def _zero_padding_rows(out, dst, rows):
    """Zero the first ``rows`` rows of ``out`` that no destination in ``dst`` names."""
    written = torch.zeros(rows + 1, dtype=torch.int8, device=out.device)
    written[dst] = 1    # NOTE: an index_put on the device, no host synchronisation
    f = out[0].numel() if out.shape[0] else 0
    if rows and f:
        grid = ((rows + 31) // 32, (f + 1023) // 1024)
        zero_padding_rows_kernel[grid](out, written, rows, f, BLOCK_R=32, BLOCK_F=1024)


'''


def host_code(sc: dict[int, Scatter]) -> str:
    """What the launcher of a group with scatter outputs needs."""
    return HOST if sc else ""


def returned(graph: Graph, sc: dict[int, Scatter]) -> str:
    """The launcher's return expression: a scatter output drops its extra row."""
    outs = [f"out{j}[:-1].view({shape_code(graph.outputs[j].type.shape)})" if j in sc else f"out{j}"
            for j in range(len(graph.outputs))]
    return ", ".join(outs)


__all__ = ["Scatter", "scatters", "domain_value", "check_rows", "dst_rows", "alloc_lines", "returned",
           "host_code"]
