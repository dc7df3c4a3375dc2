"""The ``attention_varlen`` op: attention over packed sequences of uneven length.

    attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes=None, positions=None, *,
                     scale, max_seqlen_q=None, max_seqlen_k=None,
                     causal="none", window=None, groups=1, softcap=None) -> out

Layouts: ``q [Tq, Hq, D]``, ``k [Tk, Hkv, D]``, ``v [Tk, Hkv, Dv]``,
``out [Tq, Hq, Dv]`` in q's dtype; ``cu_seqlens_q`` and ``cu_seqlens_k`` are
int32 prefix sums with B + 1 entries (``cu[0] = 0``). Sequence b is made of
the query rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` and the key/value rows
``cu_seqlens_k[b]:cu_seqlens_k[b+1]``; it attends exactly as the
``attention`` op does (see ``braze.ir.attention``) on that one sequence:
``causal`` "none" / "top_left" / "bottom_right" aligned per sequence (the
padding-elimination pass uses "bottom_right", as flash-attention's varlen
kernels do), ``window``, GQA ``groups`` = Hq / Hkv, ALiBi ``slopes [Hq]``,
Gemma-2's logit ``softcap``.
There is no mask operand: the sequences are the mask. Rows with no visible
key, and query rows outside ``[cu_q[0], cu_q[B])``, produce zeros.

``positions`` (optional, integer ``[T]``, self-attention over one packing: q and k
rows are the same tokens): the position of each packed token in its original
row. The window is then measured in positions, not packed rows: a padding
mask with zeros inside a row (a hole) leaves fewer packed rows than
positions between two tokens, and the dense model's window counts
positions. Without it the window counts packed rows.

``max_seqlen_q`` / ``max_seqlen_k`` bound the sequence lengths (ints, or
None: the kernel then reads them off ``cu_seqlens``, a host sync).

Its kernels live in ``braze.compiler.codegen.triton_attention``; the op is an
IR op like ``attention`` (registered when ``braze.ir`` is imported), so the
padding-elimination pass can make it without a backend.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from braze.ir.attention import CAUSAL, attention_reference
from braze.ir.registry import REGISTRY, Category, OpDef, register
from braze.ir.types import TensorType


def attention_varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes=None, positions=None, *, scale: float,
                               max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None,
                               causal: str = "none", window: Optional[int] = None,
                               groups: int = 1, softcap: Optional[float] = None) -> torch.Tensor:
    """Loop over the sequences, each through ``attention_reference`` (a window over
    ``positions`` as a bool mask)."""
    cq = [int(x) for x in cu_seqlens_q.tolist()]
    ck = [int(x) for x in cu_seqlens_k.tolist()]
    if len(cq) != len(ck):
        raise ValueError(f"attention_varlen: cu_seqlens_q has {len(cq)} entries, cu_seqlens_k {len(ck)}")
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=q.dtype, device=q.device)
    for b in range(len(cq) - 1):
        qb = q[cq[b]:cq[b + 1]].transpose(0, 1)[None]
        kb = k[ck[b]:ck[b + 1]].transpose(0, 1)[None]
        vb = v[ck[b]:ck[b + 1]].transpose(0, 1)[None]
        if qb.shape[2] == 0:
            continue
        if kb.shape[2] == 0:
            continue  # no key: zeros
        mask, win = None, window
        if positions is not None and window is not None:
            qp, kp = positions[cq[b]:cq[b + 1]].to(torch.int64), positions[ck[b]:ck[b + 1]].to(torch.int64)
            mask, win = (qp[:, None] - kp[None, :] < window)[None, None], None
        ob = attention_reference(qb, kb, vb, mask, slopes, scale=scale, causal=causal, window=win,
                                 groups=groups, mask_kind="none" if mask is None else "bool", softcap=softcap)
        out[cq[b]:cq[b + 1]] = ob[0].transpose(0, 1)
    return out


def _infer(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes=None, positions=None, *, scale, max_seqlen_q=None,
           max_seqlen_k=None, causal="none", window=None, groups=1, softcap=None):
    qt, kt, vt = q.type, k.type, v.type
    if qt.rank != 3 or kt.rank != 3 or vt.rank != 3:
        raise TypeError(f"attention_varlen takes [T, H, D] operands, got {qt}, {kt}, {vt}")
    for name, c in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if c.type.rank != 1 or c.type.dtype != torch.int32:
            raise TypeError(f"attention_varlen {name} must be int32 [B + 1], got {c.type}")
    if causal not in CAUSAL:
        raise TypeError(f"attention_varlen causal={causal!r}: expected one of {CAUSAL}")
    if softcap is not None and not (isinstance(softcap, (int, float)) and softcap > 0):
        raise TypeError(f"attention_varlen softcap={softcap!r}: a positive number or None")
    if positions is not None:
        pt = positions.type
        if pt.rank != 1 or pt.dtype.is_floating_point or pt.dtype == torch.bool:
            raise TypeError(f"attention_varlen positions must be an integer [T], got {pt}")
        if cu_seqlens_q != cu_seqlens_k or not (pt.shape[0] == qt.shape[0] == kt.shape[0]):
            raise TypeError("attention_varlen positions need one packing for q and k (the same cu_seqlens, "
                            f"one row per token): q {qt}, k {kt}, positions {pt}")
    if isinstance(qt.shape[1], int) and isinstance(kt.shape[1], int) and qt.shape[1] != groups * kt.shape[1]:
        raise TypeError(f"attention_varlen: {qt.shape[1]} query heads != groups {groups} x {kt.shape[1]} K/V heads")
    return (TensorType(qt.shape[:-1] + vt.shape[-1:], qt.dtype, qt.device),)


def _sample(node, env, generator) -> dict:
    """Valid ``cu_seqlens`` for random inputs: B random lengths within the rows
    and the ``max_seqlen`` bounds, some rows past ``cu[B]`` (bucket rows)."""
    bound = inspect.signature(attention_varlen_reference).bind(*node.args, **dict(node.kwargs)).arguments
    out = {}
    for rows_of, cu_name, bound_name in (("q", "cu_seqlens_q", "max_seqlen_q"), ("k", "cu_seqlens_k", "max_seqlen_k")):
        cu = bound[cu_name]
        if cu in out:
            continue  # one operand for both
        rows = bound[rows_of].type.concrete_shape(env)[0]
        n = cu.type.concrete_shape(env)[0] - 1
        limit = bound.get(bound_name)
        limit = limit.eval(env) if hasattr(limit, "eval") else limit
        limit = min(rows, int(limit)) if limit is not None else rows
        w = torch.rand(max(n, 0), generator=generator) + 0.05
        lengths = (w / w.sum() * rows).floor().clamp(max=limit).to(torch.int32) if n > 0 else w.to(torch.int32)
        out[cu] = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0, dtype=torch.int32)])
    pos = bound.get("positions")
    if pos is not None:   # increasing within each sequence, a hole now and then
        t = pos.type.concrete_shape(env)[0]
        step = 1 + (torch.rand(t, generator=generator) < 0.15).to(torch.int64) * 3
        cu = out[bound["cu_seqlens_q"]].to(torch.int64)
        p = torch.zeros(t, dtype=torch.int64)
        for b in range(cu.numel() - 1):
            lo, hi = int(cu[b]), int(cu[b + 1])
            p[lo:hi] = torch.cumsum(step[lo:hi], 0) - 1
        out[pos] = p.to(pos.type.dtype)
    return out


if "attention_varlen" not in REGISTRY:
    register(OpDef("attention_varlen", Category.ATTENTION, attention_varlen_reference, infer=_infer, sample=_sample,
                   syncs_host=True, doc="attention over packed sequences; see braze.ir.attention_varlen"))
