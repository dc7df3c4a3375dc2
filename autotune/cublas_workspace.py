"""cuBLAS's per-stream workspaces, and CUDA graph captures that do not lean on them.

PyTorch gives every (cuBLAS handle, stream) pair its first GEMM runs on a
workspace of its own (32 MiB on Hopper) from the caching allocator, and keeps
it for the life of the process. Compiling for a GPU touches many pairs: each
timing of a library candidate warmed up on a new side stream, each precompile
thread's handle, each warm-up run of a captured plan. On an H200 (seventh
session) that was 0.64 GB of 33.6 MB blocks still allocated after a batch-8
``braze.generate`` had compiled, its peak memory over eager's for it.

``release()`` frees them (the next GEMM of a stream gets a new one). A CUDA
graph replays the workspace addresses it was captured with, so a capture must
not use a workspace ``release`` may free: ``capture()`` releases before a
capture (the graph allocates its own, in its private pool) and after it (the
graph's pool keeps that memory as long as the graph lives). Every capture in
braze goes through it, as Inductor's CUDA graph trees do for theirs.

NOTE: the release is process-wide. A CUDA graph captured outside braze without
such a release (``torch.cuda.graph`` on its own, ``make_graphed_callables``)
may have recorded a workspace that a later braze compile or capture frees; its
replays would then write into reused memory. ``BRAZE_CUBLAS_RELEASE=0`` keeps
every workspace for such processes (compiling then leaves one a stream: the
shared side stream bounds that to a few per device).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

_SIDE: dict = {}   # device index -> the side stream warm-ups and timings run on


def release() -> None:
    """Free every cached cuBLAS workspace (never while the current stream is capturing, nor
    with ``BRAZE_CUBLAS_RELEASE=0``)."""
    if os.environ.get("BRAZE_CUBLAS_RELEASE", "1") == "0":
        return
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    if torch.cuda.is_current_stream_capturing():
        return
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


@contextlib.contextmanager
def capture() -> Iterator[None]:
    """Around a CUDA graph capture: the graph's GEMMs get a workspace in the graph's own pool."""
    release()
    try:
        yield
    finally:
        release()


def side_stream(device=None) -> "torch.cuda.Stream":
    """One side stream per device for warm-ups before a capture (a new stream each time
    would add a workspace each time)."""
    index = torch.cuda.current_device() if device is None else torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    s = _SIDE.get(index)
    if s is None:
        s = _SIDE[index] = torch.cuda.Stream(device=index)
    return s


__all__ = ["release", "capture", "side_stream"]
