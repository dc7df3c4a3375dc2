"""braze's public entry points (re-exported by ``braze/__init__.py``)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import torch

from braze.autotune.options import Options


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
    from braze.compiler.backend import make_backend  # lazy: `import braze` stays light until the API is used

    compiled = torch.compile(fn, backend=make_backend(opts))
    if not isinstance(fn, torch.nn.Module):
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module):  # model.forward = braze.jit(model.forward)
            compiled = _explaining_cache_errors(compiled, owner)
            gen = getattr(owner, "generation_config", None)
            if gen is not None and hasattr(gen, "disable_compile"):
                # NOTE: Hugging Face's generate torch.compiles the model's __call__ on CUDA
                # with a static cache, which would trace through braze's forward and
                # replace it; the forward is braze's now.
                gen.disable_compile = True
        functools.update_wrapper(compiled, fn)
    return compiled


def _explaining_cache_errors(compiled: Callable, model: torch.nn.Module) -> Callable:
    """A call that fails with a KV cache whose tensors do not match the model
    (another dtype or device) raises an error naming the cache layer instead
    of a tracing error; the happy path costs nothing."""
    from braze.compiler.generate import check_caches  # lazy: `import braze` stays light until the API is used

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as e:
            check_caches(model, list(args) + list(kwargs.values()), cause=e)
            raise

    return call


def explain(model: Callable, *args: Any, options: Any = None, **kwargs: Any):
    """Compile ``model`` on the call ``model(*args, **kwargs)`` and report what braze did.

    ``args``/``kwargs`` are the model's own inputs (``input_ids=ids,
    attention_mask=mask``); braze options go in ``options`` (a dict or
    :class:`braze.Options`). Returns a :class:`braze.compiler.report.Report`:
    ``str(report)`` is a readable summary (passes, the IR after each, the
    kernels with their backend and where their config came from, the ops that
    run through their torch reference), ``report.to_dict()`` a JSON-ready dict.
    """
    from braze.compiler.backend import make_backend  # lazy: `import braze` stays light until the API is used
    from braze.compiler.report import Report  # lazy: `import braze` stays light until the API is used

    opts = _options(options)
    reports: list = []
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=make_backend(opts, reports, every_pass_ir=True))
    with torch.no_grad():
        compiled(*args, **kwargs)
    breaks = max(len(reports) - 1, 0)
    torch._dynamo.reset()
    return Report(reports, graph_breaks=breaks)


def generate(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 32, *,
             attention_mask: Optional[torch.Tensor] = None, do_sample: bool = False, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, eos_token_id: Union[int, Sequence[int], None] = None,
             pad_token_id: Optional[int] = None, seed: Optional[int] = None, max_cache_len: Optional[int] = None,
             options: Any = None) -> torch.Tensor:
    """Generate ``max_new_tokens`` tokens after ``input_ids`` with a Hugging Face causal LM compiled by braze.

    Returns ``[batch, prompt + new]`` token ids, like ``model.generate``: greedy
    by default, or sampled (``do_sample=True``) with ``temperature``, ``top_k``
    (0: off) and ``top_p`` (1.0: off), seeded by ``seed``. Rows that produced
    an ``eos_token_id`` (one id or up to four; default: the model's generation
    config) continue with ``pad_token_id`` (default: the generation config's,
    else eos, as ``model.generate`` does); it stops when every row has. ``attention_mask`` marks left padding of the
    prompts. braze keeps one static KV cache per batch bucket and cache length
    (``max_cache_len``, default: prompt + new tokens rounded up to 256) and
    compiles the model's forward once (``options``: as for :func:`jit`); every
    decode step reuses the same compiled step.
    """
    # lazy: `import braze` stays light until the API is used
    from braze.compiler.generate import generate as _generate

    return _generate(model, input_ids, max_new_tokens, attention_mask=attention_mask, do_sample=do_sample,
                     temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                     pad_token_id=pad_token_id, seed=seed, max_cache_len=max_cache_len,
                     options=_options(options).to_dict())


def explain_generate(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 8, **kwargs: Any):
    """Run :func:`generate` and report what braze compiled for it: the prefill and
    decode graphs, how many graphs were compiled during the decode steps after
    the first (0 when every step reuses one program), and the ops that still
    run through their torch reference. ``kwargs`` are :func:`generate`'s."""
    # lazy: `import braze` stays light until the API is used
    from braze.compiler.generate import DecodeStats, generate as _generate
    from braze.compiler.report import Report  # lazy: `import braze` stays light until the API is used

    stats = DecodeStats()
    options = _options(kwargs.pop("options", None)).to_dict()
    _generate(model, input_ids, max_new_tokens, stats=stats, options=options, **kwargs)
    report = Report(stats.graphs, graph_breaks=0)
    report.summary = [
        f"generate: batch {stats.batch} (bucket {stats.batch_bucket}), prompt {stats.prompt_tokens}, "
        f"{stats.new_tokens} new tokens, cache {stats.max_cache_len}",
        f"prefill compiled {stats.compiles_prefill} graph(s); decode compiled "
        f"{stats.compiles_decode} graph(s) after its first step"]
    return report


def quantize(model: torch.nn.Module, fmt: str = "int8", *, group_size: int = 128, modules: Any = None,
             skip: Any = (), inplace: bool = True, lm_head: bool = False) -> torch.nn.Module:
    """Weight-only post-training quantization of a model's linear layers.

    ``fmt`` is ``"int8"`` (symmetric, per output channel) or ``"int4"``
    (asymmetric, per group of ``group_size`` input channels: 32, 64 or 128;
    two values a byte). Every ``nn.Linear`` is quantized except the LM head,
    layers tied to the embeddings and the names in ``skip``; ``modules``
    (glob patterns of module names) restricts it further. ``lm_head=True``
    quantizes the LM head too (at batch-1 decode it is the largest single
    weight read; a bias-free head tied to a plain ``nn.Embedding`` becomes
    one integer table for both: the lookup dequantizes the rows it reads, so
    the float table is gone and the embeddings are quantized with the head;
    move or cast the whole model then, not a submodule without the head). The model keeps
    running in eager PyTorch (the reference) and under braze, where each such
    layer's GEMM dequantizes in its operand load. Returns the model (a copy
    with ``inplace=False``).
    """
    # lazy: `import braze` stays light until the API is used
    from braze.compiler.quantize import quantize as _quantize

    return _quantize(model, fmt, group_size=group_size, modules=modules, skip=skip, inplace=inplace,
                     lm_head=lm_head)


def _options(options: Any) -> Options:
    if options is None:
        return Options()
    if isinstance(options, Options):
        return options
    if isinstance(options, dict):
        return Options.from_dict(options)
    raise TypeError(f"options must be a dict or braze.Options, got {type(options).__name__}")


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
    from braze.compiler.artifact import compile_model  # lazy: `import braze` stays light until the API is used

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
    from braze.compiler.artifact import load_artifact  # lazy: `import braze` stays light until the API is used

    return load_artifact(path, Options.from_dict(options), retune=retune)
