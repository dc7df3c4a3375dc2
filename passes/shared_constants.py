"""Constants made by passes from the model's weights, made once per set of weights.

Horizontal fusion (``fuse_horizontal``, ``fold_dequantize``) concatenates
parallel projections' weights into new constants. Every compiled graph of a
model (its prefill and decode graphs, each recompile) runs those passes
again; without sharing, each held its own copy of every concatenated weight.
"""
from __future__ import annotations

import weakref
from typing import Sequence

import torch

_CONCATS: dict[tuple, tuple] = {}   # ids and versions of the parts -> (weakrefs to them, weakref to the cat)


def concat_once(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, 0)``, the same tensor for the same parts (the same tensor objects,
    unmodified since) as long as some graph still holds it."""
    key = tuple((id(t), t._version) for t in parts)
    hit = _CONCATS.get(key)
    if hit is not None:
        refs, out = hit
        cat = out()
        if cat is not None and all(r() is t for r, t in zip(refs, parts)):
            return cat
    for k in [k for k, (refs, out) in _CONCATS.items() if out() is None or any(r() is None for r in refs)]:
        del _CONCATS[k]
    # NOTE: never an inference tensor, whatever mode the first graph compiled in: a graph
    # compiled later with grad enabled may save it for backward.
    with torch.inference_mode(False), torch.no_grad():
        cat = torch.cat(list(parts), 0).contiguous()
    _CONCATS[key] = ([weakref.ref(t) for t in parts], weakref.ref(cat))
    return cat
