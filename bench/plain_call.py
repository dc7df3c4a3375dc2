"""The user's call, timed as the user runs it (issue 18): shared by the GPU benches.

A contender is a callable taking the case's inputs exactly as a user passes them
(``fast(*args, **kwargs)``: a ``braze.jit`` or ``torch.compile`` of the user's
function or module with default options, or the eager function itself). Each is
timed by CUDA-synchronised wall clock around ``n`` plain calls, under
``torch.inference_mode()`` and again under ``torch.no_grad()``; the figure is the
median of ``rounds`` such loops after a warm-up in the same grad mode (a first call
in a new grad mode may compile again: the warm-up takes it, and the compile time is
not what a steady-state row reports).

    from plain_call import time_contenders
    rows = time_contenders({"eager": f, "torch.compile": torch.compile(f), "braze": braze.jit(f)}, args)
    # {"inference_mode": {"eager": ms, ...}, "no_grad": {...}}
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import torch

GRAD_MODES = ("inference_mode", "no_grad")


def raise_dynamo_limits(limit: int = 256) -> None:
    """Several contenders compiled from one model share its code objects, and each
    grad mode may add a guard entry: past Dynamo's default limit (8) a frame falls
    back to running eagerly (or in pieces), and the row would time that instead."""
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, limit)


def grad_mode(name: str):
    if name == "inference_mode":
        return torch.inference_mode()
    if name == "no_grad":
        return torch.no_grad()
    raise ValueError(f"unknown grad mode {name!r}; expected one of {GRAD_MODES}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def wall_ms(fn: Callable[[], object], mode: str = "inference_mode", *, device: str = "cuda",
            min_loop_s: float = 0.05, rounds: int = 7, warmup: int = 3) -> float:
    """Median over ``rounds`` loops of the synchronised wall clock per call of ``fn()``
    under grad mode ``mode``; each loop runs enough calls to last about ``min_loop_s``."""
    with grad_mode(mode):
        for _ in range(warmup):
            fn()
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        one = max(time.perf_counter() - t, 1e-6)
        n = max(1, min(1000, int(min_loop_s / one)))
        per_call = []
        for _ in range(rounds):
            _sync(device)
            t = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            per_call.append((time.perf_counter() - t) * 1e3 / n)
    return statistics.median(per_call)


def time_contenders(contenders: dict, args: tuple = (), kwargs: Optional[dict] = None, *,
                    modes=GRAD_MODES, device: str = "cuda", log=print, **timing) -> dict:
    """``{mode: {name: ms or None}}``: every contender's plain call under each grad mode.
    A contender that raises is reported as ``None`` with its error logged (one failing
    peer must not lose the others' figures)."""
    kwargs = kwargs or {}
    out: dict = {m: {} for m in modes}
    for mode in modes:
        for name, fn in contenders.items():
            try:
                out[mode][name] = wall_ms(lambda: fn(*args, **kwargs), mode, device=device, **timing)
            except Exception as e:  # noqa: BLE001 - reported, the other contenders still run
                log(f"    {name} under {mode} failed: {type(e).__name__}: {str(e)[:300]}")
                out[mode][name] = None
    return out


def ratios(times: dict, subject: str = "braze") -> dict:
    """``{mode: {peer: peer_ms / subject_ms}}`` (> 1: the subject is faster)."""
    out = {}
    for mode, row in times.items():
        s = row.get(subject)
        out[mode] = {k: (v / s if v and s else None) for k, v in row.items() if k != subject}
    return out


def format_row(label: str, times: dict, subject: str = "braze") -> str:
    """One line a grad mode: each contender's ms and its ratio against the subject."""
    lines = []
    for mode, row in times.items():
        s = row.get(subject)
        parts = []
        for k, v in row.items():
            if v is None:
                parts.append(f"{k} FAILED")
            elif k == subject or not s:
                parts.append(f"{k} {v:.4f} ms")
            else:
                parts.append(f"{k} {v:.4f} ms ({v / s:.2f}x)")
        lines.append(f"{label} [{mode}]: " + ", ".join(parts))
    return "\n".join(lines)
