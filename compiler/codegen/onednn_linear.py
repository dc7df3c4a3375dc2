"""oneDNN linear with its epilogue as a post-op, for CPU GEMM groups.

A projection on the CPU runs through MKL's sgemm (``torch.addmm``), which
repacks the weight on every call (a 768 x 3072 float32 weight: 9.4 MB), and
the op-by-op library candidate then runs the epilogue as separate ATen ops
(GPT-2's GELU is eight of them, about 0.8 ms over a 128 x 3072 product on two
cores, beside the GEMM's 2.2 ms). For a constant weight (a parameter, or a
view of one) this candidate packs it once into oneDNN's blocked layout
(``mkldnn._reorder_linear_weight``, the same number of elements; the packed
copy lives beside the module's weight while the weight does) and runs
``mkldnn._linear_pointwise`` with the epilogue as a post-op:

- none (the product, plus its bias);
- GELU, erf or tanh: ``gelu`` itself, or the tanh formula as GPT-2 writes it
  (``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, matched op by op);
- ``tanh``, ``relu``;
- a residual add of a group input (oneDNN's binary ``add``).

Measured on a two-core AVX-512 Xeon (float32, 128 rows, against ``F.linear``
and ``F.gelu``): GPT-2's c_attn 1.48 against 1.60 ms, c_fc + GELU (tanh) 2.14
against 4.77 ms, the LM head 34.4 against 40.8 ms. Registered as the
generator "library_onednn": a library candidate the quick selection times
beside the others, so it only runs where it is the fastest. ``BRAZE_ONEDNN=0``
turns it off (the packed copies double the memory of the weights it serves).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from braze.autotune.contract import register_generator
from braze.autotune.space import Config
from braze.compiler.codegen.library_form import FormKernel, OpTree, input_slot
from braze.compiler.codegen.packed_weights import PackedWeights
from braze.compiler.codegen.tvm.kernel import constant_data
from braze.ir import Graph, Node, Value

GELU_TANH_C = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class LinearForm:
    """Where the group's operands are (input slots) and what follows the product."""

    x: int
    w: int
    w_nk: bool                 # the weight slot is [N, K] (read through permute), else [K, N]
    bias: Optional[int]
    attr: str                  # the post-op: "none" | "gelu" | "tanh" | "relu" | "add"
    algorithm: str = ""        # GELU's: "none" (erf) | "tanh"
    other: Optional[int] = None   # the residual's slot (attr "add")


def _const(a, want: float) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isclose(a, want, rel_tol=1e-6)


class _Tree(OpTree):
    """The epilogue's op tree, with the shapes GPT-2's GELU formula is made of."""

    def scaled(self, v, c: float):
        """``mul(x, c)`` or ``mul(c, x)`` -> x."""
        n = self.op(v, "mul", "Tensor")
        if n is None or len(n.args) != 2:
            return None
        a, b = n.args
        return a if _const(b, c) else b if _const(a, c) else None

    def plus(self, v, c: Optional[float] = None):
        """``add(a, b)`` -> (a, b); with ``c``: ``add(x, c)`` / ``add(c, x)`` -> x."""
        n = self.op(v, "add", "Tensor")
        if n is None or len(n.args) != 2:
            return None
        a, b = n.args
        if c is None:
            return (a, b)
        return a if _const(b, c) else b if _const(a, c) else None

    def gelu_tanh_formula(self, out: Value, p: Value) -> Optional[set]:
        """The nodes of ``0.5 p (1 + tanh(sqrt(2/pi) (p + 0.044715 p^3)))`` in GPT-2's order of
        ops (mul's and add's operands in either order), or None."""
        n = self.op(out, "mul", "Tensor")
        if n is None or len(n.args) != 2:
            return None
        for half, rest in (n.args, n.args[::-1]):
            if self.scaled(half, 0.5) != p:
                continue
            th = self.op(self.plus(rest, 1.0), "tanh")
            inner = self.scaled(th.args[0], GELU_TANH_C) if th is not None and len(th.args) == 1 else None
            terms = self.plus(inner) if inner is not None else None
            if terms is None:
                continue
            for lin, cube in (terms, terms[::-1]):
                pw = self.op(self.scaled(cube, 0.044715), "pow", "Tensor_Scalar")
                if lin == p and pw is not None and pw.args[0] == p and _const(pw.args[1], 3.0):
                    return {n, self.by_out[half], self.by_out[rest], th, self.by_out[th.args[0]], self.by_out[inner],
                            self.by_out[cube], pw}
        return None


