"""The selection policy without tuning: database hits, nearest buckets,
measured defaults, and a database that cannot be used."""
import logging

import pytest
import torch

from braze.autotune import contract
from braze.autotune.db import Trial, get_db, software_key
from braze.autotune.recipe import family_key
from braze.autotune.space import device_info
from braze.compiler.driver import compile_graph
from braze.config import Options

pytest.importorskip("tvm", reason="these tests tune real TVM/LLVM kernels")
import tvm_testgen as tg  # noqa: E402

CPU = device_info("cpu")


def only_launcher(prog):
    (launcher,) = prog.launchers.values()
    return launcher


def run(g, opts, *shape_pairs):
    prog = compile_graph(g, opts)
    xs = [torch.randn(*s) for s in shape_pairs]
    (out,) = prog(*xs)
    return prog, xs, out


def test_untuned_compile_measures_the_defaults_once_then_hits_the_database(db_path, generators):
    generators("tvm")
    g = tg.gemm_graph(40, 24, 30)
    prog, (x, w), out = run(g, Options(), (40, 24), (24, 30))
    torch.testing.assert_close(out, torch.relu(x @ w), rtol=1e-5, atol=1e-5)
    launcher = only_launcher(prog)
    choice = next(iter(launcher.choices.values()))
    assert choice.source == "default"
    db = get_db()
    quick = db.trials(origin="quick")
    assert sorted(t.kernel_name for t in quick) == ["library_gemm_gemm_relu", "tvm_test_matmul_relu"]
    assert all(t.status == "ok" for t in quick)
    fastest = min(quick, key=lambda t: t.time_ms)
    assert choice.kernel.name == fastest.kernel_name  # chosen by measurement, not assumed
    prog2, _, _ = run(g, Options(), (40, 24), (24, 30))
    assert next(iter(only_launcher(prog2).choices.values())).source == "database"
    assert db.count() == 2  # nothing measured the second time


def test_select_first_measures_nothing(db_path, generators):
    generators("tvm")
    prog, _, _ = run(tg.gemm_graph(16, 8, 8), Options(extra={"select": "first"}), (16, 8), (8, 8))
    ch = next(iter(only_launcher(prog).choices.values()))
    assert ch.kernel.name == "tvm_test_matmul_relu" and ch.source == "default"
    assert get_db().count() == 0


def wrong_first(node, graph, options, device):
    return [tg.TvmMatmul(node, bug="skip_k")] if node.op == "fused" else []


def test_a_wrong_default_loses_to_the_library(db_path, generators, monkeypatch, caplog):
    from braze.compiler import kernels

    generators()
    monkeypatch.setattr(contract, "GENERATORS", [("tvm", wrong_first)])
    caplog.set_level(logging.WARNING)
    prog, (x, w), out = run(tg.gemm_graph(20, 12, 10), Options(), (20, 12), (12, 10))
    torch.testing.assert_close(out, torch.relu(x @ w))
    assert next(iter(only_launcher(prog).choices.values())).kernel.backend == "library"
    assert any("is wrong" in r.getMessage() for r in caplog.records)
    assert get_db().count(status="wrong") == 1


def test_nearest_bucket_config_is_used_untuned(db_path, generators):
    generators("tvm")
    g_near = tg.gemm_graph(64, 24, 30)
    node = tg.fused_node(g_near)
    k = tg.TvmMatmul(node)
    cfg = {"tile_m": 32, "tile_n": 4, "k_outer": True, "parallel": False, "vectorize": False, "unroll": False}
    db = get_db()
    db.record(Trial(CPU.key, software_key(), k.key(), k.name, k.backend, k.problem({}), cfg, "ok", 1e-4,
                    origin="search", family=family_key(k, node)))
    prog, _, _ = run(tg.gemm_graph(48, 24, 30), Options(), (48, 24), (24, 30))
    launcher = only_launcher(prog)
    ch = next(iter(launcher.choices.values()))
    assert ch.source == ("database" if ch.kernel.backend == "tvm" else "default")
    tvm_cfg = [t.config for t in db.trials(origin="quick") if t.kernel_name == k.name]
    assert tvm_cfg == [cfg]  # the nearest bucket's config was the TVM candidate's config


def test_a_corrupt_database_still_runs_with_defaults(tmp_path, generators, caplog):
    from braze.autotune import db as dbmod

    generators("tvm")
    path = tmp_path / "corrupt.db"
    junk = b"\x00garbage that is not sqlite\x00" * 50
    path.write_bytes(junk)
    dbmod.forget_open()
    caplog.set_level(logging.ERROR)
    prog, (x, w), out = run(tg.gemm_graph(20, 12, 10), Options(tuning_db=str(path)), (20, 12), (12, 10))
    torch.testing.assert_close(out, torch.relu(x @ w), rtol=1e-5, atol=1e-5)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("is not a SQLite file" in m and str(path) in m for m in msgs)
    assert path.read_bytes() == junk
    dbmod.forget_open()


