"""Build a program's generated GPU kernels in parallel before its first run.

Selection (``autotune/select.py``) compiles, checks and times candidates one
launcher at a time. On a GPU most of a cold compile is Triton turning each
kernel into a cubin: MLIR passes and ``ptxas``, which run without the GIL.
So before a plan is built, the kernels each launcher's selection compiles
(``select.compiled_by_select``: the database hit, else the first
candidate's nearest or default config and the other candidates the quick
selection times) are run once on random operands from a pool of threads,
one job per distinct (kernel, bucket, config): the sixteen identical layers
of a decoder are one job. Selection then finds
each kernel compiled (the generated module, and with it Triton's compiled
function, is shared per source). Nothing is timed here; a job that fails is
logged and selection meets the failure again, as before.

Before the threads, when there are at least ``MIN_AHEAD_JOBS`` jobs, worker
processes build the same kernels into Triton's on-disk cache
(``autotune/compile_only.py``): Triton's Python front end holds the GIL, so
threads alone overlap only its MLIR passes and ``ptxas``; processes overlap
all of it, and the threads then load the cubins from the cache. The workers
(no GPU visible to them) stay up for the next graph of the same process.

``BRAZE_PRECOMPILE=0`` turns it off; ``BRAZE_PRECOMPILE=<n>`` sets the
number of threads and of worker processes (default: up to 8, one per core);
``BRAZE_PRECOMPILE_PROCESSES=0`` keeps the threads only.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import torch

from braze.autotune import cublas_workspace
from braze.autotune.measure import Bench, MeasureWorker, node_device
from braze.autotune.recipe import make_recipe
from braze.autotune.select import compiled_by_select, policy

log = logging.getLogger("braze.precompile")

MAX_THREADS = 8
MIN_AHEAD_JOBS = 4        # fewer: starting the worker processes costs more than it saves
AHEAD_TIMEOUT_S = 180.0   # one job in a worker (a compile that slow is compiled by the parent)


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
    that the selection of a launcher without a choice for ``env`` compiles."""
    out: dict[tuple, tuple] = {}
    for launcher in launchers.values():
        if launcher.device.kind != "cuda" or policy(launcher.options) == "library":
            continue
        if launcher.problem_key(env) in launcher.choices:
            continue
        try:
            planned = compiled_by_select(launcher, env)
        except Exception as e:  # noqa: BLE001 - selection will meet (and report) it
            log.debug("precompile: no plan for %s: %s", launcher.node.name, e)
            continue
        for kernel, config in planned:
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
    compile_ahead(todo, env, n)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(n, len(todo)), thread_name_prefix="braze-precompile") as pool:
        ok = sum(pool.map(lambda job: _run_once(*job, env), todo))
    # NOTE: a library GEMM run from a pool thread leaves a cuBLAS workspace for that thread's handle
    cublas_workspace.release()
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


# --- worker processes -----------------------------------------------------------
_pool: list[MeasureWorker] = []
_pool_lock = threading.Lock()
_ahead_lock = threading.Lock()


def _workers(n: int) -> list[MeasureWorker]:
    with _pool_lock:
        while len(_pool) < n:
            # NOTE: no visible GPU: a worker only compiles, and a CUDA context per worker
            # would cost device memory for nothing.
            _pool.append(MeasureWorker(cuda_device="", extra_env={"BRAZE_PRECOMPILE": "0"}))
        return _pool[:n]


@atexit.register
def close_workers() -> None:
    with _pool_lock:
        for w in _pool:
            w.close()
        _pool.clear()


def ahead_processes(n: int) -> int:
    raw = os.environ.get("BRAZE_PRECOMPILE_PROCESSES", "").strip()
    if raw in ("0", "off", "false"):
        return 0
    return n


def compile_ahead(todo: list[tuple], env: Mapping[str, int], n: int) -> int:
    """Build the jobs' Triton kernels in worker processes into Triton's on-disk cache
    (see the module docstring); the number built. Never raises."""
    todo = [job for job in todo if job[1].backend == "triton"]   # what Triton's on-disk cache keeps
    n = min(ahead_processes(n), len(todo))
    if n < 2 or len(todo) < MIN_AHEAD_JOBS:
        return 0
    try:
        from triton.runtime import driver

        t = driver.active.get_current_target()
        target = [t.backend, t.arch, t.warp_size]
    except Exception as e:  # noqa: BLE001 - the threads compile everything as before
        log.debug("precompile: no GPU target for worker jobs: %s", e)
        return 0
    requests = []
    for launcher, kernel, config in todo:
        try:
            recipe = make_recipe(kernel, launcher.node, launcher.options, index=list(launcher.candidates).index(kernel))
        except Exception as e:  # noqa: BLE001 - this one is compiled by the threads
            log.debug("precompile: no recipe for %s: %s", kernel.name, e)
            continue
        requests.append((recipe, dict(config), dataclasses.asdict(launcher.device)))
    n = min(n, len(requests))
    if n < 1:
        return 0
    # NOTE: one planner at a time uses the workers (two programs built from two threads
    # would otherwise share a worker's pipe).
    with _ahead_lock:
        t0 = time.perf_counter()
        free: queue.Queue = queue.Queue()
        for w in _workers(n):
            free.put(w)

        def one(req) -> bool:
            recipe, config, device = req
            w = free.get()
            try:
                m = w.compile_only(recipe, config, env, device, target, AHEAD_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - a worker that cannot start: the threads compile it
                log.debug("precompile: worker failed on %s: %s", recipe.get("name"), e)
                return False
            finally:
                free.put(w)
            if m.status != "ok":
                log.debug("precompile: a worker could not build %s (%s): %s", recipe.get("name"), config, m.error)
            return m.status == "ok"

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="braze-compile-ahead") as pool:
            ok = sum(pool.map(one, requests))
    log.info("braze: %d of %d kernels built in %d worker processes in %.1f s", ok, len(requests), n,
             time.perf_counter() - t0)
    return ok
