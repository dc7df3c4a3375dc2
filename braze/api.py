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


def compile(model: torch.nn.Module, args: tuple = (), kwargs: Optional[dict] = None, *, output: Optional[str] = None,
            check: bool = True, **options: Any):
    """Compile ``model`` ahead of time for the example ``args``/``kwargs``.

    The model is captured with ``torch.export`` (whole graph, the example's
    shapes, dtypes and device), optimised, and its kernels chosen: from the
    tuning database, by a search with ``tune=True``, else measured defaults.
    The result is checked against eager on the example. Returns a
    :class:`braze.compiler.artifact.Artifact`, called like the model;
    ``output`` (a directory, or a ``.zip`` file) also saves it for
    :func:`load`. Options are the fields of :class:`braze.Options`.
    """
    from braze.compiler.artifact import compile_model

    art = compile_model(model, tuple(args), kwargs or {}, Options.from_dict(options), check=check)
    if output is not None:
        art.save(output)
    return art


def load(path: str, *, retune: bool = False, **options: Any):
    """Load an artifact written by :func:`compile` or ``braze compile``.

    It runs with the kernels and configs chosen when it was compiled, with
    no tuning. An artifact that was tampered with, comes from another braze
    release or needs a GPU this machine lacks is refused with an
    ``ArtifactError`` saying why; one tuned on another device runs with its
    kernels re-selected here (``retune=True``: searched again).
    """
    from braze.compiler.artifact import load_artifact

    return load_artifact(path, Options.from_dict(options), retune=retune)
