"""Parallel precompile (compiler/precompile.py): one job per distinct generated kernel,
bucket and config, run from a thread pool; failures never stop the program."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
import torch

from braze.autotune.space import EMPTY, DeviceInfo, Space
from braze.compiler import precompile as pc
from braze.compiler.kernels import Launcher, LibraryKernel
from braze.config import Options
from braze.ir import Builder

CUDA = DeviceInfo("cuda", "test GPU", (9, 0), 132)


@dataclass
class FakeKernel:
    """A generated candidate that records which thread compiled and ran it."""

    node: object
    tag: str
    fail: bool = False
    name: str = "fake_triton"
    backend: str = "triton"
    space: Space = field(default=EMPTY)
    source: str = ""
    runs: list = field(default_factory=list)

    def key(self):
        return f"fake:{self.tag}"

    def problem(self, env):
        return {"n": int(env.get("s0", 4))}

    def compile(self, config):
        def run(*xs):
            if self.fail:
                raise RuntimeError("does not build")
            self.runs.append(threading.current_thread().name)
            return torch.relu(xs[0])
        return run


def _launchers(tags, fail=()):
    b = Builder()
    x = b.input("x", ("s0", 8), torch.float32)
    outs = [b.call("relu", x) for _ in tags]
    g = b.graph(outs)
    nodes = [n for n in g.compute_nodes]
    out = {}
    for n, tag in zip(nodes, tags):
        k = FakeKernel(n, tag, fail=tag in fail)
        out[n] = Launcher(n, [k, LibraryKernel(n)], Options(), CUDA)
    return out


def test_one_job_per_distinct_kernel_run_from_the_pool():
    ls = _launchers(["a", "a", "a", "b"])
    todo = pc.jobs(ls, {"s0": 4})
    assert sorted(k.tag for _, k, _ in todo) == ["a", "b"]      # three identical layers: one job
    assert pc.precompile(ls, {"s0": 4}, n_threads=4) == 2
    ran = [t for L in ls.values() for t in L.primary.runs]
    assert len(ran) == 2 and all(t.startswith("braze-precompile") for t in ran)


def test_candidates_the_quick_selection_times_are_built_too():
    """A generated candidate that says quick_measure (the split GEMM) is compiled by the
    quick selection beside the first one: it is a job too; library calls never are."""
    ls = _launchers(["a"])
    (n,) = ls
    quick = FakeKernel(n, "split")
    quick.quick_measure = True
    other = FakeKernel(n, "searched-only")
    ls[n] = Launcher(n, [ls[n].primary, other, quick, LibraryKernel(n)], Options(), CUDA)
    assert sorted(k.tag for _, k, _ in pc.jobs(ls, {"s0": 4})) == ["a", "split"]


def test_the_alternate_configs_the_quick_selection_times_are_built_too():
    """A first candidate whose space lists alternates to its default (the GEMV table):
    one job per config."""
    from braze.autotune.space import Knob

    ls = _launchers(["a"])
    (n,) = ls
    k = ls[n].primary
    k.space = Space((Knob("BLOCK", (16, 32, 64)),), default=lambda p, d: {"BLOCK": 32},
                    alternates=lambda p, d: ({"BLOCK": 64}, {"BLOCK": 16}))
    assert sorted(c["BLOCK"] for _, _, c in pc.jobs(ls, {"s0": 4})) == [16, 32, 64]


def test_failures_are_logged_not_raised_and_cpu_or_bound_launchers_are_skipped():
    ls = _launchers(["a", "bad", "c"], fail={"bad"})
    assert pc.precompile(ls, {"s0": 4}, n_threads=2) == 2
    cpu = {n: Launcher(n, L.candidates, L.options, DeviceInfo("cpu", "cpu")) for n, L in ls.items()}
    assert pc.jobs(cpu, {"s0": 4}) == []
    first = next(iter(ls.values()))
    first.choices[first.problem_key({"s0": 4})] = object()   # already chosen
    assert len(pc.jobs(ls, {"s0": 4})) == 2


def test_thread_count_from_the_environment(monkeypatch):
    ls = _launchers(["a", "b"])
    monkeypatch.setenv("BRAZE_PRECOMPILE", "0")
    assert pc.threads() == 0 and pc.precompile(ls, {"s0": 4}) == 0
    monkeypatch.setenv("BRAZE_PRECOMPILE", "3")
    assert pc.threads() == 3
    monkeypatch.setenv("BRAZE_PRECOMPILE", "many")
    with pytest.raises(ValueError, match="BRAZE_PRECOMPILE='many'"):
        pc.threads()
