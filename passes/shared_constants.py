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

# id of each part -> (weakrefs to the parts, their signatures, their storages, weakref to the cat)
_CONCATS: dict[tuple, tuple] = {}


def _signature(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), t.dtype, tuple(t.shape), t.stride(), str(t.device), t._version)


def concat_once(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, 0)``, the same tensor for the same parts (the same tensor objects,
    holding the same data, unmodified since) as long as some graph still holds it.

    NOTE: ``module.double()`` or ``.to()`` replace a parameter's ``.data`` in place: same
    object, same version counter, new storage. The signature has the data pointer; the
    entry holds the parts' storages, so no other tensor can take their addresses while
    the entry can still be hit.
    """
    key = tuple(id(t) for t in parts)
    hit = _CONCATS.get(key)
    if hit is not None:
        refs, sigs, _, out = hit
        cat = out()
        if (cat is not None and all(r() is t for r, t in zip(refs, parts))
                and sigs == [_signature(t) for t in parts]):
            return cat
    for k in [k for k, entry in _CONCATS.items() if entry[3]() is None]:
        del _CONCATS[k]
    # NOTE: never an inference tensor, whatever mode the first graph compiled in: a graph
    # compiled later with grad enabled may save it for backward.
    with torch.inference_mode(False), torch.no_grad():
        cat = torch.cat(list(parts), 0).contiguous()
    _CONCATS[key] = ([weakref.ref(t) for t in parts], [_signature(t) for t in parts],
                     [t.detach() for t in parts], weakref.ref(cat))
    return cat
