"""Measuring configs of real TVM kernels: checked against the reference, timed, isolated."""
import math

import pytest
import torch

from braze.autotune.measure import Bench, MeasureSpec, check_outputs, measure
from braze.autotune.recipe import make_recipe, node_graph, rebuild
from braze.autotune.space import device_info
from braze.config import Options

pytest.importorskip("tvm", reason="these tests tune real TVM/LLVM kernels")
import tvm_testgen as tg  # noqa: E402

CPU = device_info("cpu")
GENS = ["tvm_testgen:gen_tvm", "tvm_testgen:gen_broken"]


def test_in_process_measurement_of_a_real_tvm_kernel():
    node = tg.fused_node(tg.gemm_graph(45, 37, 70))   # odd sizes, not multiples of any tile
    k = tg.TvmMatmul(node)
    bench = Bench(node, {}, "cpu")
    assert all(x.abs().sum() > 0 for x in bench.inputs)  # random, never zeros
    assert bench.refs[0].dtype == torch.float64           # reference in higher precision
    spec = MeasureSpec(reps=5, max_seconds=0.5)
    cfgs = [{"tile_m": 8, "tile_n": 16, "k_outer": False, "parallel": True, "vectorize": True, "unroll": True},
            {"tile_m": 32, "tile_n": 64, "k_outer": True, "parallel": False, "vectorize": False}]
    for cfg in cfgs:
        m = measure(k, k.space.normalize(cfg), bench, spec)
        assert m.status == "ok", m.error
        assert 0 < m.time_ms < 100 and m.stats["method"].startswith("cpu-perf-counter") and m.stats["reps"] >= 3
        assert m.max_err < 1e-5 and m.compile_ms > 0
    wrong = measure(tg.TvmMatmul(node, bug="skip_k"), k.space.default_config({}, CPU), bench, spec)
    assert wrong.status == "wrong" and "max relative error" in wrong.error


def test_check_outputs_names_what_is_wrong():
    node = tg.fused_node(tg.softmax_graph(5, 7))
    bench = Bench(node, {}, "cpu")
    good = torch.softmax(bench.inputs[0], -1)
    assert check_outputs(node, {}, good, bench.refs)[0] is None
    assert "shape" in check_outputs(node, {}, good[:, :6], bench.refs)[0]
    assert "dtype" in check_outputs(node, {}, good.double(), bench.refs)[0]
    assert "outputs" in check_outputs(node, {}, (good, good), bench.refs)[0]
    bad = good.clone()
    bad[2, 3] = float("nan")
    assert "non-finite" in check_outputs(node, {}, bad, bench.refs)[0]
    err, e = check_outputs(node, {}, good * 1.01, bench.refs)
    assert "relative error" in err and e == pytest.approx(0.01, rel=0.05)


def test_recipes_rebuild_the_same_kernel_from_text():
    node = tg.fused_node(tg.gemm_graph())
    for k in tg.gen_tvm(node, None, Options(), CPU) + tg.gen_broken(node, None, Options(), CPU):
        r = make_recipe(k, node, Options(), GENS)
        k2, n2 = rebuild(r)
        assert k2.key() == k.key() and k2.name == k.name and type(k2) is type(k)
    assert len(node_graph(node).compute_nodes) == 1


def test_worker_measures_and_survives_bad_candidates(measurer):
    node = tg.fused_node(tg.gemm_graph())
    good = tg.TvmMatmul(node)
    spec = MeasureSpec(reps=3, max_seconds=0.3)
    cfg = good.space.default_config({}, CPU)
    m = measurer.measure(make_recipe(good, node, Options(), GENS), cfg, {}, spec, timeout=120)
    assert m.status == "ok" and m.time_ms > 0 and math.isfinite(m.max_err)
    raises = next(k for k in tg.gen_broken(node, None, Options(), CPU) if k.name == "broken_raises")
    m = measurer.measure(make_recipe(raises, node, Options(), GENS), {"variant": 0}, {}, spec, timeout=60)
    assert m.status == "compile_error" and "on purpose" in m.error
    # a recipe no generator can rebuild is a compile error, not a crash
    r = dict(make_recipe(good, node, Options(), GENS), key="nonexistent")
    m = measurer.measure(r, cfg, {}, spec, timeout=60)
    assert m.status == "compile_error" and "no generator rebuilds" in m.error
    assert measurer.restarts == 0


