"""Code generators. Each backend package registers, on import, a checker
``supports(kind, subgraph, device_kind) -> bool`` that the fusion pass asks
before forming a group ("is this supported here?"), and a generator in
the kernel contract's registry (``autotune/contract.py``) that turns an accepted group into kernels.
"""
from __future__ import annotations

import logging
import traceback
from typing import Callable
from braze.autotune.contract import backend_allows

log = logging.getLogger("braze.codegen")

# backend name -> checker(kind, subgraph, device_kind) -> bool
CHECKERS: dict[str, Callable] = {}


def register_checker(backend: str, fn: Callable) -> None:
    CHECKERS[backend] = fn


def _load() -> None:
    for mod in ("braze.compiler.codegen.triton", "braze.compiler.codegen.triton_attention",
                "braze.compiler.codegen.triton_quant", "braze.compiler.codegen.triton_cache",
                "braze.compiler.codegen.tvm", "braze.compiler.codegen.library_gemm",
                "braze.compiler.codegen.onednn_linear", "braze.compiler.codegen.library_norm",
                "braze.compiler.codegen.library_quant"):
        try:
            __import__(mod)
        except ImportError as e:  # pragma: no cover - depends on the machine
            log.info("code generator %s unavailable: %s", mod, e)


def supported(kind: str, subgraph, device_kind: str, backend: str = "auto") -> bool:
    """Whether some allowed backend can generate a kernel for this group."""
    if backend == "torch":
        return False
    _load()

    for name, check in CHECKERS.items():
        if not backend_allows(backend, name):
            continue
        try:
            if check(kind, subgraph, device_kind):
                return True
        except Exception as e:  # noqa: BLE001 - a checker must decline, never crash compilation
            tb = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f" ({tb.filename.rsplit('/', 2)[-1]}:{tb.lineno}, in {tb.name})" if tb else ""
            log.warning("checker of %s raised on %s group %s: %s: %s%s", name, kind, getattr(subgraph, "name", "?"),
                        type(e).__name__, e, where)
            log.debug("the group the checker raised on:\n%s", subgraph, exc_info=True)
    return False
