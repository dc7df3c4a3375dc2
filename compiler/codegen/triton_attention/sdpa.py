"""The library candidate of an ``attention`` node: torch's
``scaled_dot_product_attention`` (flash / memory-efficient / cuDNN on CUDA,
the fused CPU kernel on the CPU), wherever the node's attributes map to it.
On the CPU an ``attention_varlen`` node has one too: SDPA per sequence
(one batched call when every sequence has the same length), reading
``cu_seqlens`` on the host, which costs nothing there; on a GPU that read
would be a synchronisation per call, and the Triton varlen kernel serves.

On CUDA an ``attention_varlen`` node in fp16/bf16 has
:class:`FlashVarlenAttention`: torch's bundled flash-attention varlen kernel
(``aten._flash_attention_forward`` with ``cu_seqlens``), no host read.

Mapping: causal "top_left" is SDPA's ``is_causal``; "bottom_right" is too
when Sq == Sk or Sq == 1 (a lone query sees every key), otherwise (and for a
window) the causal/window rule becomes a bool mask, combined with the
node's own mask. GQA goes through ``enable_gqa``. ALiBi does not map (a
materialised bias loses precision in 16-bit types): no candidate. Rows
with no visible key give zeros (``nan`` from a backend is replaced).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

import torch

from braze.autotune.space import EMPTY, Config, Space
from braze.ir.attention import visible

from braze.compiler.codegen.triton_attention.spec import AttentionSpec


def sdpa_maps(spec: AttentionSpec, device_kind: str = "cuda") -> bool:
    """Whether SDPA computes this node exactly (up to rounding), without a
    host synchronisation on ``device_kind``."""
    return (not spec.has("slopes") and not spec.attrs.get("softcap") and not _window_over_positions(spec)
            and (not spec.varlen or device_kind == "cpu"))


def _window_over_positions(spec: AttentionSpec) -> bool:
    """A varlen window measured in the tokens' positions: the library kernels count rows."""
    return spec.window is not None and spec.has("positions")


def sdpa_attention(q, k, v, mask=None, *, scale: float, causal: str = "none", window: Optional[int] = None,
                   groups: int = 1, mask_kind: str = "none") -> torch.Tensor:
    """The ``attention`` op (no ALiBi) through ``scaled_dot_product_attention``."""
    sq, sk = q.shape[-2], k.shape[-2]
    plain_causal = causal == "top_left" or (causal == "bottom_right" and sq == sk)
    is_causal = mask is None and window is None and plain_causal
    rule = None
    if not is_causal and (window is not None or (causal != "none" and not (causal == "bottom_right" and sq == 1))):
        rule = visible(sq, sk, causal, window, q.device)
    attn_mask = None
    if mask is not None and mask_kind == "bool":
        attn_mask = mask if rule is None else (mask & rule)
    elif mask is not None:
        attn_mask = _additive(mask, q.dtype)
        if rule is not None:
            attn_mask = attn_mask.masked_fill(~rule, -math.inf)
    elif rule is not None:
        attn_mask = rule
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=groups > 1)
    if attn_mask is not None or (causal == "bottom_right" and sq > sk):
        out = torch.nan_to_num(out, nan=0.0, posinf=math.inf, neginf=-math.inf)
    return out


def sdpa_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale: float, causal: str = "none",
                          window: Optional[int] = None, groups: int = 1) -> torch.Tensor:
    """The ``attention_varlen`` op (no ALiBi) through SDPA, one sequence at a time."""
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    attrs = dict(scale=scale, causal=causal, window=window, groups=groups)
    n = len(cq) - 1
    shape = q.shape[:-1] + v.shape[-1:]
    if n > 0 and len({b - a for a, b in zip(cq, cq[1:])}) == 1 and len({b - a for a, b in zip(ck, ck[1:])}) == 1:
        # every sequence of one length: one batched call on [B, H, S, D] views
        def batched(x, c):
            return x[c[0]:c[-1]].unflatten(0, (n, -1)).transpose(1, 2)
        ob = sdpa_attention(batched(q, cq), batched(k, ck), batched(v, ck), **attrs).transpose(1, 2)
        if (cq[0], cq[-1]) == (0, q.shape[0]):
            return ob.reshape(shape)
        out = q.new_zeros(shape)  # NOTE: rows outside every sequence (bucket padding) are zero
        out[cq[0]:cq[-1]] = ob.flatten(0, 1)
        return out
    out = q.new_zeros(shape)
    for b in range(n):
        if cq[b + 1] == cq[b] or ck[b + 1] == ck[b]:
            continue  # no query, or no key: zeros
        qb, kb, vb = (x[c[b]:c[b + 1]].transpose(0, 1)[None] for x, c in ((q, cq), (k, ck), (v, ck)))
        out[cq[b]:cq[b + 1]] = sdpa_attention(qb, kb, vb, **attrs)[0].transpose(0, 1)
    return out


