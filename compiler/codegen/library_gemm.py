"""Library candidates for GEMM groups that one library call computes.

A projection followed by its residual add, ``add(mm(x, w), r)`` (the attention
output and MLP down projections of every decoder layer), is
``torch.addmm(r, x, w)``: cuBLAS (MKL on the CPU) with the residual as its C
matrix, one call where the op-by-op library candidate makes a GEMM and an add
kernel (at decode batch 1 on an H200, the 32 adds of a 16-layer step cost
39 us of 1227). The sum is rounded once instead of twice.

Registered as the generator "library_gemm"; selection measures it beside the
generated kernel and the op-by-op library call, so it only runs where it is
the fastest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from braze.autotune.contract import register_generator
from braze.autotune.space import Config
from braze.compiler.codegen.library_form import FormKernel, input_slot
from braze.ir import Graph, Node


@dataclass(frozen=True)
class AddmmForm:
    """Where ``torch.addmm(r, x, w)`` finds its operands among the group's inputs."""

    x: int
    w: int
    w_transposed: bool       # the group reads w through permute(w, (1, 0))
    r: int


def match(sub: Graph) -> Optional[AddmmForm]:
    """The addmm form of a group ``add(mm(x, w) [reshaped], r)``, or None."""
    nodes = sub.compute_nodes
    mms = [n for n in nodes if n.op == "mm"]
    adds = [n for n in nodes if n.op == "add"]
    if len(mms) != 1 or len(adds) != 1 or len(sub.outputs) != 1 or sub.outputs[0] != adds[0].out():
        return None
    mm, add = mms[0], adds[0]
    rest = [n for n in nodes if n is not mm and n is not add]
    w_t = False
    x, w = mm.args[0], mm.args[1]
    for n in rest:
        if n.op == "permute" and n.out() == w and tuple(n.args[1]) == (1, 0):
            w, w_t = n.args[0], True
        elif not (n.op in ("reshape", "view") and n.args[0] == mm.out()):
            return None
    views = [n for n in rest if n.op in ("reshape", "view")]
    prod_v = views[0].out() if views else mm.out()
    if add.overload != "Tensor" or add.kwargs or len(add.args) != 2 or prod_v not in add.args:
        return None
    r = add.args[1] if add.args[0] == prod_v else add.args[0]
    slots = [input_slot(sub, v) for v in (x, w, r)]
    if None in slots:
        return None
    dt = mm.out().type.dtype
    if r.type.dtype != dt or add.out().type.dtype != dt or not dt.is_floating_point:
        return None
    # NOTE: r has the shape of the sum, and of the product as the group views it (a reshape
    # of an [M, N] product keeps its size): r reshapes to [M, N].
    if not (tuple(r.type.shape) == tuple(add.out().type.shape) == tuple(prod_v.type.shape)):
        return None
    return AddmmForm(slots[0], slots[1], w_t, slots[2])


@dataclass
class AddmmKernel(FormKernel):
    """``torch.addmm(r, x, w)`` for a GEMM + residual group."""

    name: str = "library_addmm"

    def compile(self, config: Config) -> Callable[..., Any]:
        f = self.form

        def run(*xs):
            x, w, r = xs[f.x], xs[f.w], xs[f.r]
            w = w.t() if f.w_transposed else w
            out = torch.addmm(r.reshape(x.shape[0], w.shape[1]), x, w)
            return out.view(r.shape)
        run.__name__ = self.name
        return run


def generate(node: Node, graph: Graph, options, device) -> list:
    """The generator: an :class:`AddmmKernel` for a GEMM group of that form, else []."""
    if node.op != "fused" or node.attr("kind") != "gemm":
        return []
    form = match(node.attr("graph"))
    return [AddmmKernel(node, form)] if form is not None else []


register_generator("library_gemm", generate)
