"""``BRAZE_PROFILE=1``: time every node the compiled programs run.

Plans built while profiling is on call each node through a wrapper that adds
its wall time (synchronising CUDA around the call when the inputs live on a
GPU) to a table keyed by what ran: the generated kernel's name for a fused
group or a node with a launcher, ``aten.<op>`` for a node that runs its ATen
implementation. ``table()`` formats it; with the variable set the table is
printed to stderr when the process exits. CUDA graph replay is off while
profiling (a replayed graph has no per-node calls to time).
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any, Callable

import torch

_totals: dict[str, list] = {}   # label -> [calls, seconds]


def enabled() -> bool:
    return os.environ.get("BRAZE_PROFILE", "") not in ("", "0")


def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its calls counted and timed under ``label``."""
    entry = _totals.setdefault(label, [0, 0.0])

    def call(*args, **kwargs):
        cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        entry[0] += 1
        entry[1] += time.perf_counter() - t
        return out

    call.__wrapped__ = fn
    return call


def reset() -> None:
    for entry in _totals.values():  # the wrappers hold their entries: zero them in place
        entry[0], entry[1] = 0, 0.0


def totals() -> dict[str, tuple[int, float]]:
    return {k: (c, s) for k, (c, s) in _totals.items() if c}


def table(top: int = 40) -> str:
    rows = sorted(totals().items(), key=lambda kv: -kv[1][1])
    total = sum(s for _, (_, s) in rows) or 1.0
    lines = [f"{'ms total':>10} {'%':>6} {'calls':>7} {'us/call':>9}  node"]
    for label, (calls, s) in rows[:top]:
        lines.append(f"{s * 1e3:10.2f} {100 * s / total:6.1f} {calls:7d} {s / calls * 1e6:9.1f}  {label}")
    if len(rows) > top:
        rest = sum(s for _, (_, s) in rows[top:])
        lines.append(f"{rest * 1e3:10.2f} {100 * rest / total:6.1f} {'':7} {'':9}  ({len(rows) - top} more)")
    return "\n".join(lines)


def _print_at_exit() -> None:
    if totals():
        print("braze profile (BRAZE_PROFILE):\n" + table(), file=sys.stderr)


if enabled():
    atexit.register(_print_at_exit)