FLASH_DTYPES = (torch.float16, torch.bfloat16)


def flash_varlen_maps(spec: AttentionSpec, device_kind: str = "cuda") -> bool:
    """Whether torch's flash varlen kernel computes this ``attention_varlen`` node exactly:
    CUDA, fp16/bf16, equal q/v head dims (a multiple of 8, at most 256), no ALiBi, a
    static ``max_seqlen`` bound, causal only bottom-right aligned (flash's rule; top-left
    too when q and k share ``cu_seqlens``), a window only with causal."""
    if (not spec.varlen or device_kind != "cuda" or spec.has("slopes") or _window_over_positions(spec)
            or spec.attrs.get("softcap")):
        return False
    q, v = spec.values["q"].type, spec.values["v"].type
    d, dv = q.shape[-1], v.shape[-1]
    if q.dtype not in FLASH_DTYPES or d != dv or not isinstance(d, int) or d % 8 or d > 256:
        return False
    if not all(isinstance(x, int) for x in (spec.max_seqlen_q, spec.max_seqlen_k)):
        return False
    same = spec.values["cu_seqlens_q"] == spec.values["cu_seqlens_k"]
    if spec.causal == "top_left" and not same:
        return False
    return spec.window is None or spec.causal != "none"


def _flash_forward(*args, **kwargs):
    return torch.ops.aten._flash_attention_forward(*args, **kwargs)


def flash_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, max_seqlen_q: int, max_seqlen_k: int,
                           scale: float, causal: str = "none", window: Optional[int] = None) -> torch.Tensor:
    """The ``attention_varlen`` op through ``aten._flash_attention_forward`` (GQA natively);
    rows past ``cu_seqlens_q[B]`` are zeroed on the device (no host read)."""
    cq, ck = cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32)
    # NOTE: a window maps with causal only (flash_varlen_maps): keys [pos - window + 1, pos].
    win = {} if window is None else dict(window_size_left=window - 1, window_size_right=0)
    out = _flash_forward(q, k, v, cq, ck, max_seqlen_q, max_seqlen_k, 0.0, causal != "none", False, scale=scale,
                         **win)[0]
    rows = torch.arange(q.shape[0], device=q.device)
    return out.masked_fill((rows >= cq[-1])[:, None, None], 0.0)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == dtype:
        return mask
    # NOTE: keep -inf as -inf but clamp finite values into the narrower type: finfo(f32).min
    # would round to -inf in f16 and empty a row that the op keeps (uniform weights).
    fmin = torch.finfo(dtype).min
    return torch.where(mask == -math.inf, mask, mask.clamp_min(fmin)).to(dtype)


@dataclass
class _LibraryAttention:
    """A library call on an attention node: no config, keyed by the node and ``TAG``."""

    TAG: ClassVar[str] = ""
    spec: AttentionSpec = field(repr=False)
    backend: str = "library"
    space: Space = field(default=EMPTY, repr=False)
    source: str = ""

    def key(self) -> str:
        return self.spec.key(self.TAG)

    def problem(self, env: Mapping[str, int]) -> dict:
        return self.spec.problem(env)

    def _call(self, fn: Callable, operands: tuple, **attrs) -> Callable[..., Any]:
        """``fn`` on the node's operands named ``operands`` (in order), with ``attrs``."""
        pick = self.spec.pick

        def run(*xs):
            return fn(*(pick(xs, name) for name in operands), **attrs)
        return run


VARLEN_OPERANDS = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k")


@dataclass
class SdpaAttention(_LibraryAttention):
    """Library candidate: ``torch.nn.functional.scaled_dot_product_attention``."""

    TAG: ClassVar[str] = "sdpa"
    name: str = "library_sdpa_attention"

    @property
    def syncs_host(self) -> bool:
        """Packed sequences go through SDPA one at a time, their bounds read on the host."""
        return self.spec.varlen

    def compile(self, config: Config) -> Callable[..., Any]:
        spec = self.spec
        attrs = dict(scale=float(spec.scale), causal=spec.causal, window=spec.window, groups=spec.groups)
        if spec.varlen:
            return self._call(sdpa_attention_varlen, VARLEN_OPERANDS, **attrs)
        return self._call(sdpa_attention, ("q", "k", "v", "mask"), mask_kind=spec.mask_kind, **attrs)


@dataclass
class FlashVarlenAttention(_LibraryAttention):
    """Library candidate of an ``attention_varlen`` node on CUDA: flash-attention varlen."""

    TAG: ClassVar[str] = "flash_varlen"
    name: str = "library_flash_varlen_attention"

    def compile(self, config: Config) -> Callable[..., Any]:
        spec = self.spec
        return self._call(flash_varlen_attention, VARLEN_OPERANDS, max_seqlen_q=int(spec.max_seqlen_q),
                          max_seqlen_k=int(spec.max_seqlen_k), scale=float(spec.scale), causal=spec.causal,
                          window=spec.window)
