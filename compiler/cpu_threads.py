"""Which thread pool runs a CPU program's parallel work, chosen by timing.

A braze program on the CPU mixes TVM kernels (TVM's thread pool) and ATen
ops (torch's OpenMP pool). OpenMP threads spin-wait after each parallel
region unless ``OMP_WAIT_POLICY=PASSIVE`` was set before the process
started, and a TVM kernel that runs while they spin shares the cores with
them (up to 10-30x slower on 2 cores, bench/results/README.md). Two
regimes, and no single best one:

- ``shared``: both pools as the user configured them (best when ATen ops,
  e.g. library GEMMs at a large batch, carry the program);
- ``tvm``: torch single-threaded while the program runs, so OpenMP's
  threads fall asleep and TVM's own pool has the cores (best when the
  generated kernels carry it: GPT-2 small at batch 1, 1.3x eager instead of
  0.8x on a 2-core VM).

:class:`ThreadRegime` times the program's first warm calls under each
(alternating, ``TRIALS`` each) and keeps the faster; ``tvm`` must win by
``MARGIN`` to be kept. Nothing is set before Python starts and nothing
outside the program's call changes.

NOTE: ``torch.set_num_threads`` is process-wide: another Python thread running
torch ops during a ``tvm``-regime call runs them single-threaded.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional, Sequence

import torch

log = logging.getLogger("braze.runtime")

REGIMES = ("shared", "tvm")


def applies(inputs: Sequence[torch.Tensor]) -> bool:
    """A program on CPU tensors, torch multi-threaded, OpenMP threads that spin."""
    return (bool(inputs) and all(getattr(x, "device", None) is not None and x.device.type == "cpu" for x in inputs)
            and torch.get_num_threads() > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE")


class ThreadRegime:
    TRIALS = 3        # calls per regime (the best of them counts): noisy machines need a few
    MARGIN = 0.95     # tvm is kept when its best time is at most 95% of shared's

    def __init__(self, name: str = "", on_choice: Optional[Callable[[str], None]] = None):
        self.name = name
        self.choice: Optional[str] = None
        self.samples: dict = {r: [] for r in REGIMES}
        self.on_choice = on_choice

    def run(self, fn: Callable, *args):
        if self.choice is not None:
            return _under(self.choice, fn, args)
        regime = min(REGIMES, key=lambda r: len(self.samples[r]))     # alternate, shared first
        t0 = time.perf_counter()
        out = _under(regime, fn, args)
        self.samples[regime].append(time.perf_counter() - t0)
        if all(len(v) >= self.TRIALS for v in self.samples.values()):
            self._decide()
        return out

    def _decide(self) -> None:
        shared, tvm = min(self.samples["shared"]), min(self.samples["tvm"])
        self.choice = "tvm" if tvm <= self.MARGIN * shared else "shared"
        what = ("torch single-threaded while the program runs, TVM's pool has the cores" if self.choice == "tvm"
                else "torch's and TVM's pools as configured")
        msg = (f"CPU threads: {self.choice} regime ({what}); best of {self.TRIALS} calls: "
               f"shared {shared * 1e3:.1f} ms, tvm {tvm * 1e3:.1f} ms")
        log.info("braze: %s: %s", self.name, msg)
        if self.on_choice is not None:
            self.on_choice(msg)


def _under(regime: str, fn: Callable, args):
    if regime == "shared":
        return fn(*args)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(n)
