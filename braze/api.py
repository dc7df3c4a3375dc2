"""braze's public entry points (re-exported by ``braze/__init__.py``)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

from braze.config import Options


def jit(fn: Optional[Callable] = None, **options: Any):
    """Compile a function or ``nn.Module`` with braze.

    Usable as ``@braze.jit``, ``@braze.jit(backend="tvm")`` or
    ``braze.jit(model, **options)``. Capture goes through Dynamo, so Python
    control flow, graph breaks and recompilation on new shapes, dtypes or
    devices are handled as with ``torch.compile``; each captured graph is
    compiled by braze. Options are the fields of :class:`braze.Options`.
    """
    opts = Options.from_dict(options)
    if fn is None:
        return functools.partial(jit, **options)
    from braze.compiler.backend import make_backend

    compiled = torch.compile(fn, backend=make_backend(opts))
    if not isinstance(fn, torch.nn.Module):
        functools.update_wrapper(compiled, fn)
    return compiled


def explain(model: Callable, *example_inputs: Any, **options: Any):
    """Compile ``model`` on ``example_inputs`` and report what braze did.

    Returns a :class:`braze.compiler.report.Report`: ``str(report)`` is a
    readable summary (passes, the IR after each, the kernels with their
    backend and where their config came from), ``report.to_dict()`` a
    JSON-ready dict.
    """
    from braze.compiler.backend import make_backend
    from braze.compiler.report import Report

    kwargs = options.pop("kwargs", None) or {}
    opts = Options.from_dict(options)
    reports: list = []
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=make_backend(opts, reports))
    with torch.no_grad():
        compiled(*example_inputs, **kwargs)
    breaks = max(len(reports) - 1, 0)
    torch._dynamo.reset()
    return Report(reports, graph_breaks=breaks)
