"""Kernel candidates of attention nodes, the generator and the checker.

For an ``attention`` node: :class:`TritonAttention` (the template; its
per-problem default picks the prefill form, or the decode form with GQA
packing and split-KV when Sq <= 16), on CUDA for a decode step its
variants (``space.DECODE_VARIANTS``: the split-KV chunks merged in the
kernel, ``FUSE_COMBINE``; that with more, shorter chunks), which the quick
selection times beside it, and :class:`SdpaAttention` where the
attributes map to SDPA. For an ``attention_varlen`` node:
:class:`TritonAttentionVarlen` (and on CUDA :class:`FlashVarlenAttention` where it
maps: torch's flash varlen kernel). ``kernels_for`` appends the generic
LibraryKernel (the op's torch reference) to every list.
"""
from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from braze.autotune.space import Config, Space
from braze.ir import Graph, Node
from braze.ir.decline import Decline

from braze.compiler.codegen.triton_attention import launch
from braze.compiler.codegen.triton_attention.sdpa import (FlashVarlenAttention, SdpaAttention, flash_varlen_maps,
                                                          sdpa_maps)
from braze.compiler.codegen.triton_attention.space import (ATTENTION_SPACE, DECODE_MAX_SQ, DECODE_VARIANTS,
                                                           VARLEN_SPACE)
from braze.compiler.codegen.triton_attention.spec import (OPS, AttentionSpec, concrete_dim, device_ok, read_spec,
                                                          why_unsupported)

log = logging.getLogger("braze.codegen.attention")


@functools.lru_cache(maxsize=1)
def _template_source() -> str:
    from braze.compiler.codegen.triton_attention import template  # lazy: imports triton on first use

    return inspect.getsource(template)


def _name(spec: AttentionSpec) -> str:
    parts = ["triton", "attention_varlen" if spec.varlen else "attention"]
    if spec.causal != "none":
        parts.append(f"causal_{spec.causal}")
    if spec.window is not None:
        parts.append(f"window{spec.window}")
    if spec.groups > 1:
        parts.append(f"gqa{spec.groups}")
    if spec.mask_kind != "none":
        parts.append(f"{spec.mask_kind}_mask")
    if spec.has("slopes"):
        parts.append("alibi")
    return "_".join(parts)


def _header(spec: AttentionSpec) -> str:
    attrs = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.attrs.items()))
    ops = ", ".join(f"{n}: {v.type}" for n, v in spec.values.items())
    return f"# braze {spec.op}({ops}; {attrs})\n# template: braze.compiler.codegen.triton_attention.template\n"


@dataclass
class TritonAttention:
    """The Triton template on an ``attention`` node (prefill and decode forms)."""

    spec: AttentionSpec = field(repr=False)
    name: str = ""
    backend: str = "triton"
    space: Space = field(default=ATTENTION_SPACE, repr=False)
    source: str = field(default="", repr=False)
    variant: str = ""               # a DECODE_VARIANTS name: its space's default, timed by the quick selection
    quick_measure: bool = False

    def __post_init__(self):
        if self.variant:
            self.space, self.quick_measure = DECODE_VARIANTS[self.variant], True
        self.name = self.name or _name(self.spec) + (f"_{self.variant}" if self.variant else "")
        self.source = self.source or _header(self.spec) + _template_source()

    def key(self) -> str:
        return self.spec.key(f"triton+{self.variant}" if self.variant else "triton")

    def problem(self, env: Mapping[str, int]) -> dict:
        return self.spec.problem(env)

    def compile(self, config: Config) -> Callable[..., Any]:
        spec, cfg = self.spec, dict(config)
        attrs = dict(scale=float(spec.scale), causal=spec.causal, window=spec.window, groups=spec.groups,
                     mask_kind=spec.mask_kind, softcap=spec.attrs.get("softcap"))

        def run(*xs):
            return launch.attention_dense(spec.pick(xs, "q"), spec.pick(xs, "k"), spec.pick(xs, "v"),
                                          spec.pick(xs, "mask"), spec.pick(xs, "slopes"), config=cfg, **attrs)

        run.__name__ = self.name
        return run


