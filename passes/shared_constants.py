"""Constants made by passes from the model's weights, made once per set of weights.

Horizontal fusion (``fuse_horizontal``, ``fold_dequantize``) concatenates
parallel projections' weights into new constants. Every compiled graph of a
model (its prefill and decode graphs, each recompile) runs those passes
again; without sharing, each held its own copy of every concatenated weight.

The parts are then rebound onto their rows of the concatenation (``part.data =
cat[rows]``) when each owns its storage outright: the model's parameters and the
compiled graphs hold the weights once (before, the module's q/k/v and gate/up
weights stayed a second copy beside the concatenation, 1.3 GB of a Llama-1B's
2.5 GB), and a weight updated in place (``p.copy_(w)``) is seen by the graphs
that read its concatenation.
"""
from __future__ import annotations

import threading
import weakref
from typing import Sequence

import torch

# ids of the parts -> (weakrefs to the parts, a callable returning their concatenation or None:
# a weakref, or, once the parts view it, a strong reference the parts' death drops)
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
    aliased = _alias_onto(cat, parts)

    def forget(_ref, key=key):
        with _LOCK:
            entry = _CONCATS.get(key)
            if entry is not None and (entry[1] is _ref or any(r is _ref for r in entry[0])):
                del _CONCATS[key]

    with _LOCK:
        if aliased:     # the parts hold cat's storage anyway: the entry lives as long as they do
            _CONCATS[key] = ([weakref.ref(t, forget) for t in parts], lambda cat=cat: cat)
        else:
            _CONCATS[key] = ([weakref.ref(t) for t in parts], weakref.ref(cat, forget))
    return cat


def _alias_onto(cat: torch.Tensor, parts: Sequence[torch.Tensor]) -> bool:
    """Rebind every part onto its rows of ``cat`` when each is a distinct tensor owning its
    whole storage (a parameter or buffer as a module made it); all of them or none."""
    if len({id(t) for t in parts}) != len(parts) or not all(_owns_storage(t) for t in parts):
        return False
    old = [t.data for t in parts]
    off = 0
    try:
        with torch.no_grad():
            for t in parts:
                n = t.shape[0]
                t.data = cat[off:off + n]
                off += n
    except RuntimeError:    # e.g. an inference tensor's data cannot become a normal tensor's
        with torch.no_grad():
            for t, d in zip(parts, old):
                t.data = d
        return False
    return True


def _owns_storage(t: torch.Tensor) -> bool:
    return (t.dim() >= 1 and not t.is_inference() and t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


def _rows_equal(cat: torch.Tensor, parts: Sequence[torch.Tensor]) -> bool:
    off = 0
    with torch.no_grad():
        for t in parts:
            n = t.shape[0] if t.dim() else 1
            if (t.dim() and off + n <= cat.shape[0] and t.device == cat.device and t.dtype == cat.dtype
                    and tuple(t.shape[1:]) == tuple(cat.shape[1:]) and t.is_contiguous()
                    and t.data_ptr() == cat[off].data_ptr()):
                off += n        # the part views these rows (aliased): equal by construction
                continue
            if (t.dtype != cat.dtype or t.device != cat.device or tuple(t.shape[1:]) != tuple(cat.shape[1:])
                    or off + n > cat.shape[0] or not torch.equal(cat[off:off + n], t)):
                return False
            off += n
    return off == cat.shape[0]
