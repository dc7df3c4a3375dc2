"""ATen's ``layer_norm`` for the LayerNorm groups of the CPU (with the residual add before it).

Capture decomposes ``nn.LayerNorm`` into ``var_mean``, ``rsqrt`` and pointwise ops; the
fusion pass makes them one reduction group (with the residual add in front where a
block has one), and its library candidate then ran them op by op. On a two-core
AVX-512 Xeon a TVM kernel of GPT-2's 128 x 768 LayerNorm took 150-180 us a call and
ATen's fused ``native_layer_norm`` about 40 us. This candidate calls
``torch.nn.functional.layer_norm`` on the group's operands (after ``a + b`` where the
group starts with the residual add, which it also returns when the group does).

Registered as the generator "library_norm", for float32 groups on the CPU: a library
candidate the quick selection times beside the others, so it only runs where it is the
fastest (GPU reductions have their Triton kernels; not measured there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from braze.autotune.contract import register_generator
from braze.autotune.space import Config
from braze.compiler.codegen.library_form import FormKernel, OpTree, input_slot
from braze.ir import Graph, Node, Value


@dataclass(frozen=True)
class NormForm:
    x: Optional[int]           # the normalised operand's slot (None: the residual sum)
    residual: Optional[tuple]  # the slots (a, b) of ``a + b`` normalised, if the group starts with it
    weight: Optional[int]
    bias: Optional[int]
    eps: float
    outputs: tuple             # per group output: "norm" or "sum"


def _affine(sub: Graph, users, y: Value, op_name: str, features) -> tuple:
    """``op_name(y, p)`` (either order) among ``users``: (node, the slot of ``p``), the slot
    None where ``p`` is not a float32 group input of shape ``[features]``; (None, None) if absent."""
    n = next((n for n in users if n.op == op_name and n.overload == "Tensor" and len(n.args) == 2 and y in n.args),
             None)
    if n is None:
        return None, None
    p = n.args[1] if n.args[0] == y else n.args[0]
    ok = isinstance(p, Value) and tuple(p.type.shape) == (features,) and p.type.dtype == torch.float32
    return n, input_slot(sub, p) if ok else None


def match(sub: Graph) -> Optional[NormForm]:
    """The layer_norm form of a reduction group, or None (every node must be part of it)."""
    nodes = list(sub.compute_nodes)
    vm = [n for n in nodes if n.op == "var_mean"]
    if len(vm) != 1:
        return None
    vm = vm[0]
    h, kw = vm.args[0], dict(vm.kwargs)
    dims = vm.args[1] if len(vm.args) > 1 else None
    rank = h.type.rank
    if (vm.overload != "correction" or kw.get("correction") != 0 or kw.get("keepdim") is not True
            or set(kw) != {"correction", "keepdim"}
            or dims is None or [d % rank for d in dims] != [rank - 1] or h.type.dtype != torch.float32
            or len(vm.args) != 2):
        return None
    var, mean = vm.outputs
    used = {vm}
    # (h - mean) * rsqrt(var + eps)
    users = [n for n in nodes if n is not vm]
    sub_n = next((n for n in users if n.op == "sub" and n.overload == "Tensor" and list(n.args) == [h, mean]), None)
    eps_add = next((n for n in users if n.op == "add" and n.overload == "Tensor" and len(n.args) == 2
                    and n.args[0] == var and isinstance(n.args[1], float)), None)
    rs = next((n for n in users if eps_add is not None and n.op == "rsqrt" and list(n.args) == [eps_add.out()]), None)
    if sub_n is None or rs is None:
        return None
    norm = next((n for n in users if n.op == "mul" and n.overload == "Tensor"
                 and set(n.args) == {sub_n.out(), rs.out()} and len(n.args) == 2), None)
    if norm is None:
        return None
    used |= {sub_n, eps_add, rs, norm}
    y, weight, bias = norm.out(), None, None
    for op_name in ("mul", "add"):   # the affine weight, then the bias (a bias alone is not LayerNorm's)
        if op_name == "add" and weight is None:
            break
        n, p = _affine(sub, users, y, op_name, h.type.shape[-1])
        if n is None:
            break
        if p is None:
            return None
        used.add(n)
        y = n.out()
        if op_name == "mul":
            weight = p
        else:
            bias = p
    x, residual = input_slot(sub, h), None
    if x is None:
        add = OpTree(sub).op(h, "add", "Tensor")
        if add is None or len(add.args) != 2:
            return None
        a, b = (input_slot(sub, v) for v in add.args)
        if a is None or b is None or any(tuple(v.type.shape) != tuple(h.type.shape) for v in add.args):
            return None
        residual = (a, b)
        used.add(add)
    outs = []
    for o in sub.outputs:
        outs.append("norm" if o == y else "sum" if residual is not None and o == h else None)
    if None in outs or "norm" not in outs or used != set(nodes):
        return None
    eps = float(eps_add.args[1])
    if not (eps >= 0 and math.isfinite(eps)):
        return None
    return NormForm(x, residual, weight, bias, eps, tuple(outs))


@dataclass
class LayerNormKernel(FormKernel):
    """``F.layer_norm`` over the last dimension (after the residual add, if the group has one)."""

    name: str = "library_layer_norm"

    def compile(self, config: Config) -> Callable[..., Any]:
        f = self.form

        def run(*xs):
            h = xs[f.residual[0]] + xs[f.residual[1]] if f.residual is not None else xs[f.x]
            w = xs[f.weight] if f.weight is not None else None
            b = xs[f.bias] if f.bias is not None else None
            y = torch.nn.functional.layer_norm(h, (h.shape[-1],), w, b, f.eps)
            outs = tuple(y if o == "norm" else h for o in f.outputs)
            return outs[0] if len(outs) == 1 else outs
        run.__name__ = self.name
        return run


def generate(node: Node, graph: Graph, options, device) -> list:
    """The generator: a :class:`LayerNormKernel` for a CPU reduction group of that form."""
    if node.op != "fused" or node.attr("kind") != "reduction" or device.kind != "cpu":
        return []
    form = match(node.attr("graph"))
    return [LayerNormKernel(node, form)] if form is not None else []


register_generator("library_norm", generate)
