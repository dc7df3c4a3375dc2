"""Kernels built ahead in a worker process (``autotune/compile_only.py``): the worker,
with no GPU, compiles a candidate for the parent's target into Triton's on-disk
cache, and the parent's own compile of the same kernel is then a cache load."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

import braze.compiler.kernels  # noqa: F401 - registers the generators
from braze.autotune.measure import MeasureWorker
from braze.autotune.recipe import candidates_for_node, current_generators, make_recipe
from braze.autotune.space import DeviceInfo
from braze.autotune.recipe import Options
from braze.ir import Builder
from tests.codegen.triton_helpers import gate_up_node

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
BF16 = torch.bfloat16
H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448, 65536, 50 * 2 ** 20)


@pytest.fixture(autouse=True)
def _needs_backend():
    from tools.triton_aot import available

    why = available()
    if why:
        pytest.skip(why)


def _entries(d) -> set:
    return set(os.listdir(d)) if os.path.isdir(d) else set()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> str:
    """A fresh Triton cache folder, compiled (not interpreted) kernels."""
    path = str(tmp_path / "triton-cache")
    monkeypatch.setenv("TRITON_CACHE_DIR", path)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    return path


def _gemm_candidates():
    node = gate_up_node()
    options = Options()
    gens = current_generators(options.backend)
    return node, options, gens, candidates_for_node(node, node.attr("graph"), options, H100, gens)


def test_worker_builds_what_the_parent_then_loads_from_the_cache(cache):
    from tools.triton_aot import compile_for_target

    node, options, gens, cands = _gemm_candidates()
    kernel = cands[0]
    assert kernel.backend == "triton"
    env = {"s0": 64}
    config = kernel.space.default_config(kernel.problem(env), H100)
    recipe = make_recipe(kernel, node, options, generators=gens, index=0)
    w = MeasureWorker(cuda_device="")
    try:
        m = w.compile_only(recipe, config, env, dataclasses.asdict(H100), ["cuda", 90, 32], 300)
        assert m.status == "ok", m.error
        built = _entries(cache)
        assert built, "the worker wrote nothing to Triton's cache"
        bad = w.compile_only(dict(recipe, key="nope", index=None), config, env, dataclasses.asdict(H100),
                             ["cuda", 90, 32], 300)
        assert bad.status == "compile_error" and "rebuild" in bad.error
    finally:
        w.close()
    xs = [torch.randn(64, 256, dtype=BF16), torch.randn(512, 256, dtype=BF16)]
    (c,) = compile_for_target(kernel, config, xs, arch=90)
    assert c.ptx
    assert _entries(cache) == built, "the parent compiled again: the worker's cache key differs"
    # the same check fails when the kernel is another one: a new config is a new cache entry
    other = dict(config, num_warps=8 if config.get("num_warps") != 8 else 4)
    compile_for_target(kernel, other, xs, arch=90)
    assert _entries(cache) - built


def test_precompile_builds_jobs_in_worker_processes(cache, monkeypatch):
    from types import SimpleNamespace

    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    from braze.autotune.compile_only import TargetDriver
    from braze.compiler import precompile

    monkeypatch.delenv("BRAZE_PRECOMPILE_PROCESSES", raising=False)
    node, options, _, cands = _gemm_candidates()
    kernel = cands[0]
    env = {"s0": 16}
    base = kernel.space.default_config(kernel.problem(env), H100)
    launcher = SimpleNamespace(node=node, options=options, candidates=cands, device=H100)
    configs = [dict(base, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]
    todo = [(launcher, kernel, c) for c in configs]
    monkeypatch.setattr(driver, "_active", TargetDriver(GPUTarget("cuda", 90, 32)), raising=False)
    try:
        assert precompile.compile_ahead(todo[:3], env, 2) == 0          # too few jobs to start workers
        assert precompile.compile_ahead(todo, env, 2) == 4
    finally:
        precompile.close_workers()
    assert len(_entries(cache)) >= 4
    monkeypatch.setenv("BRAZE_PRECOMPILE_PROCESSES", "0")
    assert precompile.compile_ahead(todo, env, 2) == 0


def test_worker_builds_an_attention_kernel_on_cpu_operands(cache):
    """The attention launcher refuses CPU tensors outside the interpreter, except while
    launches only compile (a worker's job)."""
    b = Builder()
    q = b.input("q", (1, 8, 1, 64), BF16)
    k = b.input("k", (1, 2, 256, 64), BF16)
    v = b.input("v", (1, 2, 256, 64), BF16)
    out = b.call("attention", q, k, v, None, None, scale=0.125, causal="bottom_right", groups=4)
    g = b.graph([out])
    (node,) = g.compute_nodes
    options = Options()
    gens = current_generators(options.backend)
    cands = candidates_for_node(node, g, options, H100, gens)
    kernel = cands[0]
    assert kernel.backend == "triton", [c.name for c in cands]
    config = kernel.space.default_config(kernel.problem({}), H100)
    recipe = make_recipe(kernel, node, options, generators=gens, index=0)
    w = MeasureWorker(cuda_device="")
    try:
        m = w.compile_only(recipe, config, {}, dataclasses.asdict(H100), ["cuda", 90, 32], 300)
    finally:
        w.close()
    assert m.status == "ok", m.error
    assert _entries(cache)


def test_worker_builds_the_split_gemm_epilogue_without_running_the_gemm(cache):
    from braze.compiler.codegen.triton.split_gemm import SplitGemmKernel

    node, options, gens, cands = _gemm_candidates()
    (i, split), = [(i, k) for i, k in enumerate(cands) if isinstance(k, SplitGemmKernel)]
    env = {"s0": 4096}
    config = split.space.default_config(split.problem(env), H100)
    recipe = make_recipe(split, node, options, generators=gens, index=i)
    w = MeasureWorker(cuda_device="")
    try:
        m = w.compile_only(recipe, config, env, dataclasses.asdict(H100), ["cuda", 90, 32], 60)
    finally:
        w.close()
    assert m.status == "ok", m.error
    assert _entries(cache)
