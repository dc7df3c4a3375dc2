"""Layout ops as index maps: the index of a layout op's operand from the index of its output.

Each map takes the :class:`~indexing.Index` at which codegen pulls the op's
output and returns the index at which to pull its operand, so reshape,
permute, expand (and implicit broadcasting), slice, select and cat cost
address arithmetic, never a copy.
"""
from __future__ import annotations

from typing import Optional, Sequence

from braze.compiler.codegen.triton.indexing import (ZERO, Index, Lin, Unsupported, const, eq, prod, quotient,
                                                     size)


def reshape_blocks(src: Sequence, dst: Sequence) -> list[tuple[int, int, int, int]]:
    """Blocks ``(src_a, src_b, dst_a, dst_b)`` of dims with equal products."""
    src = [size(d) for d in src]
    dst = [size(d) for d in dst]
    blocks = []
    i = j = 0
    while i < len(src) or j < len(dst):
        a, b = i, j
        if i >= len(src) or j >= len(dst):  # the rest are size-1 dims
            blocks.append((i, len(src), j, len(dst)))
            break
        ps, pd = src[i], dst[j]
        i, j = i + 1, j + 1
        while not eq(ps, pd):
            if quotient(pd, ps) is not None and i < len(src):
                ps = ps * src[i]
                i += 1
            elif quotient(ps, pd) is not None and j < len(dst):
                pd = pd * dst[j]
                j += 1
            else:  # not factorable symbolically: one block for the rest
                blocks.append((a, len(src), b, len(dst)))
                return blocks
        # NOTE: trailing size-1 dims join the block they follow
        while i < len(src) and eq(src[i], 1) and (j >= len(dst) or not eq(dst[j], 1)):
            i += 1
        while j < len(dst) and eq(dst[j], 1) and (i >= len(src) or not eq(src[i], 1)):
            j += 1
        blocks.append((a, i, b, j))
    return blocks


def map_reshape(idx: Index, src_shape: Sequence) -> Index:
    """Index of ``x`` (shape ``src_shape``) read through ``reshape(x, idx.shape)``."""
    src = tuple(size(d) for d in src_shape)
    groups = []
    for sa, sb, da, db in reshape_blocks(src, idx.shape):
        lin = idx.linear(da, db) if db > da else ZERO
        if sb > sa:
            groups.append((sa, sb, lin))
    return Index(src, tuple(groups)) if groups else Index.of(src, ())


def map_permute(idx: Index, perm: Sequence[int]) -> Index:
    """Index of ``x`` read through ``permute(x, perm)`` (out dim k is x's dim perm[k])."""
    rank = idx.rank
    perm = [p % rank for p in perm] if rank else []
    src_shape = [None] * rank
    for k, p in enumerate(perm):
        src_shape[p] = idx.shape[k]
    out = []
    cur = idx
    for s, e, lin in idx.groups:
        if all(perm[s + i] == perm[s] + i for i in range(e - s)):
            continue
        for k in range(s + 1, e):
            cur = cur.split_at(k)
    for s, e, lin in cur.groups:
        if e > s:
            out.append((perm[s], perm[s] + (e - s), lin))
    out.sort(key=lambda g: g[0])
    return Index(tuple(src_shape), tuple(out))


def map_broadcast(idx: Index, src_shape: Sequence) -> Index:
    """Index of ``x`` (``src_shape``) read broadcast to ``idx.shape`` (expand or implicit)."""
    src = tuple(size(d) for d in src_shape)
    lead = idx.rank - len(src)
    if lead < 0:
        raise Unsupported(f"cannot broadcast shape {list(src)} to {list(idx.shape)}")
    dims = idx.dims()
    out = []
    for k, d in enumerate(src):
        o = idx.shape[lead + k]
        if eq(d, o):
            out.append((k, k + 1, dims[lead + k]))
        elif eq(d, 1):
            out.append((k, k + 1, ZERO))
        else:
            raise Unsupported(f"cannot broadcast shape {list(src)} to {list(idx.shape)}")
    # Keep whole groups where nothing is broadcast, for readable code.
    return _regroup(Index(src, tuple(out)), idx, lead)


def _regroup(per_dim: Index, idx: Index, lead: int) -> Index:
    groups = []
    src_dims = per_dim.groups
    k = 0
    rank = per_dim.rank
    while k < rank:
        placed = False
        for s, e, lin in idx.groups:
            if s == lead + k and e - lead <= rank and e > s:
                span = range(k, e - lead)
                if all(eq(per_dim.shape[j], idx.shape[lead + j]) for j in span):
                    groups.append((k, e - lead, lin))
                    k = e - lead
                    placed = True
                break
        if not placed:
            groups.append(src_dims[k])
            k += 1
    return Index(per_dim.shape, tuple(groups))


def map_slice(idx: Index, src_shape: Sequence, dim: int, start, step) -> Index:
    src = tuple(size(d) for d in src_shape)
    dim %= len(src)
    cur = idx.split_at(dim).split_at(dim + 1)
    groups = []
    for s, e, lin in cur.groups:
        if s == dim:
            lin = lin.scale(step).shift(start)
        groups.append((s, e, lin))
    return Index(src, tuple(groups))


def map_select(idx: Index, src_shape: Sequence, dim: int, index) -> Index:
    src = tuple(size(d) for d in src_shape)
    dim %= len(src)
    groups = []
    for s, e, lin in idx.groups:
        if s >= dim:
            s, e = s + 1, e + 1
        elif e > dim:  # a group spanning the selected position: split it first
            return map_select(idx.split_at(dim), src_shape, dim, index)
        groups.append((s, e, lin))
    groups.append((dim, dim + 1, const(index)))
    groups.sort(key=lambda g: g[0])
    return Index(src, tuple(groups))


def with_dim(idx: Index, dim: int, lin: Lin, shape: Optional[Sequence] = None) -> Index:
    """``idx`` with dim ``dim``'s index replaced (and optionally another shape)."""
    cur = idx.split_at(dim).split_at(dim + 1)
    shp = idx.shape if shape is None else tuple(size(d) for d in shape)
    return Index(shp, tuple((s, e, lin if s == dim else l2) for s, e, l2 in cur.groups))
