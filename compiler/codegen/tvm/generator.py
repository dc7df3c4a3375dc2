"""The TVM backend's generator: kernels for a fused group or an attention node.

Kept apart from ``kernel.py`` (the group kernel) and ``attention.py`` (the
attention kernel, built on the group kernel) so neither imports the other back.
"""
from __future__ import annotations

import logging

from braze.autotune.space import DeviceInfo
from braze.compiler.codegen.tvm.attention import TVMAttentionKernel
from braze.compiler.codegen.tvm.kernel import TVMKernel, constant_data
from braze.compiler.codegen.tvm.support import supports_attention, why_not
from braze.ir import Graph, Node
from braze.ir.fused import unbound_symbols

log = logging.getLogger("braze.codegen.tvm")


def generate(node: Node, graph: Graph, options, device: DeviceInfo) -> list:
    """The registered generator: TVM kernels for fused groups (and the CPU attention op)."""
    if node.op == "fused":
        kind = node.attr("kind")
        sub = node.attr("graph")
        reason = why_not(kind, sub, device.kind)
        if reason is not None:
            log.debug("tvm declines %s: %s", node.name, reason)
            return []
        unbound = unbound_symbols(sub)
        if unbound:  # e.g. a SymInt argument of the graph: no operand's shape carries it
            log.debug("tvm declines %s: symbols %s are no operand's dimension", node.name, sorted(map(str, unbound)))
            return []
        consts = frozenset(i for i, v in enumerate(node.inputs) if constant_data(v))
        return [TVMKernel(node, kind, device.kind, const_operands=consts)]
    if node.op == "attention":
        if supports_attention(node, device.kind) is None:
            return [TVMAttentionKernel(node)]
    return []


__all__ = ["generate"]
