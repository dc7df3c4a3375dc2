""""Is this supported here?": the TVM backend's checker.

``supports(kind, subgraph, device_kind)`` answers without importing TVM
(the fusion pass asks it for every candidate group) and never raises:
``why_not`` returns the reason as text, ``None`` when the group is fully
handled. A group is accepted only when every op, dtype, argument and output
shape is one the lowering handles, so codegen never fails deep inside.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from typing import Optional

import sympy

from braze.compiler.codegen.tvm.ops import DTYPES, GEMM, LAYOUT, POINTWISE, REDUCTION
from braze.ir import Graph, Node, Value
from braze.ir.types import Sym

GEMM_KINDS = ("pointwise", "reduction", "gemm")


@functools.lru_cache(maxsize=1)
def tvm_installed() -> bool:
    return importlib.util.find_spec("tvm") is not None


@functools.lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """TVM can build CUDA kernels and torch sees a GPU to run them."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import tvm

        return bool(tvm.runtime.enabled("cuda"))
    except Exception:  # noqa: BLE001
        return False


def _numel(shape):
    out = sympy.Integer(1)
    for d in shape:
        out = out * (sympy.Integer(d) if isinstance(d, int) else d.sympy)
    return out


def _same_numel(a, b) -> bool:
    if all(isinstance(d, int) for d in a) and all(isinstance(d, int) for d in b):
        return math.prod(a) == math.prod(b)  # the common, static case without sympy
    return sympy.simplify(_numel(a) - _numel(b)) == 0


def _last_dim_only(n: Node) -> Optional[str]:
    x = n.args[0]
    rank = x.type.rank
    if rank == 0:
        return f"{n.op} of a 0-d tensor"
    if n.op in ("_softmax", "_log_softmax"):
        dim = n.kw.get("dim", n.args[1] if len(n.args) > 1 else -1)
        return None if dim % rank == rank - 1 else f"{n.op} over dim {dim}, not the last"
    dims = n.kw.get("dim", n.args[1] if len(n.args) > 1 else None)
    if dims is None or dims == ():
        return None if rank == 1 else f"{n.op} over all dims of a rank-{rank} tensor"
    if isinstance(dims, bool):  # var(x, unbiased) overload
        return None if rank == 1 else f"{n.op} over all dims"
    dims = [dims] if isinstance(dims, int) else list(dims)
    if [d % rank for d in dims] != [rank - 1]:
        return f"{n.op} over dims {dims}, not the last dim only"
    return None


def _node_reason(n: Node, kind: str) -> Optional[str]:
    op = n.op
    allowed = POINTWISE | LAYOUT
    if kind == "reduction":
        allowed = allowed | REDUCTION
    if kind == "gemm":
        allowed = allowed | GEMM
    if op not in allowed:
        return f"op {op} is not handled in a {kind} group"
    for v in n.inputs:
        if v.type.dtype not in DTYPES:
            return f"{op} reads dtype {v.type.dtype}"
    for t in n.types:
        if t.dtype not in DTYPES:
            return f"{op} produces dtype {t.dtype}"
        if any(isinstance(d, int) and d == 0 for d in t.shape):
            return f"{op} produces an empty tensor"
    kw = n.kw
    if op in REDUCTION:
        r = _last_dim_only(n)
        if r:
            return r
        if op in ("var", "var_mean", "std"):
            c = kw.get("correction", 0)
            if not isinstance(c, (int, float)):
                return f"{op} with correction {c!r}"
        if op in ("sum", "mean") and kw.get("dtype") not in (None,) + tuple(DTYPES):
            return f"{op} with dtype {kw.get('dtype')}"
    if op == "round" and (kw.get("decimals", 0) or len(n.args) > 1):
        return "round with decimals"
    if op == "gelu" and kw.get("approximate", "none") not in ("none", "tanh"):
        return f"gelu approximate={kw.get('approximate')!r}"
    if op == "div" and kw.get("rounding_mode") not in (None, "trunc", "floor"):
        return f"div rounding_mode={kw.get('rounding_mode')!r}"
    if op == "slice":
        step = kw.get("step", n.args[4] if len(n.args) > 4 else 1)
        if not isinstance(step, int) or step < 1:
            return f"slice with step {step!r}"
    if op in ("split", "split_with_sizes") and any(not isinstance(t.shape[i], int) for t in n.types[:-1]
                                                     for i in range(t.rank)):
        return "split with symbolic chunks"
    if op in ("pow",) and isinstance(n.args[0], (int, float)):
        return "pow with a scalar base"
    if op == "fill" and isinstance(n.args[1], Value) and n.args[1].type.rank != 0:
        return "fill with a tensor value"
    for a in n.args:
        if isinstance(a, (complex,)):
            return f"{op} with a complex scalar"
    return None


def _symbols_bindable(sub: Graph) -> Optional[str]:
    """Every symbol must be readable from some input dim (to size outputs at run time)."""
    plain = set()
    for n in sub.inputs:
        for d in n.type.shape:
            if isinstance(d, Sym) and d.expr in d.symbols:
                plain.add(d.expr)
    used = set()
    for n in sub.nodes:
        for t in n.types:
            used |= t.symbols
    missing = used - plain
    return f"symbols {sorted(missing)} appear in no input shape" if missing else None


