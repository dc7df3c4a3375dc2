"""braze.compiler.codegen.triton: Triton kernels generated from fused groups.

Three templates, one per fused kind (``ir/fused.py``): ``pointwise``
(2-D tiled elementwise), ``reduction`` (row reductions, single pass or
looped, online softmax/Welford) and ``gemm`` (tiled ``tl.dot`` with a
generated epilogue, the dual gate/up form included). They share one
expression table (``exprs.py``), one index algebra that folds layout ops into
address arithmetic (``indexing.py``) and one emitter (``emit.py``).

On import this registers the checker (``supports``) with
``braze.compiler.codegen`` and the generator (``generate``) with
``braze.compiler.kernels``. Kernels run on CUDA devices, and on the CPU under
``TRITON_INTERPRET=1`` (tests).
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import triton  # noqa: F401  - an ImportError here means: no Triton backend on this machine

from braze.compiler.codegen import register_checker
from braze.compiler.codegen.triton.indexing import Unsupported
from braze.compiler.codegen.triton.kernel import Generated, TritonKernel, canonical_text
from braze.ir import Graph, Node
from braze.autotune.contract import register_generator
from braze.compiler.codegen.triton import cache_write, gemm, pointwise, reduction, split_gemm, split_prologue

log = logging.getLogger("braze.codegen.triton")

KINDS = ("pointwise", "reduction", "gemm")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def device_ok(device_kind: str) -> bool:
    return device_kind.startswith("cuda") or (device_kind == "cpu" and interpreting())


_GENERATED: dict = {}   # (kind, canonical subgraph text) -> Generated | Unsupported


def generate_group(kind: str, graph: Graph) -> Generated:
    """The template's output for a group; raises Unsupported with the reason.

    Memoised by the subgraph's canonical text: the same group in every layer
    is generated once (the fusion pass asks the checker often)."""
    key = (kind, canonical_text(graph))
    hit = _GENERATED.get(key)
    if hit is None:
        try:
            hit = _generate(kind, graph)
        except Unsupported as e:
            hit = e
        if len(_GENERATED) > 4096:
            _GENERATED.clear()
        _GENERATED[key] = hit
    if isinstance(hit, Unsupported):
        raise Unsupported(str(hit))
    return hit


def _generate(kind: str, graph: Graph) -> Generated:
    if kind == "pointwise":
        return pointwise.generate(graph)
    if kind == "reduction":
        return reduction.generate(graph)
    if kind == "gemm":
        return gemm.generate(graph)
    if kind == "cache_write":
        return cache_write.generate(graph)
    raise Unsupported(f"no Triton template for kind {kind!r}")


def why_not(kind: str, graph: Graph, device_kind: str = "cuda") -> str:
    """Empty string when Triton codegen handles this group here, else the reason."""
    if not device_ok(device_kind):
        return f"Triton runs on CUDA (or the CPU under TRITON_INTERPRET=1), not {device_kind}"
    try:
        generate_group(kind, graph)
    except Unsupported as e:
        return str(e)
    return ""


def supports(kind: str, graph: Graph, device_kind: str) -> bool:
    """The checker: whether every op of the group has Triton code here."""
    reason = why_not(kind, graph, device_kind)
    if reason:
        log.debug("triton declines %s group %s: %s", kind, graph.name, reason)
    return not reason


def kernel_for(node: Node, dump: Optional[str] = None) -> TritonKernel:
    """The TritonKernel of a ``fused`` node (raises Unsupported)."""
    if node.op != "fused":
        raise Unsupported(f"{node.op} is not a fused group")
    graph = node.attr("graph")
    gen = generate_group(node.attr("kind"), graph)
    return TritonKernel(node, graph, gen, dump)


def generate(node: Node, graph: Graph, options, device) -> list:
    """The generator: ``[TritonKernel]`` for fused groups this backend handles (and the
    ``cache_write_heads_`` nodes of ``passes/fuse_cache_write.py``), else []."""
    dev_kind = device.kind if hasattr(device, "kind") else str(device)
    if node.op == "cache_write_heads_" and device_ok(dev_kind):
        try:
            heads = node.attr("heads")
            return [TritonKernel(node, heads, generate_group("cache_write", heads), getattr(options, "dump", None))]
        except Unsupported as e:
            log.info("triton declines %s: %s", node.name, e)
            return []
    if node.op != "fused" or node.attr("kind") not in KINDS:
        return []
    if not device_ok(dev_kind):
        return []
    out = []
    try:
        out.append(kernel_for(node, getattr(options, "dump", None)))
    except Unsupported as e:
        log.info("triton declines %s: %s", node.name, e)
    if node.attr("kind") == "gemm" and dev_kind.startswith("cuda"):
        # NOTE: on the GPU only: under the interpreter (tests) it would double every
        # gemm group's measured candidates for nothing.
        for split in (split_gemm.split_kernel(node), split_prologue.split_kernel(node, device)):
            if split is not None:
                out.append(split)
    return out


register_checker("triton", supports)


def _register_generator() -> None:
    register_generator("triton", generate)


_register_generator()

__all__ = ["supports", "generate", "generate_group", "kernel_for", "why_not", "TritonKernel", "Unsupported"]
