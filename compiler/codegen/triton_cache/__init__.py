"""KV-cache writes in Triton: a layer's K and V rows in one launch (``index_copy_many_``).

Importing this package registers, where Triton is installed, the code
generator ``"triton_cache"`` in the kernel contract's registry.

- ``kernels.py``: the Triton kernel
- ``candidates.py``: the Kernel, its (small) search space and the generator
"""
from __future__ import annotations

import logging

log = logging.getLogger("braze.codegen.cache")

try:
    import triton  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the machine
    log.info("triton_cache unavailable: %s", e)
else:
    from braze.autotune.contract import GENERATORS, register_generator
    from braze.compiler.codegen.triton_cache.candidates import generate

    if not any(name == "triton_cache" for name, _ in GENERATORS):
        register_generator("triton_cache", generate)