def match(sub: Graph) -> Optional[LinearForm]:
    """The oneDNN form of a GEMM group, or None: one ``addmm(b, x, w)`` / ``mm(x, w)`` on
    group inputs (``w`` possibly ``permute(w, (1, 0))``), float32 2-D, viewed as itself at
    most, then one post-op (or none) giving the group's only output."""
    nodes = sub.compute_nodes
    gemms = [n for n in nodes if n.op in ("mm", "addmm")]
    if len(gemms) != 1 or len(sub.outputs) != 1 or gemms[0].kwargs:
        return None
    g = gemms[0]
    bias, (x, w) = (g.args[0], g.args[1:3]) if g.op == "addmm" else (None, g.args[:2])
    if len(g.args) != (3 if g.op == "addmm" else 2):
        return None
    tree = _Tree(sub)
    w_nk = False
    perm = tree.op(w, "permute")
    if perm is not None:
        if tuple(perm.args[1]) != (1, 0):
            return None
        w, w_nk = perm.args[0], True
    slots = [input_slot(sub, v) for v in (x, w)] + [input_slot(sub, bias) if bias is not None else -1]
    if None in slots:
        return None
    prod = g.out()
    M_N = tuple(prod.type.shape)
    if (prod.type.dtype != torch.float32 or x.type.dtype != torch.float32 or w.type.dtype != torch.float32
            or x.type.rank != 2 or w.type.rank != 2
            or (bias is not None and (bias.type.rank != 1 or bias.type.dtype != torch.float32))):
        return None
    p = prod
    view = next((n for n in nodes if n.op in ("reshape", "view") and n.args[0] == prod), None)
    if view is not None:
        if tuple(view.out().type.shape) != M_N:
            return None
        p = view.out()
    used = {g, view, perm} - {None}
    out = sub.outputs[0]
    base = dict(x=slots[0], w=slots[1], w_nk=w_nk, bias=None if bias is None else slots[2])
    form: Optional[LinearForm] = None
    if out == p:
        form = LinearForm(**base, attr="none")
    elif (n := tree.op(out, "gelu")) is not None and len(n.args) == 1 and n.args[0] == p:
        form = LinearForm(**base, attr="gelu", algorithm="none")
    elif (n := tree.op(out, "tanh")) is not None and len(n.args) == 1 and n.args[0] == p:
        form = LinearForm(**base, attr="tanh")
    elif (n := tree.op(out, "relu")) is not None and len(n.args) == 1 and n.args[0] == p:
        form = LinearForm(**base, attr="relu")
    elif (ab := tree.plus(out)) is not None and p in ab:
        r = ab[1] if ab[0] == p else ab[0]
        rs = input_slot(sub, r)
        if rs is None or tuple(r.type.shape) != M_N or r.type.dtype != torch.float32:
            return None
        form = LinearForm(**base, attr="add", other=rs)
    elif (formula := tree.gelu_tanh_formula(out, p)) is not None:
        form = LinearForm(**base, attr="gelu", algorithm="tanh")
        used |= formula
    if form is None:
        return None
    if form.attr != "none":
        used.add(tree.by_out[out])
    return form if used == set(nodes) else None


_PACKED = PackedWeights()


def packed_weight(w: torch.Tensor, nk: bool, rows: int) -> torch.Tensor:
    """``w`` (``[N, K]`` if ``nk`` else ``[K, N]``) in oneDNN's blocked layout, made once per
    weight and made again if the weight is written in place (its version moves)."""
    return _PACKED.get((w,), ("onednn", nk), lambda: _reorder((w if nk else w.t()).contiguous(), max(int(rows), 1)))


def _reorder(w_nk: torch.Tensor, rows: int) -> torch.Tensor:
    """oneDNN's blocked copy of an ``[N, K]`` weight (``rows``: the batch it is laid out for;
    any other count of rows still reads it right)."""
    return torch.ops.mkldnn._reorder_linear_weight(w_nk, rows)


@dataclass
class OneDNNLinearKernel(FormKernel):
    """``mkldnn._linear_pointwise`` (or ``.binary`` for a residual add) over a packed weight."""

    name: str = "library_onednn_linear"

    def compile(self, config: Config) -> Callable[..., Any]:
        f = self.form
        algorithm = f.algorithm or ""

        def run(*xs):
            x, w = xs[f.x], xs[f.w]
            b = xs[f.bias] if f.bias is not None else None
            if x.shape[0] == 0:
                n = w.shape[0] if f.w_nk else w.shape[1]
                return x.new_empty((0, n))
            packed = packed_weight(w, f.w_nk, x.shape[0])
            x = x.contiguous()   # NOTE: the selection timed contiguous operands; a view is copied once
            if f.attr == "add":
                return torch.ops.mkldnn._linear_pointwise.binary(x, xs[f.other].contiguous(), packed, b, "add")
            return torch.ops.mkldnn._linear_pointwise(x, packed, b, f.attr, [], algorithm)
        run.__name__ = self.name
        return run


def available() -> bool:
    return os.environ.get("BRAZE_ONEDNN", "1").strip() not in ("0", "off") and torch.backends.mkldnn.is_available()


def generate(node: Node, graph: Graph, options, device) -> list:
    """The generator: a :class:`OneDNNLinearKernel` for a CPU GEMM group of a matching form."""
    if node.op != "fused" or node.attr("kind") != "gemm" or device.kind != "cpu" or not available():
        return []
    form = match(node.attr("graph"))
    # NOTE: only a constant weight (a parameter, or a view of one): an activation would be
    # packed again on every call, which the selection's timing (fixed operands) would not see
    if form is None or not constant_data(node.inputs[form.w]):
        return []
    return [OneDNNLinearKernel(node, form)]


register_generator("library_onednn", generate)
