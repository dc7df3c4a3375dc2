"""Weight-only quantized linear layers (``quant_linear``, ``ir/quant.py``) in Triton.

Importing this package registers, where Triton is installed, the code
generator ``"triton_quant"`` in the kernel contract's registry.

- ``kernels.py``: the Triton kernels (GEMV for decode, GEMM for prefill)
- ``candidates.py``: the launcher, the search space, the Kernel and the generator
"""
from __future__ import annotations

import logging

log = logging.getLogger("braze.codegen.quant")

try:
    import triton  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the machine
    log.info("triton_quant unavailable: %s", e)
else:
    from braze.autotune.contract import register_generator
    from braze.compiler.codegen.triton_quant.candidates import generate

    register_generator("triton_quant", generate)
