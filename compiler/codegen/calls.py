"""Facts of the running program that launchers may read (the runtime sets them).

- ``ACTIVE[0]``: the program call in progress (0 outside any); a launcher may
  keep work derived from an operand for the rest of one call (the attention
  mask's block summary, shared by every layer) and keeps nothing outside one.
- ``version_of(t)``: a tensor's version counter, -1 for an inference tensor.
"""
from __future__ import annotations

import torch

CALLS = [0]    # program calls so far
ACTIVE = [0]   # the call in progress, 0 outside any


def version_of(t: torch.Tensor) -> int:
    """``t._version``, or -1 for an inference tensor (which keeps no version counter:
    one made under ``torch.inference_mode()`` can only change inside it)."""
    return -1 if t.is_inference() else t._version