def test_a_kernel_whose_key_changes_between_processes_is_rebuilt_by_position(measurer):
    node = tg.fused_node(tg.gemm_graph())
    (k,) = tg.gen_unstable(node, None, Options(), CPU)
    spec = MeasureSpec(reps=3, max_seconds=0.3)
    cfg = k.space.default_config({}, CPU)
    gens = ["tvm_testgen:gen_unstable"]
    m = measurer.measure(make_recipe(k, node, Options(), gens, index=0), cfg, {}, spec, timeout=120)
    assert m.status == "ok", m.error
    m = measurer.measure(make_recipe(k, node, Options(), gens), cfg, {}, spec, timeout=120)
    assert m.status == "compile_error" and "no generator rebuilds" in m.error


def test_tolerance_follows_the_least_precise_type_a_group_computes_in():
    """A float16 GEMM whose result is cast to float32 rounds like float16: its candidates
    (the library's included) must not be held to float32's tolerance, and a real error
    is still caught."""
    from braze.autotune.measure import TOLERANCE, compute_tolerance
    from braze.ir.builder import Builder
    from braze.ir.fused import fuse_groups

    b = Builder()
    x, w = b.input("x", (16, 64), torch.float16, "cpu"), b.input("w", (64, 32), torch.float16, "cpu")
    r = b.input("r", (16, 32), torch.float32, "cpu")
    y = b.call("add", b.call("_to_copy", b.call("mm", x, w), dtype=torch.float32), r, overload="Tensor")
    g = b.graph([y])
    fg = fuse_groups(g, [([n for n in g.nodes if n.op not in ("input", "constant")], "gemm")])
    node = next(n for n in fg.nodes if n.op == "fused")
    assert node.types[0].dtype == torch.float32
    assert compute_tolerance(node) == TOLERANCE[torch.float16]
    bench = Bench(node, {}, "cpu")
    xs = bench.inputs
    fp16_result = (xs[0] @ xs[1]).float() + xs[2]          # float16 GEMM rounding, then float32
    assert check_outputs(node, {}, fp16_result, bench.refs)[0] is None
    assert "relative error" in check_outputs(node, {}, fp16_result * 1.05, bench.refs)[0]


def test_attention_reference_is_computed_in_batch_slices_when_its_scores_are_large(monkeypatch):
    """A prefill at batch 64 would materialise tens of GB of float64 scores at compile time;
    the reference is then computed per batch slice, with the same result."""
    from braze.autotune import measure as m
    from braze.ir import Builder

    b = Builder()
    q, k, v = b.input("q", (4, 2, 8, 16)), b.input("k", (4, 1, 8, 16)), b.input("v", (4, 1, 8, 16))
    mask = b.input("m", (1, 1, 8, 8), dtype=torch.bool)      # broadcast over the batch
    out = b.call("attention", q, k, v, mask, None, scale=0.25, causal="none", window=None, groups=2,
                 mask_kind="bool")
    node = out.node
    xs = [torch.randn(4, 2, 8, 16), torch.randn(4, 1, 8, 16), torch.randn(4, 1, 8, 16), torch.rand(1, 1, 8, 8) > 0.3]
    whole = m.reference_outputs(node, xs)
    monkeypatch.setattr(m, "REFERENCE_SCORES_BYTES", 4 * 2 * 8 * 8 * 8 // 3 + 1)
    assert m._reference_chunks(node, xs) == 3
    torch.testing.assert_close(m.reference_outputs(node, xs)[0], whole[0], rtol=0, atol=0)


def test_cpu_timing_follows_a_parallel_aten_op_where_openmp_threads_spin(monkeypatch):
    """Where torch's OpenMP threads spin after a parallel region, each call is timed right
    after one (as a generated kernel runs between ATen ops in a program); not where they
    sleep (OMP_WAIT_POLICY=PASSIVE) or torch has one thread."""
    import torch

    from braze.autotune.measure import MeasureSpec, _time_cpu

    calls = []
    spec = MeasureSpec(warmup=1, reps=3, min_rep_ms=0.01, max_seconds=0.05)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    ms, st = _time_cpu(lambda: calls.append(1), spec)
    assert st["method"] == "cpu-perf-counter-after-omp" and ms >= 0 and calls
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert _time_cpu(lambda: None, spec)[1]["method"] == "cpu-perf-counter"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert _time_cpu(lambda: None, spec)[1]["method"] == "cpu-perf-counter"
