"""Build a program's generated GPU kernels in parallel before its first run.

Selection (``autotune/select.py``) compiles, checks and times candidates one
launcher at a time. On a GPU most of a cold compile is Triton turning each
kernel into a cubin: MLIR passes and ``ptxas``, which run without the GIL.
So before a plan is built, the kernel each launcher's selection compiles
first (``select.first_compiled``: the database hit, else the first
candidate's nearest or default config) is run once on random operands from
a pool of threads, one job per distinct (kernel, bucket, config): the
sixteen identical layers of a decoder are one job. Selection then finds
each kernel compiled (the generated module, and with it Triton's compiled
function, is shared per source). Nothing is timed here; a job that fails is
logged and selection meets the failure again, as before.

``BRAZE_PRECOMPILE=0`` turns it off; ``BRAZE_PRECOMPILE=<n>`` sets the
number of threads (default: up to 8, one per core).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import torch

from braze.autotune.measure import Bench, node_device
from braze.autotune.select import first_compiled, policy

log = logging.getLogger("braze.precompile")

MAX_THREADS = 8


def threads() -> int:
    """Threads for precompiling (0: off), from ``BRAZE_PRECOMPILE``."""
    raw = os.environ.get("BRAZE_PRECOMPILE", "")
    if raw.strip():
        try:
            return max(0, int(raw))
        except ValueError:
            raise ValueError(f"BRAZE_PRECOMPILE={raw!r}: expected a number of threads (0 turns it off)") from None
    return min(MAX_THREADS, os.cpu_count() or 1)


def jobs(launchers: Mapping[Any, Any], env: Mapping[str, int]) -> list[tuple]:
    """(launcher, kernel, config): one per distinct generated kernel, bucket and config
    that the selection of a launcher without a choice for ``env`` compiles first."""
    out: dict[tuple, tuple] = {}
    for launcher in launchers.values():
        if launcher.device.kind != "cuda" or policy(launcher.options) == "library":
            continue
        if launcher.problem_key(env) in launcher.choices:
            continue
        try:
            kernel, config = first_compiled(launcher, env)
        except Exception as e:  # noqa: BLE001 - selection will meet (and report) it
            log.debug("precompile: no plan for %s: %s", launcher.node.name, e)
            continue
        if kernel.backend == "library":
            continue
        key = (kernel.key(), repr(sorted(kernel.problem(env).items())), repr(sorted(config.items())))
        out.setdefault(key, (launcher, kernel, config))
    return list(out.values())


def precompile(launchers: Mapping[Any, Any], env: Mapping[str, int], n_threads: int | None = None) -> int:
    """Run the jobs of :func:`jobs` once each from a thread pool; the number run."""
    n = threads() if n_threads is None else n_threads
    if n > 0 and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return 0   # NOTE: never launch from other threads while a CUDA graph is being captured
    todo = jobs(launchers, env) if n > 0 else []
    if len(todo) < 2:
        return 0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(n, len(todo)), thread_name_prefix="braze-precompile") as pool:
        ok = sum(pool.map(lambda job: _run_once(*job, env), todo))
    log.info("braze: precompiled %d of %d kernels in %.1f s (%d threads)", ok, len(todo),
             time.perf_counter() - t0, min(n, len(todo)))
    return ok


def _run_once(launcher, kernel, config, env) -> bool:
    device = node_device(launcher.node)
    try:
        with torch.cuda.device(torch.device(device)) if device.startswith("cuda") else contextlib.nullcontext():
            xs = Bench(launcher.node, env, device, reference=False).inputs
            with torch.no_grad():
                kernel.compile(dict(config))(*xs)
        return True
    except Exception as e:  # noqa: BLE001 - selection compiles it again and reports
        log.debug("precompile of %s (%s) failed: %s", kernel.name, config, e)
        return False

