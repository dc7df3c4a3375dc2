"""Ops of padding elimination: the valid-token index, pack and unpack.

    padding_index(mask, *, symbol) -> (idx i64[T], cu_seqlens i32[B + 1], pos i64[T], batch i64[T], dst i64[T])

``mask [B, S]`` (0/1 or bool, any padding side) marks the valid tokens;
``T`` (the symbol named by ``symbol``) is their count, known only at run
time: computing it is the one host synchronisation of a forward. ``idx``
are the flat indices ``b * S + s`` of the valid tokens in row-major order
(so each row's tokens are contiguous in packed order), ``cu_seqlens`` the
prefix sums of the row lengths, ``pos`` and ``batch`` each token's ``s``
and ``b``, ``dst`` where ``unpack`` writes each packed row.

The runtime may round T up to a bucket (to replay one CUDA graph for many
token counts): the extra rows read row 0 (``idx`` = ``pos`` = ``batch`` = 0),
lie outside ``cu_seqlens[B]`` (attention gives them zeros) and are written
by ``unpack`` to a discarded row (``dst`` = B * S).

    pack(x, idx) -> [T, F...]            x [B, S, F...]: the valid rows
    unpack(xp, dst, *, batch, seq) -> [B, S, F...]: xp scattered back, zeros at padding

NOTE: ``unpack`` writes zeros at padding positions: outputs of a graph
whose padding was eliminated are zero there (documented behaviour).
"""
from __future__ import annotations

from typing import Optional

import torch

from braze.ir.registry import Category, OpDef, register
from braze.ir.types import TensorType, sym


class PaddedPositionRead(RuntimeError):
    """Raised by ``padding_index`` when a position the graph reads in the padded layout
    (``valid_positions``: a pooler's token 0) is padding in some row: the packed program
    has no value there, and the caller runs the graph without padding elimination."""


def padding_index_ref(mask: torch.Tensor, *, symbol: str = "T", bucket=1, valid_positions=()):
    """``bucket``: round T up to a multiple of it (an int, or a function of T).
    ``valid_positions``: sequence positions that must be valid in every row, else
    :class:`PaddedPositionRead` (read on the host with T: no second synchronisation)."""
    valid = mask.reshape(-1) != 0
    if valid_positions:
        # NOTE: the flag is appended B * S + 1 times to the flat mask, so that the count
        # nonzero's one host synchronisation returns tells it too (more than B * S
        # indices iff it is set); the valid tokens' indices come first.
        n = valid.numel()
        ok = (mask[:, list(valid_positions)] != 0).all().reshape(1).expand(n + 1)
        idx = torch.nonzero(torch.cat([valid, ok])).reshape(-1)
        if idx.numel() <= n:
            raise PaddedPositionRead(
                f"sequence position(s) {list(valid_positions)} are padding in some row, and this program was "
                "compiled with padding elimination that reads them as valid tokens (compile it from an example "
                "padded the same way, or with Options(disable=['eliminate_padding']))")
        idx = idx[:idx.numel() - n - 1]
    else:
        idx = torch.nonzero(valid).reshape(-1)  # NOTE: the host synchronisation (T is data-dependent)
    seq = mask.shape[1]
    lengths = (mask != 0).sum(1, dtype=torch.int32)
    cu = torch.zeros(mask.shape[0] + 1, dtype=torch.int32, device=mask.device)
    cu[1:] = torch.cumsum(lengths, 0)
    dst = idx
    step = bucket(idx.numel()) if callable(bucket) else bucket
    extra = (-idx.numel()) % step
    if extra:
        dst = torch.cat([idx, idx.new_full((extra,), mask.numel())])
        idx = torch.cat([idx, idx.new_zeros(extra)])
    return idx, cu, idx % seq, torch.div(idx, seq, rounding_mode="floor"), dst


def _padding_index_infer(mask, *, symbol: str = "T", valid_positions=()):
    t = mask.type
    if t.rank != 2:
        raise TypeError(f"padding_index takes a [batch, seq] mask, got {t}")
    T = sym(symbol)
    dev = t.device
    return (TensorType((T,), torch.int64, dev), TensorType((_plus1(t.shape[0]),), torch.int32, dev),
            TensorType((T,), torch.int64, dev), TensorType((T,), torch.int64, dev),
            TensorType((T,), torch.int64, dev))


