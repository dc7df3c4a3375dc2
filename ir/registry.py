"""The op registry: one table that feeds the verifier, the interpreter
(reference and fallback), the fusion categories and codegen.

Each :class:`OpDef` declares its category, its type rule (``infer``; by
default the op's own meta implementation run on fake tensors, see
``ir/infer.py``) and its torch reference implementation (``ref``).
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

log = logging.getLogger("braze.ir")


class Category(str, enum.Enum):
    POINTWISE = "pointwise"
    REDUCTION = "reduction"
    SCAN = "scan"
    GEMM = "gemm"
    ATTENTION = "attention"
    VIEW = "view"          # layout and view ops: view, permute, slice, cat, expand ...
    GATHER = "gather"      # gather / scatter / indexing
    CREATION = "creation"  # arange, full, ...: no tensor operands
    FUSED = "fused"        # a group made by the fusion pass
    IO = "io"              # graph inputs and constants
    OPAQUE = "opaque"      # runs its implementation, never fused


@dataclass(frozen=True)
class OpDef:
    name: str
    category: Category
    ref: Callable[..., Any]
    infer: Optional[Callable[..., tuple]] = None
    packet: Any = None  # torch.ops OpOverloadPacket for ATen ops
    doc: str = ""
    # sample(node, env, generator) -> {Value: tensor}: random operands that must keep an
    # invariant of the op (e.g. prefix sums of sequence lengths); the others are plain random.
    sample: Optional[Callable[..., dict]] = None
    # The operand position this op writes in place (its output aliases that
    # operand), "each" for a list op whose output j is element j of operand 0,
    # written in place, or None for an op without side effects (ir/inplace_ops.py).
    writes: Optional[int | str] = None
    # The argument position holding the operands a Graph-valued keyword is called on
    # (``cache_write_heads_``), or None: all the node's operands (``fused``).
    subgraph_operands: Optional[int] = None
    # The reference reads device data on the host (a sequence's length, a count): run on a
    # GPU it synchronises, stalls the launches behind it and cannot be captured in a CUDA graph.
    syncs_host: bool = False
    _overloads: dict = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, overload: str = "") -> Callable[..., Any]:
        """The exact callable for an overload (faster than the packet)."""
        if not overload or self.packet is None:
            return self.ref
        fn = self._overloads.get(overload)
        if fn is None:
            fn = getattr(self.packet, overload, self.ref)
            self._overloads[overload] = fn
        return fn


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"op {opdef.name!r} is registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def register_op(name: str, category: Category, infer=None, doc: str = ""):
    """Decorator registering a braze op whose reference is the decorated function."""

    def deco(fn):
        register(OpDef(name, category, fn, infer=infer, doc=doc or (fn.__doc__ or "").strip()))
        return fn

    return deco


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}: not in the braze op registry") from None


def op_name(packet) -> str:
    """Registry name of a torch.ops packet: ``aten.add`` -> ``add``, other
    namespaces keep theirs: ``prims::convert_element_type``."""
    ns = packet._qualified_op_name.split("::")[0]
    base = packet.__name__ if ns != "aten" else packet._qualified_op_name.split("::")[1]
    return base if ns == "aten" else f"{ns}::{base}"


def lookup_packet(packet) -> OpDef:
    """The OpDef of an ATen (or other torch.ops) packet; an unknown one is
    registered as OPAQUE, running its own implementation, with one log line."""
    name = op_name(packet)
    opdef = REGISTRY.get(name)
    if opdef is None:
        # NOTE: a shape query (``aten::size`` under HF generate) computes nothing: said at info level
        quiet = name in ("size", "sym_size", "stride", "sym_stride", "numel", "sym_numel", "dim")
        log.log(logging.INFO if quiet else logging.WARNING,
                "braze does not know %s: it runs as an opaque node through its ATen implementation",
                packet._qualified_op_name)
        opdef = register(OpDef(name, Category.OPAQUE, packet, packet=packet, doc="unknown op, run as is"))
    return opdef


def category(name: str) -> Category:
    return get_op(name).category


def is_category(node_or_name, *cats: Category) -> bool:
    name = node_or_name if isinstance(node_or_name, str) else node_or_name.op
    op = REGISTRY.get(name)
    return op is not None and op.category in cats







torch_ops = torch.ops
