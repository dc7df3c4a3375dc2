"""The ``attention`` op: one fused attention, however the model wrote it.

    attention(q, k, v, mask=None, slopes=None, *, scale, causal="none",
              window=None, groups=1, mask_kind="none", softcap=None) -> out

Layouts: ``q [B, Hq, Sq, D]``, ``k [B, Hkv, Sk, D]``, ``v [B, Hkv, Sk, Dv]``,
``out [B, Hq, Sq, Dv]`` in q's dtype. ``Hq = groups * Hkv``: query head h
reads K/V head ``h // groups`` (GQA/MQA; the repeated K/V never exist).

Masking, all combined (a key is visible when every rule allows it):

- ``causal``: "none"; "top_left" (key j visible to query i when j <= i, as
  SDPA's ``is_causal``); "bottom_right" (j <= i + Sk - Sq, as Hugging Face
  and flash-attention align a query block at the end of the keys).
- ``window``: sliding window of ``window`` keys: j visible when
  ``i' - j < window`` with i' the query's aligned position (i, or
  i + Sk - Sq for bottom_right).
- ``mask`` with ``mask_kind`` "bool" (True = visible) or "additive" (added
  to the scores), broadcastable to ``[B, Hq, Sq, Sk]``: padding masks and any
  mask the pass could not prove causal or windowed.
- ``slopes`` ``[Hq]`` (float32): ALiBi, score += slope[h] * (j - i') ... as
  BLOOM adds ``slope[h] * j`` (softmax is shift-invariant per row, so the
  two agree).

Scores are ``scale * q @ k^T``, or with ``softcap`` (Gemma-2's logit
soft-capping) ``softcap * tanh(scale * q @ k^T / softcap)``, before ALiBi
and the mask are added.

Rows with no visible key produce zeros (SDPA produces NaN there; braze's
kernels and this reference agree on zeros, which padding rows need).
Dropout does not exist here: the pass only rewrites eval-mode attention.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from braze.ir.registry import Category, OpDef, register
from braze.ir.types import TensorType

CAUSAL = ("none", "top_left", "bottom_right")
MASK_KINDS = ("none", "bool", "additive")


def visible(sq: int, sk: int, causal: str, window: Optional[int], device=None) -> Optional[torch.Tensor]:
    """[Sq, Sk] bool of keys allowed by causal and window rules (None: all)."""
    if causal == "none" and window is None:
        return None
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    pos = i + (sk - sq) if causal == "bottom_right" else i
    ok = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if causal != "none":
        ok &= j <= pos
    if window is not None:
        ok &= pos - j < window
    return ok


def attention_reference(q, k, v, mask=None, slopes=None, *, scale: float, causal: str = "none",
                        window: Optional[int] = None, groups: int = 1, mask_kind: str = "none",
                        softcap: Optional[float] = None) -> torch.Tensor:
    """Math reference in float32 (float64 for float64 inputs)."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    if groups > 1:
        kf = kf.repeat_interleave(groups, dim=-3)
        vf = vf.repeat_interleave(groups, dim=-3)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    sq, sk = s.shape[-2], s.shape[-1]
    if slopes is not None:
        i = torch.arange(sq, device=s.device)[:, None] + (sk - sq if causal == "bottom_right" else 0)
        j = torch.arange(sk, device=s.device)[None, :]
        s = s + slopes.to(acc)[:, None, None] * (j - i).to(acc)
    allowed = visible(sq, sk, causal, window, s.device)
    if mask_kind == "additive":
        s = s + mask.to(acc)
    elif mask_kind == "bool":
        allowed = mask if allowed is None else (allowed & mask)
    if allowed is not None:
        s = s.masked_fill(~allowed, -math.inf)
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)  # rows with no visible key -> zeros
    return torch.matmul(p, vf).to(q.dtype)


def _infer(q, k, v, mask=None, slopes=None, *, scale, causal="none", window=None, groups=1, mask_kind="none",
           softcap=None):
    qt, kt, vt = q.type, k.type, v.type
    if softcap is not None and not (isinstance(softcap, (int, float)) and softcap > 0):
        raise TypeError(f"attention softcap={softcap!r}: a positive number or None")
    if qt.rank != 4 or kt.rank != 4 or vt.rank != 4:
        raise TypeError(f"attention takes [B, H, S, D] operands, got {qt}, {kt}, {vt}")
    if causal not in CAUSAL:
        raise TypeError(f"attention causal={causal!r}: expected one of {CAUSAL}")
    if mask_kind not in MASK_KINDS or (mask is None) != (mask_kind == "none"):
        raise TypeError(f"attention mask_kind={mask_kind!r} does not fit mask={mask}")
    if isinstance(qt.shape[1], int) and isinstance(kt.shape[1], int) and qt.shape[1] != groups * kt.shape[1]:
        raise TypeError(f"attention: {qt.shape[1]} query heads != groups {groups} x {kt.shape[1]} K/V heads")
    return (TensorType(qt.shape[:-1] + vt.shape[-1:], qt.dtype, qt.device),)


# A decode step attends a few query rows over a static cache of at least this many keys.
DECODE_MAX_QUERIES = 16
DECODE_MIN_KEYS = 256


def _sample(node, env, generator) -> dict:
    """A decode step's mask for random inputs (the tuner's): over a static cache only a
    prefix of the keys is valid, on average half of it over a generation that fills the
    cache; rows get ragged valid lengths around that half. A uniformly random mask would
    make every key visible and time each kernel on a case no model runs (a kernel that
    skips the invalid keys would lose to one that reads the whole cache)."""
    if node.attr("mask_kind", "none") == "none" or len(node.args) < 4 or node.args[3] is None:
        return {}
    q, mask = node.args[0], node.args[3]
    sq = q.type.concrete_shape(env)[2]
    shape = mask.type.concrete_shape(env)
    sk = shape[-1]
    if sq > DECODE_MAX_QUERIES or sk < DECODE_MIN_KEYS or len(shape) != 4:
        return {}
    b = shape[0]
    lengths = (sk * (3 + 2 * torch.rand(b, generator=generator)) / 8).long().clamp(1, sk)   # 3/8 .. 5/8 of sk
    keep = torch.arange(sk)[None, :] < lengths[:, None]                                       # [b, sk]
    keep = keep[:, None, None, :].expand(shape)
    if node.attr("mask_kind") == "bool":
        return {mask: keep.clone()}
    dtype = mask.type.dtype
    return {mask: torch.where(keep, 0.0, torch.finfo(dtype).min).to(dtype)}


register(OpDef("attention", Category.ATTENTION, attention_reference, infer=_infer, sample=_sample,
               doc="fused attention; see braze.ir.attention"))