def _plus1(d):
    return d + 1 if isinstance(d, int) else sym(f"{d} + 1")


def pack_ref(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.reshape((-1,) + tuple(x.shape[2:])).index_select(0, idx)


def _pack_infer(x, idx):
    if x.type.rank < 2:
        raise TypeError(f"pack takes [batch, seq, ...], got {x.type}")
    return (TensorType(idx.type.shape + x.type.shape[2:], x.type.dtype, x.type.device),)


def unpack_ref(xp: torch.Tensor, dst: torch.Tensor, *, batch: int, seq: int) -> torch.Tensor:
    n = batch * seq
    if xp.device.type == "cpu" and xp.shape[0] == n > 0 and int(dst[-1]) == n - 1:
        # NOTE: no padding at all: dst is strictly increasing below n (bucket rows
        # would end it with n), so it is 0..n-1 and unpacking is a reshape. Read
        # on the host only where that is no synchronisation; it saves a write of
        # the whole output (and on the CPU, the page faults of a second buffer).
        return xp.reshape((batch, seq) + tuple(xp.shape[1:]))
    out = xp.new_zeros((batch * seq + 1,) + tuple(xp.shape[1:]))  # the last row takes bucket padding
    out.index_copy_(0, dst, xp)
    return out[:-1].reshape((batch, seq) + tuple(xp.shape[1:]))


def _unpack_infer(xp, idx, *, batch, seq):
    return (TensorType((batch, seq) + xp.type.shape[1:], xp.type.dtype, xp.type.device),)


_VIEWS = ("reshape", "view", "_unsafe_view", "select", "slice", "unsqueeze", "squeeze", "_to_copy", "alias")


def padded_outputs(graph) -> tuple[Optional[int], dict[int, str]]:
    """Which outputs of a padding-eliminated ``graph`` differ from eager at padding positions.

    Returns (index of the graph input holding the padding mask, or None;
    {output index: kind}): ``"unpacked"`` for an ``unpack`` result (also a
    fused group's scatter output), ``[B, S, ...]`` and zero at padding: it
    equals eager where the mask is set; ``"derived"`` for an output computed
    from one (BERT's pooler reads token 0, a padding token under left padding).
    Outputs that read no unpacked value are absent. Empty without padding elimination.
    """
    pads = [n for n in graph.compute_nodes if n.op == "padding_index"]
    if len(pads) != 1:
        return None, {}
    m = pads[0].args[0].node
    while m.op in _VIEWS and m.inputs:
        m = m.args[0].node
    mask = graph.inputs.index(m) if m.op == "input" else None
    scattered: set = set()   # values holding padding positions (unpacked or computed from them)
    direct: set = set()      # unpack results as such
    for n in graph.compute_nodes:
        if n.op == "unpack":
            direct.add(n.out())
        elif n.op == "fused":
            sub = n.attr("graph")
            for j, o in enumerate(sub.outputs):
                if o.node.op == "unpack":
                    direct.add(n.out(j))
        if direct & set(n.outputs) or any(v in scattered for v in n.inputs):
            scattered.update(n.outputs)
    kinds = {}
    for i, v in enumerate(graph.outputs):
        if v in direct:
            kinds[i] = "unpacked"
        elif v in scattered:
            kinds[i] = "derived"
    return mask, kinds


register(OpDef("padding_index", Category.GATHER, padding_index_ref, infer=_padding_index_infer, syncs_host=True,
               doc="valid-token index of a [batch, seq] padding mask; see braze.ir.padding"))
register(OpDef("pack", Category.GATHER, pack_ref, infer=_pack_infer, doc="the valid tokens of [batch, seq, ...]"))
def _unpack_sample(node, env, generator) -> dict:
    """Destinations that keep ``unpack``'s invariant for random inputs (the tuner's):
    distinct increasing rows of ``[0, batch * seq)``, then bucket rows at ``batch * seq``."""
    dst = node.args[1]
    t = dst.type.concrete_shape(env)[0]
    rows = node.attr("batch") * node.attr("seq")
    n = min(t, rows)
    real = torch.randperm(rows, generator=generator)[:n].sort().values
    return {dst: torch.cat([real, torch.full((t - n,), rows)]).to(torch.int64)}


register(OpDef("unpack", Category.GATHER, unpack_ref, infer=_unpack_infer, sample=_unpack_sample,
               doc="packed tokens back to [batch, seq, ...], zeros at padding"))
