"""Modules of handwritten ``@triton.jit`` kernels (attention, sampling, quantized
linear, KV-cache writes), reloaded when ``TRITON_INTERPRET`` changes.

Triton decides when a ``@triton.jit`` function is defined whether it is
compiled or interpreted; tests switch the interpreter on per test, so a
module imported before must be re-executed to follow. ``KernelModule.get()``
returns the module as the current setting wants it.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional


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
