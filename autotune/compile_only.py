"""Building a candidate's GPU kernels without a GPU: Triton's compile-only mode.

A cold compile on a GPU spends most of its time in Triton turning kernels
into cubins, and Triton's Python front end holds the GIL, so threads cannot
overlap it (``compiler/precompile.py``). Worker processes can: each rebuilds
a candidate from its recipe, calls it on CPU operands of the real shapes and
strides, and every ``kernel[grid](...)`` inside compiles for the parent's
target (``JITFunction.run(..., warmup=True)`` under a driver that reports
that target) instead of launching. The result lands in Triton's on-disk cache
under the same key the parent's own compile computes (same source, same
specialisation of the same shapes and alignments, same options and target),
so the parent's compile of that kernel is a cache load. A job whose key does
not match costs the worker's time only: the parent compiles as before.

Workers never touch CUDA (they start with no visible GPU): no context, no
device memory.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch

from braze.autotune.measure import Measurement, _err, random_operands


class TargetDriver:
    """Just enough of a Triton driver to compile (never launch) for ``target``."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("cpu")


_ACTIVE = [False]


def active() -> bool:
    """Whether launches compile only (launchers that insist on GPU tensors let CPU
    operands through then: nothing runs on them)."""
    return _ACTIVE[0]


@contextlib.contextmanager
def compiling_only(target) -> Iterator[None]:
    """Within the block every ``@triton.jit`` launch compiles for ``target`` (a
    ``GPUTarget``) and returns without running."""
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    run = JITFunction.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        return run(self, *args, grid=grid, warmup=True, **kwargs)

    # NOTE: restore the previous active driver as it was (possibly unset):
    # reset_active() would create the default driver, which fails without a GPU.
    prev = getattr(driver, "_active", None)
    driver.set_active(TargetDriver(target))
    JITFunction.run = compile_instead
    _ACTIVE[0] = True
    try:
        yield
    finally:
        _ACTIVE[0] = False
        JITFunction.run = run
        driver._active = prev


def gpu_target(target: Sequence):
    """A Triton ``GPUTarget`` from ``[backend, arch, warp_size]``."""
    from triton.backends.compiler import GPUTarget

    backend, arch, warp = target
    return GPUTarget(backend, arch, int(warp))


def build(kernel, node, config: Mapping[str, Any], env: Mapping[str, Any], target: Sequence) -> Measurement:
    """Compile every launch of ``kernel.compile(config)`` on ``node``'s operands at
    ``env`` for ``target``; ``ok``, or ``compile_error`` with the reason."""
    try:
        xs = random_operands(node, {k: int(v) for k, v in env.items()}, "cpu", 0, values=False)
        with compiling_only(gpu_target(target)), torch.no_grad():
            kernel.compile(dict(config))(*xs)
    except Exception as e:  # noqa: BLE001 - the parent compiles it itself and reports
        return Measurement("compile_error", error=_err(e))
    return Measurement("ok")


__all__ = ["TargetDriver", "active", "compiling_only", "gpu_target", "build"]