@dataclass
class TritonAttentionVarlen:
    """The Triton template on an ``attention_varlen`` node (packed sequences)."""

    spec: AttentionSpec = field(repr=False)
    name: str = ""
    backend: str = "triton"
    space: Space = field(default=VARLEN_SPACE, repr=False)
    source: str = field(default="", repr=False)

    def __post_init__(self):
        self.name = self.name or _name(self.spec)
        self.source = self.source or _header(self.spec) + _template_source()

    def key(self) -> str:
        return self.spec.key("triton")

    def problem(self, env: Mapping[str, int]) -> dict:
        return self.spec.problem(env)

    def compile(self, config: Config) -> Callable[..., Any]:
        spec, cfg = self.spec, dict(config)
        # NOTE: a symbolic max_seqlen is read from the symbols by bind_env; called without
        # them (None), the launcher reads it off cu_seqlens (a host sync).
        msq = spec.max_seqlen_q if isinstance(spec.max_seqlen_q, int) else None
        msk = spec.max_seqlen_k if isinstance(spec.max_seqlen_k, int) else None
        attrs = dict(scale=float(spec.scale), causal=spec.causal, window=spec.window, groups=spec.groups,
                     max_seqlen_q=msq, max_seqlen_k=msk, softcap=spec.attrs.get("softcap"))

        def run(*xs, **bounds):
            return launch.attention_varlen(spec.pick(xs, "q"), spec.pick(xs, "k"), spec.pick(xs, "v"),
                                           spec.pick(xs, "cu_seqlens_q"), spec.pick(xs, "cu_seqlens_k"),
                                           spec.pick(xs, "slopes"), spec.pick(xs, "positions"), config=cfg,
                                           **{**attrs, **bounds})

        run.__name__ = self.name
        return run

    def bind_env(self, fn: Callable[..., Any], env: Mapping[str, int]) -> Callable[..., Any]:
        """``fn`` with symbolic ``max_seqlen`` bounds evaluated in ``env``: no host sync
        (a CUDA graph can hold the call) and one launch grid per binding."""
        bounds = {name: value for name, value in (("max_seqlen_q", concrete_dim(self.spec.max_seqlen_q, env)),
                                                   ("max_seqlen_k", concrete_dim(self.spec.max_seqlen_k, env)))
                  if value is not None and not isinstance(getattr(self.spec, name), int)}
        return functools.partial(fn, **bounds) if bounds else fn


def _spec_or_none(node: Node):
    try:
        spec = read_spec(node)
    except ValueError as e:
        log.info("triton_attention declines %s: %s", node.name or node.op, e)
        return None
    return spec


def generate(node: Node, graph: Graph, options, device) -> list:
    """Candidates for an attention node (the generator registered as "triton_attention")."""
    if node.op not in OPS:
        return []
    spec = _spec_or_none(node)
    if spec is None:
        return []
    out: list = []
    reason = why_unsupported(spec)
    if reason is not None:
        log.info("triton_attention declines %s: %s", node.name or node.op, reason)
        if not (sdpa_maps(spec, device.kind) or flash_varlen_maps(spec, device.kind)):
            return Decline.because(reason, "triton attention template", "triton_attention")
    elif device_ok(device.kind):
        out.append(TritonAttentionVarlen(spec) if spec.varlen else TritonAttention(spec))
        if not spec.varlen and device.kind == "cuda" and _may_split(spec):
            out += _decode_variants(spec, device)
    if sdpa_maps(spec, device.kind):
        out.append(SdpaAttention(spec))
    if flash_varlen_maps(spec, device.kind):
        out.append(FlashVarlenAttention(spec))
    return out


def _decode_variants(spec: AttentionSpec, device) -> list:
    """The decode variants whose default config differs from the template's and from the
    variants' before them at this (static) problem; all of them when it has symbols."""
    out: list = []
    try:
        problem = spec.problem({})
        seen = [ATTENTION_SPACE.default_config(problem, device)]
    except (KeyError, TypeError, ValueError):   # a symbolic dimension: no default to compare
        problem, seen = None, []
    for name in DECODE_VARIANTS:
        k = TritonAttention(spec, variant=name)
        if problem is not None:
            cfg = k.space.default_config(problem, device)
            if cfg in seen:
                continue
            seen.append(cfg)
        out.append(k)
    return out


def _may_split(spec: AttentionSpec) -> bool:
    """The decode form (split-KV) applies: at most DECODE_MAX_SQ queries per sequence."""
    sq = spec.values["q"].type.shape[2]
    return isinstance(sq, int) and sq <= DECODE_MAX_SQ     # a decode step's shapes are static


def check(kind: str, subgraph, device_kind: str) -> bool:
    """Checker: can the template run this attention node (or a group holding only one)?"""
    node = subgraph if isinstance(subgraph, Node) else None
    if isinstance(subgraph, Graph):
        nodes = [n for n in subgraph.compute_nodes if n.op in OPS]
        if len(nodes) != 1 or len(subgraph.compute_nodes) != 1:
            return False
        node = nodes[0]
    if node is None or node.op not in OPS or not device_ok(device_kind):
        return False
    spec = _spec_or_none(node)
    return spec is not None and why_unsupported(spec) is None
