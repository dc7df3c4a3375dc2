"""Fused attention kernels: one Triton flash-attention template (prefill,
decode with split-KV, varlen) and the SDPA library candidate.

Importing this package registers, where Triton is installed, the code
generator ``"triton_attention"`` (in the kernel contract's registry) and its
checker (in ``braze.compiler.codegen``).

- ``template.py``: the Triton kernels (forward, split-KV combine)
- ``launch.py``: host side (checks, layouts, grids): ``attention_dense``, ``attention_varlen``
- ``space.py``: search spaces and per-device defaults
- ``spec.py``: reading an attention node, "is this supported here?"
- ``candidates.py``: the Kernel objects, the generator and the checker
- ``sdpa.py``: the SDPA library candidate
- the ``attention_varlen`` IR op itself lives in ``ir/attention_varlen.py``
"""
from __future__ import annotations

import logging

log = logging.getLogger("braze.codegen.attention")

try:
    import triton  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the machine
    log.info("triton_attention unavailable: %s", e)
else:
    from braze.compiler.codegen import register_checker
    from braze.compiler.codegen.triton_attention.candidates import (SdpaAttention, TritonAttention,  # noqa: F401
                                                                    TritonAttentionVarlen, check, generate)
    from braze.compiler.codegen.triton_attention.launch import attention_dense, attention_varlen  # noqa: F401
    from braze.autotune.contract import GENERATORS, register_generator

    if not any(name == "triton_attention" for name, _ in GENERATORS):
        register_generator("triton_attention", generate)
    register_checker("triton_attention", check)
