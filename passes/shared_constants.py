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
that read its concatenation (not by a packing a kernel made of it at compile time).
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Sequence

import torch

# ids of the parts -> (weakrefs to the parts, weakref to their concatenation)
_CONCATS: dict[tuple, tuple] = {}
# NOTE: reentrant: an entry's weakref callback may run from a garbage collection that an
# allocation under the lock triggered.
_LOCK = threading.RLock()


def concat_once(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, 0)``, the same tensor for the same parts as long as some graph
    still holds it, or as long as the parts are its rows.

    A hit must be the same tensor objects, of the same dtype, shape and device, whose
    values still equal their rows of the concatenation: weights change in place in ways
    no version counter sees (``p.data.copy_(w)``, a LoRA merge through ``.data``,
    ``module.double()`` swapping ``.data``), and comparing the values (one read of the
    weights, at compile time) is what makes reuse safe whatever happened to them. Parts
    rebound onto their rows (``_alias_onto``) compare by address; when no graph holds
    the concatenation any more, it is their storage seen whole again, not a copy.

    ``$BRAZE_SHARE_WEIGHTS=0`` leaves the parts alone (the concatenation is a copy): for a
    program that saves ``state_dict()`` with ``safetensors.torch.save_file``, which refuses
    tensors sharing memory (``save_model`` and Hugging Face's ``save_pretrained`` take them).
    """
    key = tuple(id(t) for t in parts)
    with _LOCK:
        hit = _CONCATS.get(key)
        if hit is not None:
            refs, out = hit
            cat = out()
            if cat is not None and all(r() is t for r, t in zip(refs, parts)) and _rows_equal(cat, parts):
                return cat
        cat = _storage_of(parts)    # parts rebound earlier, whose graphs are gone
        if cat is not None:
            _remember(key, parts, cat)
            return cat
        # NOTE: never an inference tensor, whatever mode the first graph compiled in: a graph
        # compiled later with grad enabled may save it for backward.
        with torch.inference_mode(False), torch.no_grad():
            cat = torch.cat(list(parts), 0).contiguous()
        if os.environ.get("BRAZE_SHARE_WEIGHTS", "1") != "0":
            _alias_onto(cat, parts)
        _remember(key, parts, cat)
    return cat


def _remember(key: tuple, parts: Sequence[torch.Tensor], cat: torch.Tensor) -> None:
    def forget(_ref, key=key):
        with _LOCK:
            entry = _CONCATS.get(key)
            if entry is not None and entry[1] is _ref:
                del _CONCATS[key]

    _CONCATS[key] = ([weakref.ref(t) for t in parts], weakref.ref(cat, forget))


def _storage_of(parts: Sequence[torch.Tensor]):
    """The parts' one storage seen as their concatenation, when they are consecutive rows
    covering it exactly (as ``_alias_onto`` left them); else None."""
    first = parts[0]
    if first.dim() == 0:
        return None
    rest = tuple(first.shape[1:])
    off = 0
    try:
        storage = first.untyped_storage()
        for t in parts:
            if (t.dtype != first.dtype or t.device != first.device or t.dim() != first.dim()
                    or tuple(t.shape[1:]) != rest or not t.is_contiguous() or t.storage_offset() != off
                    or t.untyped_storage().data_ptr() != storage.data_ptr()):
                return None
            off += t.numel()
    except (RuntimeError, NotImplementedError):   # a tensor subclass without a storage
        return None
    if off * first.element_size() != storage.nbytes() or off == 0:
        return None
    rows = off // max(1, first[0].numel())
    with torch.inference_mode(False), torch.no_grad():
        return torch.empty(0, dtype=first.dtype, device=first.device).set_(storage, 0, (rows,) + rest)


def _alias_onto(cat: torch.Tensor, parts: Sequence[torch.Tensor]) -> bool:
    """Rebind every part onto its rows of ``cat`` when each is a distinct tensor of
    ``cat``'s dtype and device owning its whole storage alone (a parameter or buffer as a
    module made it, no other tensor viewing it: tied weights stay tied); all or none."""
    if len({id(t) for t in parts}) != len(parts) or not all(
            t.dtype == cat.dtype and t.device == cat.device and _owns_storage(t) for t in parts):
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
    try:
        return (t.dim() >= 1 and not t.is_inference() and t.is_contiguous() and t.storage_offset() == 0
                and t.untyped_storage().nbytes() == t.numel() * t.element_size()
                and _storage_users(t) == _storage_users(torch.empty(1)))
    except (RuntimeError, NotImplementedError, AttributeError):   # subclasses, no use count here
        return False


def _storage_users(t: torch.Tensor) -> int:
    """References to ``t``'s storage (tensors viewing it, plus the probe's own)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _rows_equal(cat: torch.Tensor, parts: Sequence[torch.Tensor]) -> bool:
    off = 0
    with torch.no_grad():
        for t in parts:
            n = t.shape[0] if t.dim() else 1
            if (t.dtype != cat.dtype or t.device != cat.device or tuple(t.shape[1:]) != tuple(cat.shape[1:])
                    or off + n > cat.shape[0]):
                return False
            # a part rebound onto these rows (``_alias_onto``) equals them by construction
            aliased = n and t.dim() and t.is_contiguous() and t.data_ptr() == cat[off].data_ptr()
            if not aliased and not torch.equal(cat[off:off + n], t):
                return False
            off += n
    return off == cat.shape[0]