def why_not(kind: str, sub: Graph, device_kind: str) -> Optional[str]:
    """The reason the TVM backend declines this group, or None when it handles it."""
    if not tvm_installed():
        return "TVM is not installed"
    if device_kind not in ("cpu", "cuda"):
        return f"device {device_kind}"
    if device_kind == "cuda" and not cuda_usable():
        return "TVM cannot run CUDA kernels here"
    if kind not in GEMM_KINDS:
        return f"kind {kind!r}"
    if not isinstance(sub, Graph) or not sub.outputs:
        return "no subgraph"
    for n in sub.nodes:
        if n.op == "input":
            if n.type.dtype not in DTYPES:
                return f"input of dtype {n.type.dtype}"
            continue
        if n.op == "constant":
            return "a constant inside the group"
        r = _node_reason(n, kind)
        if r:
            return r
    r = _symbols_bindable(sub)
    if r:
        return r
    outs = [v.type for v in sub.outputs]
    if any(t.dtype not in DTYPES for t in outs):
        return "an output dtype"
    if kind == "pointwise":
        if not all(_same_numel(t.shape, outs[0].shape) for t in outs):
            return "outputs of different sizes"
    elif kind == "reduction":
        reds = [n for n in sub.nodes if n.op in REDUCTION]
        if not reds:
            return "a reduction group without a reduction"
        dom = tuple(reds[0].args[0].type.shape)
        for n in reds:
            x = n.args[0].type.shape
            if not _same_numel(x, dom) or str(x[-1]) != str(dom[-1]):
                return "reductions over different row domains"
        for t in outs:
            if not (_same_numel(t.shape, dom) or _same_numel(t.shape, dom[:-1])):
                return f"output {t} is neither row-shaped nor reduced"
        r = _misaligned(sub, set(reds))
        if r:
            return r
    elif kind == "gemm":
        gemms = [n for n in sub.nodes if n.op in GEMM]
        if len(gemms) != 1:
            return f"{len(gemms)} GEMMs in a gemm group"
        g = gemms[0]
        a, b = (g.args[1], g.args[2]) if g.op == "addmm" else (g.args[0], g.args[1])
        if g.op == "addmm" and (not isinstance(g.args[0], Value)):
            return "addmm with a scalar bias"
        for v in (a, b):
            if not _from_inputs_via_layout(v):
                return "a GEMM operand computed inside the group"
        if a.type.dtype != b.type.dtype:
            return "GEMM operands of different dtypes"
        dom = tuple(g.types[0].shape)
        for t in outs:
            if not _same_numel(t.shape, dom):
                return f"output {t} is not the GEMM output's size"
        r = _misaligned(sub, {g})
        if r:
            return r
    return None


# Layout ops that keep the row-major order of elements (a view of the same sequence).
ORDER_KEEPING = frozenset("reshape view _unsafe_view unsqueeze squeeze flatten unflatten alias clone contiguous "
                          "detach lift_fresh_copy".split())


def _misaligned(sub: Graph, roots: set) -> Optional[str]:
    """A layout op other than a reshape applied to a value computed from a
    reduction or GEMM (``roots``): the schedule computes those per row or
    tile, so everything after them must read them at the same element."""
    tainted: set = set()
    for n in sub.nodes:
        if n in roots or any(v.node in tainted for v in n.inputs):
            if n not in roots and n.op in LAYOUT and n.op not in ORDER_KEEPING:
                return f"{n.op} of a value computed from a {'GEMM' if any(r.op in GEMM for r in roots) else 'reduction'}"
            tainted.add(n)
    return None


def _from_inputs_via_layout(v: Value) -> bool:
    n = v.node
    while n.op in LAYOUT:
        vs = n.inputs
        if len(vs) != 1:
            return False
        n = vs[0].node
    return n.op == "input"


def supports(kind: str, sub: Graph, device_kind: str) -> bool:
    """The registered checker: True when the TVM backend fully handles the group."""
    return why_not(kind, sub, device_kind) is None


def supports_attention(node: Node, device_kind: str) -> Optional[str]:
    """Reason the TVM CPU attention kernel declines ``node`` (None: it handles it)."""
    if not tvm_installed():
        return "TVM is not installed"
    if device_kind != "cpu":
        return "the TVM attention kernel is CPU-only"
    args, kw = node.args, node.kw
    mask = args[3] if len(args) > 3 else kw.get("mask")
    slopes = args[4] if len(args) > 4 else kw.get("slopes")
    if slopes is not None:
        return "ALiBi slopes"
    if kw.get("softcap"):
        return "soft-capped scores (softcap)"
    q, k, v = args[0], args[1], args[2]
    for t in (q.type, k.type, v.type):
        if t.dtype not in DTYPES or not t.dtype.is_floating_point:
            return f"dtype {t.dtype}"
        if t.rank != 4 or any(isinstance(d, int) and d == 0 for d in t.shape):
            return f"operand {t}"
    if mask is not None and (mask.type.rank > 4 or mask.type.dtype not in DTYPES):
        return f"mask {mask.type}"
    types = [q.type, k.type, v.type] + ([mask.type] if mask is not None else [])
    plain = {d.expr for t in types for d in t.shape if isinstance(d, Sym) and d.expr in d.symbols}
    used = set().union(*(t.symbols for t in types + list(node.types)))
    if used - plain:
        return f"symbols {sorted(used - plain)} appear in no operand shape"
    return None
