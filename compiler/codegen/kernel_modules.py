"""Modules of handwritten ``@triton.jit`` kernels (attention, sampling, quantized
linear, KV-cache writes), reloaded when ``TRITON_INTERPRET`` changes, and the
device rule their generators share.

Triton decides when a ``@triton.jit`` function is defined whether it is
compiled or interpreted; tests switch the interpreter on per test, so a
module imported before must be re-executed to follow. ``KernelModule.get()``
returns the module as the current setting wants it.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Callable, Optional

from braze.ir.decline import Decline


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class KernelModule:
    """``module``, whose ``@triton.jit`` function ``probe`` tells how it was built."""

    def __init__(self, module: ModuleType, probe: str):
        self.module, self.probe = module, probe

    def get(self, interp: Optional[bool] = None) -> ModuleType:
        """The module built for the interpreter or not (``interp``; default: as set now)."""
        interpreted = type(getattr(self.module, self.probe)).__name__ == "InterpretedFunction"
        if interpreted != (interpreting() if interp is None else interp):
            self.module = importlib.reload(self.module)
        return self.module


def off_gpu(device, rule: str, by: str, instead: str) -> Optional[Decline]:
    """The decline of a handwritten Triton kernel on a device it cannot run on (the CPU
    outside the interpreter); ``instead`` says what runs. None where it can run."""
    if device.kind == "cuda" or interpreting():
        return None
    return Decline.because(f"the Triton kernel needs CUDA (or TRITON_INTERPRET=1 in tests); {instead}", rule, by)


def handwritten_candidates(node, device, op: str, rule: str, by: str, instead: str,
                           why_not: Callable[[Any], Optional[str]], make: Callable[[Any], Any]):
    """The generator body of a handwritten kernel for ``op`` nodes: [] for other ops, the
    :func:`off_gpu` decline off the GPU, a decline naming ``why_not(node)``, else
    ``[make(node)]``."""
    if node.op != op:
        return []
    off = off_gpu(device, rule, by, instead)
    if off is not None:
        return off
    why = why_not(node)
    if why:
        return Decline.because(why, rule, by)
    return [make(node)]
