"""Constants made by passes from the model's weights, made once per set of weights.

Horizontal fusion (``fuse_horizontal``, ``fold_dequantize``) concatenates
parallel projections' weights into new constants. Every compiled graph of a
model (its prefill and decode graphs, each recompile) runs those passes
again; without sharing, each held its own copy of every concatenated weight.
"""
from __future__ import annotations

import threading
import weakref
from typing import Sequence

import torch

# ids of the parts -> (weakrefs to the parts, weakref to their concatenation)
_CONCATS: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def concat_once(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, 0)``, the same tensor for the same parts as long as some graph
    still holds it.

    A hit must be the same tensor objects, of the same dtype, shape and device, whose
    values still equal their rows of the concatenation: weights change in place in ways
    no version counter sees (``p.data.copy_(w)``, a LoRA merge through ``.data``,
    ``module.double()`` swapping ``.data``), and comparing the values (one read of the
    weights, at compile time) is what makes reuse safe whatever happened to them.
    """
    key = tuple(id(t) for t in parts)
    with _LOCK:
        hit = _CONCATS.get(key)
    if hit is not None:
        refs, out = hit
        cat = out()
        if cat is not None and all(r() is t for r, t in zip(refs, parts)) and _rows_equal(cat, parts):
            return cat
    # NOTE: never an inference tensor, whatever mode the first graph compiled in: a graph
    # compiled later with grad enabled may save it for backward.
    with torch.inference_mode(False), torch.no_grad():
        cat = torch.cat(list(parts), 0).contiguous()

    def forget(_ref, key=key):
        with _LOCK:
            entry = _CONCATS.get(key)
            if entry is not None and entry[1] is _ref:
                del _CONCATS[key]

    with _LOCK:
        _CONCATS[key] = ([weakref.ref(t) for t in parts], weakref.ref(cat, forget))
    return cat


def _rows_equal(cat: torch.Tensor, parts: Sequence[torch.Tensor]) -> bool:
    off = 0
    with torch.no_grad():
        for t in parts:
            n = t.shape[0] if t.dim() else 1
            if (t.dtype != cat.dtype or t.device != cat.device or tuple(t.shape[1:]) != tuple(cat.shape[1:])
                    or off + n > cat.shape[0] or not torch.equal(cat[off:off + n], t)):
                return False
            off += n
    return off == cat.shape[0]
