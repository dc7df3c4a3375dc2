"""Targets, compilation and the on-disk module cache.

A scheduled IRModule is compiled with ``tvm.compile`` and exported as a
shared library under ``$BRAZE_CACHE_DIR/tvm`` (default
``~/.cache/braze/tvm``), named by the SHA-256 of its TVMScript text, the
target and the TVM version: the same kernel (every layer of a model has the
same groups) is compiled once per machine and loaded afterwards. Within a
process, modules are also kept in memory by that key.

The TVM runtime's thread pool is sized to the cores this process may use
(``TVM_NUM_THREADS``) unless the user set it; its workers do not spin after a
parallel region (``TVM_THREAD_POOL_SPIN_COUNT=0``: they yield at once), because
on a CPU braze's kernels alternate with torch's own (OpenMP) kernels and two
pools spinning at once take each other's cores. Measured on a 2-core
AVX-512 VM (2026-12-07, BERT-base fp32 B1 S128, torch's library GEMMs between
TVM LayerNorms): 160 ms a forward with 2000 spins, 115 ms with none (eager
115 ms); at batch 8 the two are within the VM's noise.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("braze.codegen.tvm")

CACHE_VERSION = "1"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# NOTE: these must be set before the TVM runtime starts its thread pool (its
# first parallel kernel), so this module sets them on import.
os.environ.setdefault("TVM_NUM_THREADS", str(_cores()))
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")

import tvm  # noqa: E402

_lock = threading.Lock()
_memory: dict[str, Any] = {}
stats = {"compiled": 0, "disk_hits": 0, "memory_hits": 0, "compile_s": 0.0}


@functools.lru_cache(maxsize=1)
def cpu_features() -> frozenset:
    """Flags of this CPU (from /proc/cpuinfo; empty where unavailable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    try:
        return str(tvm.target.codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001 - an unknown CPU builds for the generic x86-64
        return "generic"


def cpu_target() -> dict:
    return {"kind": "llvm", "mcpu": host_cpu(), "num-cores": _cores()}


def cuda_target(arch: str = "sm_90") -> dict:
    return {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}


def cache_dir() -> Path:
    root = os.environ.get("BRAZE_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "braze"
    return base / "tvm"


def module_key(mod: "tvm.IRModule", target: dict) -> str:
    text = mod.script()
    h = hashlib.sha256()
    for part in (CACHE_VERSION, tvm.__version__, repr(sorted(_flat(target))), text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield (f"{prefix}{k}", str(v))


def build(mod: "tvm.IRModule", target: dict, use_disk: bool = True):
    """A loaded runtime module for ``mod`` (from memory, disk or a fresh compile)."""
    key = module_key(mod, target)
    with _lock:
        m = _memory.get(key)
        if m is not None:
            stats["memory_hits"] += 1
            return m
    path = cache_dir() / f"{key}.so"
    if use_disk and path.exists():
        try:
            m = tvm.runtime.load_module(str(path))
            stats["disk_hits"] += 1
            with _lock:
                _memory[key] = m
            return m
        except Exception as e:  # noqa: BLE001 - a corrupt cache entry is rebuilt
            log.warning("braze: rebuilding unreadable cached TVM module %s: %s", path, e)
    t0 = time.perf_counter()
    ex = tvm.compile(mod, target=target)
    stats["compiled"] += 1
    if use_disk and target.get("kind") == "llvm":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(fd)
            ex.export_library(tmp)
            os.replace(tmp, path)  # atomic: concurrent builders write the same content
            m = tvm.runtime.load_module(str(path))
        except Exception as e:  # noqa: BLE001 - no cache (read-only home, no compiler): keep the JIT module
            log.info("braze: TVM module cache unavailable (%s); using the in-memory module", e)
            m = ex
    else:
        m = ex
    stats["compile_s"] += time.perf_counter() - t0
    with _lock:
        _memory[key] = m
    return m
