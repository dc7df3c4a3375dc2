"""What an ``attention`` / ``attention_varlen`` node asks for, and whether the
Triton template supports it ("is this supported here?", declining cleanly).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from braze.autotune.space import pow2_bucket
from braze.ir import Node, Value
from braze.ir.attention import CAUSAL, MASK_KINDS, attention_reference
from braze.ir.graph import iter_values
from braze.ir.types import DTYPE_NAMES, Sym

from braze.ir.attention_varlen import attention_varlen_reference

log = logging.getLogger("braze.codegen.attention")

OPS = ("attention", "attention_varlen")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
TEMPLATE_VERSION = "fa-fwd-3"  # 2: mask block summary (MASK_SKIP); 3: FUSE_COMBINE

_SIGNATURES = {"attention": inspect.signature(attention_reference),
               "attention_varlen": inspect.signature(attention_varlen_reference)}
_OPERANDS = {"attention": ("q", "k", "v", "mask", "slopes"),
             "attention_varlen": ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "slopes", "positions")}


@dataclass(frozen=True)
class AttentionSpec:
    """An attention node, read: operand positions in ``node.inputs`` and attributes."""

    op: str
    positions: Mapping[str, int]          # operand name -> index among the node's tensor operands
    values: Mapping[str, Value]
    scale: float
    causal: str = "none"
    window: Optional[int] = None
    groups: int = 1
    mask_kind: str = "none"
    max_seqlen_q: Any = None              # varlen: int | Sym | None
    max_seqlen_k: Any = None
    n_inputs: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def varlen(self) -> bool:
        return self.op == "attention_varlen"

    def has(self, name: str) -> bool:
        return name in self.positions

    def pick(self, xs: tuple, name: str):
        i = self.positions.get(name)
        return None if i is None else xs[i]

    def key(self, tag: str) -> str:
        """Stable structural hash: op, attributes, operand types, template version."""
        ops = ",".join(f"{n}:{self.values[n].type}" for n in _OPERANDS[self.op] if n in self.values)
        attrs = ",".join(f"{k}={v}" for k, v in sorted(self.attrs.items()))
        text = f"{self.op}|{ops}|{attrs}|{tag}|{TEMPLATE_VERSION}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def problem(self, env: Mapping[str, int]) -> dict:
        """The shape bucket of one binding (keys of ``space.py``)."""
        q = self.values["q"].type.concrete_shape(env)
        k = self.values["k"].type.concrete_shape(env)
        v = self.values["v"].type.concrete_shape(env)
        if self.varlen:
            b = self.values["cu_seqlens_q"].type.concrete_shape(env)[0] - 1
            sq = concrete_dim(self.max_seqlen_q, env) or q[0]
            sk = concrete_dim(self.max_seqlen_k, env) or k[0]
            hq, hkv = q[1], k[1]
        else:
            b, hq, sq = q[0], q[1], q[2]
            hkv, sk = k[1], k[2]
        dtype = DTYPE_NAMES[self.values["q"].type.dtype]
        return {"B": pow2_bucket(b), "Hq": hq, "Hkv": hkv, "groups": self.groups, "Sq": pow2_bucket(sq),
                "Sk": pow2_bucket(sk), "D": q[-1], "Dv": v[-1], "dtype": dtype, "causal": self.causal,
                "window": pow2_bucket(self.window) if self.window else 0, "mask": self.mask_kind,
                "softcap": bool(self.attrs.get("softcap")),
                "alibi": self.has("slopes"), "varlen": self.varlen}


def concrete_dim(d, env) -> Optional[int]:
    """``d`` (an int, a Sym or None) in ``env``; None where it is None or a symbol is unbound."""
    if d is None:
        return None
    if isinstance(d, Sym):
        try:
            return d.eval(env)
        except KeyError:
            return None
    return int(d)


def read_spec(node: Node) -> AttentionSpec:
    """Parse an attention node; raises ValueError naming what does not fit."""
    if node.op not in OPS:
        raise ValueError(f"not an attention node: {node.op}")
    sig = _SIGNATURES[node.op]
    params = list(sig.parameters)
    try:
        bound = sig.bind(*node.args, **dict(node.kwargs))
    except TypeError as e:
        raise ValueError(f"{node.op} node does not fit its signature: {e}") from None
    names: list[str] = []
    for i, a in enumerate(node.args):
        names.extend(params[i] for _ in iter_values(a))
    for k, a in node.kwargs:
        names.extend(k for _ in iter_values(a))
    positions = {n: i for i, n in enumerate(names)}
    values = {n: v for n, v in bound.arguments.items() if isinstance(v, Value)}
    attrs = {n: v for n, v in bound.arguments.items() if n not in values and n not in _OPERANDS[node.op]}
    kw = {**{p.name: p.default for p in sig.parameters.values() if p.default is not inspect.Parameter.empty},
          **bound.arguments}
    for n in ("q", "k", "v") + (("cu_seqlens_q", "cu_seqlens_k") if node.op == "attention_varlen" else ()):
        if n not in values:
            raise ValueError(f"{node.op}: operand {n} is not a tensor value")
    return AttentionSpec(node.op, positions, values, kw["scale"], kw.get("causal", "none"), kw.get("window"),
                         kw.get("groups", 1), kw.get("mask_kind", "none"), kw.get("max_seqlen_q"),
                         kw.get("max_seqlen_k"), len(names), attrs)


def why_unsupported(spec: AttentionSpec) -> Optional[str]:
    """None when the Triton template runs this node, else the reason."""
    q, k, v = (spec.values[n].type for n in ("q", "k", "v"))
    rank = 3 if spec.varlen else 4
    if q.rank != rank or k.rank != rank or v.rank != rank:
        return f"operands of rank {q.rank}/{k.rank}/{v.rank}, expected {rank}"
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtypes {q.dtype}/{k.dtype}/{v.dtype}"
    d, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    if not all(isinstance(x, int) for x in (d, dk, dv)):
        return "symbolic head dim"
    if d != dk or not 1 <= d <= MAX_HEAD_DIM or not 1 <= dv <= MAX_HEAD_DIM:
        return f"head dims {d}/{dk}/{dv} (at most {MAX_HEAD_DIM}, q and k equal)"
    if not isinstance(spec.scale, (int, float)) or not spec.scale > 0:
        return f"scale {spec.scale!r} (a positive number)"
    if spec.causal not in CAUSAL:
        return f"causal {spec.causal!r}"
    if spec.window is not None and (not isinstance(spec.window, int) or spec.window < 1):
        return f"window {spec.window!r}"
    if not isinstance(spec.groups, int) or spec.groups < 1:
        return f"groups {spec.groups!r}"
    if spec.mask_kind not in MASK_KINDS or spec.has("mask") != (spec.mask_kind != "none"):
        return f"mask_kind {spec.mask_kind!r} with mask {'present' if spec.has('mask') else 'absent'}"
    if spec.has("mask"):
        m = spec.values["mask"].type
        if m.rank > 4:
            return f"mask of rank {m.rank}"
        if spec.mask_kind == "bool" and m.dtype != torch.bool:
            return f"bool mask of dtype {m.dtype}"
        if spec.mask_kind == "additive" and not m.dtype.is_floating_point:
            return f"additive mask of dtype {m.dtype}"
    if spec.has("slopes") and spec.values["slopes"].type.rank != 1:
        return "slopes not of rank 1"
    for n in ("max_seqlen_q", "max_seqlen_k"):
        x = getattr(spec, n)
        if x is not None and not isinstance(x, (int, Sym)):
            return f"{n} {x!r}"
    return None


def device_ok(device_kind: str) -> bool:
    from braze.compiler.codegen.triton_attention.launch import interpreting  # lazy: imports triton on first use

    return device_kind == "cuda" or (device_kind == "cpu" and interpreting())