def test_every_library_candidate_is_measured_untuned(db_path, generators, monkeypatch):
    # An attention node's candidates are [Triton template, SDPA (a library call), the op's
    # reference]: the library call in the middle must be measured too, or braze could keep a
    # slower generated kernel than the library it is meant never to lose to.
    from braze.compiler import kernels
    from braze.compiler.kernels import LibraryKernel

    def three(node, graph, options, device):
        if node.op != "fused":
            return []
        return [tg.TvmMatmul(node), LibraryKernel(node, name="library_alternative")]

    generators()
    monkeypatch.setattr(contract, "GENERATORS", [("tvm", three)])
    prog, (x, w), out = run(tg.gemm_graph(64, 48, 40), Options(), (64, 48), (48, 40))
    torch.testing.assert_close(out, torch.relu(x @ w), rtol=1e-5, atol=1e-5)
    quick = get_db().trials(origin="quick")
    assert sorted(t.kernel_name for t in quick) == sorted(
        ["tvm_test_matmul_relu", "library_alternative", "library_gemm_gemm_relu"])
    choice = next(iter(only_launcher(prog).choices.values()))
    assert choice.kernel.name == min(quick, key=lambda t: t.time_ms).kernel_name  # chosen by measurement


def test_untuned_selection_times_the_first_candidates_alternates(db_path, generators, monkeypatch):
    """A space that lists alternates to its default (the Triton GEMV's table): each is
    compiled, checked and timed beside the default; the fastest correct config is the
    choice, and the next compile finds it in the database."""
    import dataclasses

    def with_alternates(node, graph, options, device):
        if node.op != "fused":
            return []
        k = tg.TvmMatmul(node)
        k.space = dataclasses.replace(k.space, alternates=lambda p, d: (
            {"tile_m": 4, "vectorize": False}, {"tile_n": 64}, {"tile_m": 16}))   # tile_n 64: not valid vectorized
        return [k]

    generators()
    monkeypatch.setattr(contract, "GENERATORS", [("tvm", with_alternates)])
    g = tg.gemm_graph(48, 32, 40)
    prog, (x, w), out = run(g, Options(), (48, 32), (32, 40))
    torch.testing.assert_close(out, torch.relu(x @ w), rtol=1e-5, atol=1e-5)
    quick = [t for t in get_db().trials(origin="quick") if t.kernel_name == "tvm_test_matmul_relu"]
    assert sorted((t.config["tile_m"], t.config["vectorize"]) for t in quick) == [(4, False), (8, True), (16, True)]
    choice = next(iter(only_launcher(prog).choices.values()))
    fastest = min((t for t in get_db().trials(origin="quick") if t.status == "ok"), key=lambda t: t.time_ms)
    assert choice.kernel.name == fastest.kernel_name
    if choice.kernel.backend == "tvm":
        assert choice.config == fastest.config
    n = get_db().count()
    prog2, _, _ = run(g, Options(), (48, 32), (32, 40))
    assert next(iter(only_launcher(prog2).choices.values())).source == "database" and get_db().count() == n


def test_a_nearest_bucket_config_is_timed_beside_the_alternates(db_path, generators, monkeypatch):
    """A space with alternates and a nearest bucket in the database (same structure, another
    shape): the nearest config first, then the default and each valid alternate, each once."""
    import dataclasses

    def with_alternates(node, graph, options, device):
        if node.op != "fused":
            return []
        k = tg.TvmMatmul(node)
        k.space = dataclasses.replace(k.space, alternates=lambda p, d: ({"tile_m": 4, "vectorize": False},))
        return [k]

    generators()
    monkeypatch.setattr(contract, "GENERATORS", [("tvm", with_alternates)])
    near = tg.TvmMatmul(tg.fused_node(tg.gemm_graph(64, 24, 30)))
    cfg = {"tile_m": 32, "tile_n": 4, "k_outer": True, "parallel": False, "vectorize": False, "unroll": False}
    get_db().record(Trial(CPU.key, software_key(), near.key(), near.name, near.backend, near.problem({}), cfg, "ok",
                          1e-4, origin="search", family=family_key(near, tg.fused_node(tg.gemm_graph(64, 24, 30)))))
    prog, (x, w), out = run(tg.gemm_graph(48, 24, 30), Options(), (48, 24), (24, 30))
    torch.testing.assert_close(out, torch.relu(x @ w), rtol=1e-5, atol=1e-5)
    timed = [t.config for t in get_db().trials(origin="quick") if t.kernel_name == near.name]
    assert timed[0] == cfg and len(timed) == 3
    assert sorted((c["tile_m"], c["vectorize"]) for c in timed[1:]) == [(4, False), (8, True)]
