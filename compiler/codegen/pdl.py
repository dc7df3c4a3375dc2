"""Programmatic dependent launch (PDL) for braze's Triton kernels on sm_90+.

A decode step is a chain of about a hundred short kernels. Launched normally,
each kernel's blocks are scheduled only once the kernel before it has
finished, so every boundary costs the launch ramp of the next kernel on top
of the drain of the last. With PDL (CUDA's programmatic stream
serialization), a kernel's blocks may be scheduled while the kernel before
it still runs: every braze kernel launched this way first executes
``griddepcontrol.wait`` (``tl.extra.cuda.gdc_wait``), which returns once the
previous kernel has completed and its writes are visible, and then
``griddepcontrol.launch_dependents``, which lets the next kernel's blocks be
scheduled. Ordering is therefore the same as without PDL (each kernel waits
for the whole of its predecessor before it reads or writes memory); only the
scheduling of the next kernel's blocks overlaps. A kernel that is not
launched with PDL (torch's, cuBLAS's) serializes as always, and one that
follows it waits for it to complete. Stream capture records PDL launches as
programmatic edges, so whole-step CUDA graphs keep the overlap.

``enabled()`` says whether launches made now use it: ``BRAZE_PDL=1`` set, a
CUDA target of compute capability 9.0 or newer (the active Triton driver's,
so compiling ahead for sm_90 on a CPU machine agrees with the GPU), and not
under the interpreter.

Off by default: measured on an H100 (2026-12-07, Llama-1B shape, batch-1 decode
step as one CUDA graph), the step took 1.312 ms with it against 1.289 ms
without. Waiting at the top of every kernel leaves nothing to overlap but the
launch itself, which a CUDA graph already makes cheap. Tried next (2026-12-07,
eighth session, H100, same machine and tuning database, A/B/A): each GEMM
program asking L2 for every line of its weight rows (``prefetch.global.L2``)
before the wait, so that a GEMV scheduled during a latency-bound attention or
cache write would have its weights streaming in. Slower again: batch 1
1.274 ms with it against 1.213 / 1.208 ms without, batch 8 1.529 against
1.459 (bench/results/decode-h100-2026-12-07-s8-*). The prefetch was removed;
what a boundary costs is left to fewer launches, not to overlapping them.
"""
from __future__ import annotations

import os


def enabled() -> bool:
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or os.environ.get("BRAZE_PDL", "0").strip() not in ("1", "on"):
        return False
    try:
        from triton.runtime import driver

        target = driver.active.get_current_target()
    except Exception:  # noqa: BLE001 - no GPU driver here: nothing launches on a GPU
        return False
    return target.backend == "cuda" and isinstance(target.arch, int) and target.arch >= 90


# The lines every PDL-aware kernel starts with (``PDL`` is its constexpr parameter).
KERNEL_PROLOGUE = ("    if PDL:\n"
                   "        tl.extra.cuda.gdc_wait()\n"
                   "        tl.extra.cuda.gdc_launch_dependents()\n")

__all__ = ["enabled", "KERNEL_PROLOGUE"]
