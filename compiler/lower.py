"""Lowering: an FX graph of ATen ops (from ``compiler/capture.py``) to braze IR.

One IR node per ATen op, typed from the fake tensors FX recorded. SymInt
arithmetic (``sym_size``, ``operator.mul`` ...) folds into symbolic
dimensions; ``getitem`` becomes an output index; the SDPA flavours of the
dispatcher become one ``sdpa`` op. Ops braze does not know become opaque
nodes (``ir/registry.lookup_packet``), which run their ATen implementation.
"""
from __future__ import annotations

import logging
import operator
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.fx as fx

from braze.ir import Graph, Node, TensorType, Value, lookup_packet, sym
from braze.ir.types import Sym

log = logging.getLogger("braze.lower")
aten = torch.ops.aten


class LoweringError(RuntimeError):
    """The FX graph holds something braze cannot represent; the caller runs it as is."""


@dataclass(frozen=True)
class Placeholder:
    """What an FX placeholder is: a tensor input, a constant, a symbol, or a fixed value."""

    kind: str  # "input" | "constant" | "sym" | "value"
    name: str
    tensor: Optional[torch.Tensor] = None
    value: Any = None


@dataclass(frozen=True)
class CallSpec:
    """How the FX graph's calling convention maps onto the braze Graph.

    ``inputs[i]`` / ``syms[i]``: the placeholder position of graph input i /
    of symbol ``graph.sym_inputs[i]``; ``constants``: (position, key) of the
    placeholders compiled in as constants; ``leaves``: the FX outputs,
    ("value", i) for graph.outputs[i], ("sym", s) for a symbolic integer
    (evaluated from the call's symbol values) and ("literal", x) for a fixed x.
    """

    inputs: tuple[int, ...]
    syms: tuple[int, ...]
    constants: tuple[tuple[int, str], ...]
    leaves: tuple[tuple[str, Any], ...]
    is_tuple: bool = True


_SKIP = {aten._assert_async, aten._assert_scalar, aten.sym_constrain_range, aten.sym_constrain_range_for_size,
         aten._assert_tensor_metadata}
_SKIP_NAMES = {"_assert_async", "_assert_scalar", "sym_constrain_range", "sym_constrain_range_for_size",
               "_assert_tensor_metadata", "_record_function_enter_new", "_record_function_exit"}

