"""Packed copies of constant weights, made once and kept while the weights live.

A library candidate that wants a weight in another layout (oneDNN's blocked
one, ATen's int4 tiles) packs it on first use. The runtime may hand a weight
over as a new tensor object each call (a view of the parameter), so entries
are keyed by the bytes (address, version, shape, strides, dtype of each
tensor the packing reads) and name the tensors' bases: a new tensor at a freed
weight's address never reads the old packing, a weight written in place (its
version moves) is packed again, and an entry dies with any of its bases.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Sequence

import torch

from braze.compiler.codegen.calls import version_of


class PackedWeights:
    """``get(tensors, tag, make)``: ``make()`` for these tensors, made once."""

    def __init__(self):
        self._entries: dict = {}
        # NOTE: reentrant: a weakref callback (_drop) may run from a garbage collection that an
        # allocation under the lock triggered
        self._lock = threading.RLock()

    def get(self, tensors: Sequence[torch.Tensor], tag: Any, make: Callable[[], Any]) -> Any:
        bases = tuple(t if t._base is None else t._base for t in tensors)
        key = (tag,) + tuple((t.data_ptr(), version_of(t), tuple(t.shape), tuple(t.stride()), t.dtype)
                             for t in tensors)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and all(r() is b for r, b in zip(hit[0], bases)):
                return hit[1]
        value = make()
        refs = tuple(weakref.ref(b, lambda r, k=key: self._drop(k, r)) for b in bases)
        with self._lock:
            self._entries[key] = (refs, value)
        return value

    def _drop(self, key, ref) -> None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and ref in hit[0]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
