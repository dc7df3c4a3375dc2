"""The autotuner on a GPU: CUDA timing (events with the L2 flushed, CUDA
graphs for tiny kernels), a real Triton kernel tuned in a worker process
(its wrong variant recorded and never chosen), the database serving the
second compile, and the measured choice between a default and the library.

Run on the GPU machine: ``pytest -q -m gpu tests/autotune/test_gpu.py``.
"""
from collections import Counter

import pytest
import torch

from braze.autotune import contract
from braze.autotune.db import get_db
from braze.autotune.measure import Bench, MeasureSpec, measure
from braze.autotune.space import device_info
from braze.compiler.kernels import LibraryKernel
from braze.compiler.driver import compile_graph
from braze.config import Options
from braze.ir import Builder
from braze.ir.fused import fuse_groups

pytestmark = pytest.mark.gpu


def gemm(m, k, n, dt=torch.bfloat16):
    b = Builder()
    y = b.call("relu", b.call("mm", b.input("x", (m, k), dt, "cuda"), b.input("w", (k, n), dt, "cuda")))
    g = b.graph([y])
    return fuse_groups(g, [(list(g.compute_nodes), "gemm")])


def test_cuda_timing_methods():
    dev = device_info("cuda")
    big = gemm(4096, 2048, 3072).compute_nodes[0]
    m = measure(LibraryKernel(big), {}, Bench(big, {}, "cuda"), MeasureSpec(), dev.l2_bytes)
    assert m.status == "ok" and m.stats["method"] == "cuda-graph-l2flush", m.stats
    tflops = 2 * 4096 * 2048 * 3072 / m.time_ms / 1e9
    assert 50 < tflops < 2000, tflops   # cuBLAS bf16 on a data-centre GPU, timed on the device
    m = measure(LibraryKernel(big), {}, Bench(big, {}, "cuda"), MeasureSpec(graph_below_us=0), dev.l2_bytes)
    assert m.status == "ok" and m.stats["method"] == "cuda-events-l2flush", m.stats
    tiny = gemm(16, 16, 16).compute_nodes[0]
    m = measure(LibraryKernel(tiny), {}, Bench(tiny, {}, "cuda"), MeasureSpec(), dev.l2_bytes)
    assert m.status == "ok" and m.stats["method"] == "cuda-graph-l2flush" and m.stats["inner"] > 1, m.stats
    assert m.time_ms < 0.02, m.time_ms  # two tiny kernels: the host launch path is not in a graph timing
    m = measure(LibraryKernel(tiny), {}, Bench(tiny, {}, "cuda"), MeasureSpec(flush_l2=False), dev.l2_bytes)
    assert m.status == "ok" and m.stats["method"] == "cuda-graph" and m.time_ms < 0.02, m.stats


def test_triton_kernel_tuned_in_a_worker(db_path, monkeypatch):
    import triton_testgen
    from braze.compiler import kernels

    monkeypatch.setattr(contract, "GENERATORS", [("triton", triton_testgen.gen)])
    monkeypatch.setattr(kernels, "_load_generators", lambda: None)
    g = gemm(2048, 1024, 1536)
    opts = Options(tune=True, extra={"budget": {"trials": 10, "patience": 8, "trial_timeout": 120}})
    prog = compile_graph(g, opts)
    bench = Bench(g.compute_nodes[0], {}, "cuda")
    x, w = bench.inputs
    (out,) = prog(x, w)
    ref = torch.relu(x.float() @ w.float())
    assert float((out.float() - ref).abs().max() / ref.abs().max()) < 2e-2
    (launcher,) = prog.launchers.values()
    rec = launcher.record()
    assert rec.config_source == "search" and rec.name in ("triton_test_mm", "library_gemm_gemm_relu")
    db = get_db()
    by = Counter((t.kernel_name, t.status) for t in db.trials())
    assert by[("triton_test_mm", "ok")] >= 3 and by[("triton_test_mm_bug", "wrong")] >= 1
    assert by[("library_gemm_gemm_relu", "ok")] == 1
    assert all(t.stats["method"].startswith("cuda") for t in db.trials(status="ok"))
    n = db.count()
    prog2 = compile_graph(g, opts)
    prog2(x, w)
    (l2,) = prog2.launchers.values()
    assert l2.record().config_source == "database" and db.count() == n


def test_quick_selection_on_cuda(db_path, monkeypatch):
    import triton_testgen
    from braze.compiler import kernels

    monkeypatch.setattr(contract, "GENERATORS", [("triton", triton_testgen.gen)])
    monkeypatch.setattr(kernels, "_load_generators", lambda: None)
    g = gemm(1024, 2048, 2048)
    prog = compile_graph(g, Options())
    prog(*Bench(g.compute_nodes[0], {}, "cuda").inputs)
    quick = get_db().trials(origin="quick")
    assert {t.kernel_name for t in quick} == {"triton_test_mm", "library_gemm_gemm_relu"}
    assert all(t.status == "ok" and t.time_ms > 0 for t in quick)