# Positional parameter names of each SDPA flavour, and where its mask is.
_SDPA_FLAVOURS = {
    "_scaled_dot_product_flash_attention_for_cpu": ("q", "k", "v", "dropout_p", "is_causal"),
    "_scaled_dot_product_flash_attention": ("q", "k", "v", "dropout_p", "is_causal", "return_debug_mask"),
    "_scaled_dot_product_efficient_attention": ("q", "k", "v", "attn_mask", "compute_log_sumexp", "dropout_p",
                                                "is_causal"),
    "_scaled_dot_product_cudnn_attention": ("q", "k", "v", "attn_mask", "compute_log_sumexp", "dropout_p",
                                            "is_causal", "return_debug_mask"),
    "_scaled_dot_product_attention_math": ("q", "k", "v", "attn_mask", "dropout_p", "is_causal", "dropout_mask"),
    "scaled_dot_product_attention": ("q", "k", "v", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"),
}


def clean_name(text: str) -> str:
    s = re.sub(r"\W+", "_", text).strip("_")
    return s or "x"


def lower(gm: fx.GraphModule, placeholders: Sequence[Placeholder], name: str = "graph") -> tuple[Graph, CallSpec]:
    """Lower ``gm`` to a braze Graph; ``placeholders`` describe its placeholders in order."""
    nodes: list[Node] = []
    inputs: list[Node] = []
    constants: dict[str, torch.Tensor] = {}
    sym_inputs: list[str] = []
    env: dict[fx.Node, Any] = {}
    ph = iter(enumerate(placeholders))
    pos_inputs: list[int] = []
    pos_syms: list[int] = []
    pos_consts: list[tuple[int, str]] = []
    users = {n: list(n.users) for n in gm.graph.nodes}
    written = _written_placeholders(gm)
    writes: list[tuple[Node, Value]] = []  # (input node, its value after the call)

    def arg(a):
        if isinstance(a, fx.Node):
            if a not in env:
                raise LoweringError(f"{a.name} is used before it is lowered")
            return env[a]
        if isinstance(a, (list, tuple)):
            return tuple(arg(x) for x in a)
        if isinstance(a, (torch.SymInt,)):
            return sym(a)
        if isinstance(a, torch.Tensor):
            raise LoweringError("a tensor constant is inlined in the graph's arguments")
        if isinstance(a, (torch.SymFloat, torch.SymBool)):
            raise LoweringError(f"symbolic {type(a).__name__} argument")
        return a

    out_spec = None
    for n in gm.graph.nodes:
        val = n.meta.get("val", n.meta.get("example_value"))
        if n.op == "placeholder":
            pos, p = next(ph, (None, None))
            if p is None:
                raise LoweringError("more placeholders than described")
            if p.kind == "sym":
                s = sym(val) if val is not None else Sym(p.name)
                if not isinstance(s, Sym) or s.expr not in s.symbols:
                    env[n] = s
                    continue
                if s.expr not in sym_inputs:
                    sym_inputs.append(s.expr)
                    pos_syms.append(pos)
                env[n] = s
            elif p.kind == "value":
                env[n] = p.value
            elif p.kind == "constant" and n not in written:
                key = p.name
                constants[key] = p.tensor
                pos_consts.append((pos, key))
                node = Node("constant", (key,), types=(TensorType.of(p.tensor),), name=clean_name(key))
                nodes.append(node)
                env[n] = node.out()
            else:
                # NOTE: a buffer the graph writes (a cache registered on the module)
                # is an input, not a constant: its contents change on every call.
                if not isinstance(val, torch.Tensor):
                    raise LoweringError(f"input {p.name} is a {type(val).__name__}, not a tensor")
                node = Node("input", (p.name,), types=(TensorType.of(val),), name=clean_name(p.name))
                pos_inputs.append(pos)
                inputs.append(node)
                nodes.append(node)
                env[n] = node.out()
        elif n.op == "get_attr":
            t = _get_attr(gm, n.target)
            if not isinstance(t, torch.Tensor):
                raise LoweringError(f"get_attr {n.target} is a {type(t).__name__}")
            key = str(n.target)
            constants[key] = t
            node = Node("constant", (key,), types=(TensorType.of(t),), name=clean_name(key))
            nodes.append(node)
            env[n] = node.out()
        elif n.op == "call_function" and n in written.values():
            dst, src = env[n.args[0]], arg(n.args[1])
            if not isinstance(src, Value) or src.type != dst.type:
                raise LoweringError(f"{n.name} writes {src!r} into input {dst.node.args[0]!r} of another type")
            writes.append((dst.node, src))
            env[n] = src
        elif n.op == "call_function":
            env[n] = _lower_call(n, val, arg, nodes, users)
        elif n.op == "output":
            out_spec, outputs = _lower_output(n.args[0], arg)
        else:
            raise LoweringError(f"unsupported FX node kind {n.op}")
    if out_spec is None:
        raise LoweringError("graph has no output")
    for v in outputs:
        if not isinstance(v, Value):
            raise LoweringError(f"output {v!r} is not a tensor")
    write_pairs = tuple((inputs.index(dst), len(outputs) + k) for k, (dst, _) in enumerate(writes))
    outputs = list(outputs) + [v for _, v in writes]
    g = Graph(tuple(nodes), tuple(inputs), tuple(outputs), constants, tuple(sym_inputs), name, writes=write_pairs)
    leaves, is_tuple = out_spec
    return g, CallSpec(tuple(pos_inputs), tuple(pos_syms), tuple(pos_consts), leaves, is_tuple)


def _lower_output(out, arg):
    leaves = []
    outputs: list[Value] = []
    seq = out if isinstance(out, (list, tuple)) else (out,)
    for o in seq:
        v = arg(o) if o is not None else None
        if isinstance(v, Value):
            leaves.append(("value", len(outputs)))
            outputs.append(v)
        elif isinstance(v, Sym):
            leaves.append(("sym", v))
        else:
            leaves.append(("literal", v))
    return (tuple(leaves), isinstance(out, (list, tuple))), outputs


def _written_placeholders(gm: fx.GraphModule) -> dict[fx.Node, fx.Node]:
    """Placeholder -> the ``copy_`` that writes its final value back (the
    form functionalisation gives every mutated input, ``capture.trace_aten``)."""
    out: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is aten.copy_.default:
            dst = n.args[0]
            if not (isinstance(dst, fx.Node) and dst.op == "placeholder"):
                raise LoweringError(f"{n.name} writes into {getattr(dst, 'name', dst)}, which is not an input")
            if dst in out:
                raise LoweringError(f"input {dst.name} is written back twice")
            out[dst] = n
    return out


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _lower_call(n: fx.Node, val, arg, nodes: list[Node], users) -> Any:
    target = n.target
    if target is operator.getitem:
        base = arg(n.args[0])
        idx = n.args[1]
        if isinstance(base, Node):  # multi-output node
            return Value(base, idx)
        if isinstance(base, tuple):
            return base[idx]
        if isinstance(base, Value) and idx == 0 and base.node.op == "sdpa":
            return base
        raise LoweringError(f"getitem on {type(base).__name__}")
    if not isinstance(target, torch._ops.OpOverload):
        # SymInt arithmetic (operator.mul, sym_size ...) and other Python-level
        # functions: only their symbolic value matters.
        if isinstance(val, (int, torch.SymInt)):
            return sym(val)
        if isinstance(val, (bool, float)):
            return val
        raise LoweringError(f"unsupported call {getattr(target, '__name__', target)}")
    name = target.overloadpacket.__name__
    if target in _SKIP or name in _SKIP_NAMES:
        return None
    if isinstance(val, (int, torch.SymInt)) and not isinstance(val, bool):
        return sym(val)  # sym_size.int, sym_numel ...
    if target._schema.is_mutable:
        raise LoweringError(f"{target} mutates its operands")
    if name in _SDPA_FLAVOURS and _only_first_output_used(n, users):
        node = _lower_sdpa(n, name, val, arg)
        if node is not None:
            nodes.append(node)
            return node.out() if name == "scaled_dot_product_attention" else node
    opdef = lookup_packet(target.overloadpacket)
    args = tuple(arg(a) for a in n.args)
    kwargs = tuple((k, arg(v)) for k, v in n.kwargs.items())
    types = _types_of(val, target)
    node = Node(opdef.name, args, kwargs, types, overload=target._overloadname, name=n.name)
    nodes.append(node)
    if isinstance(val, (tuple, list)):
        return node
    return node.out()


def _types_of(val, target) -> tuple[TensorType, ...]:
    if isinstance(val, torch.Tensor):
        return (TensorType.of(val),)
    if isinstance(val, (tuple, list)) and val and all(isinstance(v, torch.Tensor) for v in val):
        return tuple(TensorType.of(v) for v in val)
    raise LoweringError(f"{target} produces {type(val).__name__} outputs braze cannot type")


def _only_first_output_used(n: fx.Node, users) -> bool:
    if n.target.overloadpacket.__name__ == "scaled_dot_product_attention":
        return True
    return all(u.target is operator.getitem and (u.args[1] == 0 or not users[u]) for u in users[n])


def _lower_sdpa(n: fx.Node, name: str, val, arg) -> Optional[Node]:
    params = dict(zip(_SDPA_FLAVOURS[name], n.args))
    params.update(n.kwargs)
    if float(params.get("dropout_p", 0.0) or 0.0) != 0.0:
        return None  # random: keep the original op
    out = val[0] if isinstance(val, (tuple, list)) else val
    q, k, v = (arg(params[x]) for x in ("q", "k", "v"))
    mask = params.get("attn_mask")
    # The fused flavours take fewer K/V heads than Q heads as grouped-query attention.
    gqa = bool(params.get("enable_gqa", False)) or (q.type.rank >= 3 and q.type.shape[-3] != k.type.shape[-3])
    kwargs = (("attn_mask", arg(mask) if mask is not None else None),
              ("is_causal", bool(params.get("is_causal", False))),
              ("scale", params.get("scale")),
              ("enable_gqa", gqa))
    # NOTE: the fused flavours return the output as [B, H, S, D] like SDPA.
    return Node("sdpa", (q, k, v), kwargs, (TensorType.of(out),), name=n.name)
