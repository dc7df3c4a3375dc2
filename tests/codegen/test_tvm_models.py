"""Whole models and programs through ``backend="tvm"``.

Two kinds of test:

- models from small configs compiled with braze's own pipeline equal eager
  always; TVM kernels are asserted to have run exactly when the optimised
  graph holds fused groups (so these become kernel tests once the fusion
  pass lands);
- the same models with ``greedy_fuse`` appended to the pipeline (a
  stand-in for the fusion pass, accepting what the TVM checker accepts),
  so that TVM kernels run inside real programs now, through the generator
  registry, the launchers and the runtime plan.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("tvm")
pytest.importorskip("transformers")

import braze  # noqa: E402
from braze.compiler import driver  # noqa: E402
from tools import hf_models  # noqa: E402
from braze.compiler.backend import make_backend  # noqa: E402
from braze.compiler.codegen.tvm import kernel as tvm_kernel  # noqa: E402
from tools.tvm_greedy import greedy_fuse  # noqa: E402
from braze.compiler.codegen.tvm.support import supports  # noqa: E402
from braze.config import Options  # noqa: E402
from braze.ir.fused import subgraph_of  # noqa: E402
from braze.passes import Pass  # noqa: E402

FAMILIES = ["gpt2", "llama", "bert"]


def _run(model, family, inp):
    with torch.no_grad():
        out = model(**inp) if family == "bert" else model(**inp, use_cache=False)
    return out[0]


def _fused_count(reports) -> int:
    return sum(r.final_ir.count("= fused(") for r in reports)


def _check(model, compiled, family, seqs, reports, greedy):
    before, fallbacks = tvm_kernel.STATS["runners"], tvm_kernel.STATS["fallbacks"]
    for seq in seqs:
        inp = hf_models.inputs(batch=2, seq=seq, padding="right")
        ref = _run(model, family, inp)
        out = _run(compiled, family, inp)
        m = inp["attention_mask"].bool()
        err = float((out - ref)[m].abs().max() / ref[m].abs().max())
        assert err < 1e-5, f"{family}: max relative error {err:.2e} at seq {seq}"
    fused = _fused_count(reports)
    used = tvm_kernel.STATS["runners"] - before
    if fused:
        assert used > 0, "the graph has fused groups but no TVM kernel ran"
    else:
        assert used == 0
    if greedy:
        assert fused >= 4, f"the greedy grouping formed only {fused} groups"
    assert tvm_kernel.STATS["fallbacks"] == fallbacks, "a TVM kernel failed to build (see the warning)"


@pytest.fixture(autouse=True)
def _own_database(tmp_path, monkeypatch):
    """A database of this test's own: records another test of the worker left for the same
    groups (where the op-by-op call or a library candidate won) would be exact hits."""
    monkeypatch.setenv("BRAZE_TUNING_DB", str(tmp_path / "tuning.db"))


@pytest.mark.parametrize("family", FAMILIES)
def test_model_with_braze_pipeline(family):
    """braze's own pipeline: equal to eager; TVM kernels run iff it fused groups (the first
    candidate chosen: the quick selection could time the op-by-op library call faster for
    every group of this small model on a loaded machine, and no TVM kernel would run)."""
    model = hf_models.build(family)
    reports: list = []
    opts = Options(backend="tvm", strict=True, extra={"select": "first"})
    compiled = torch.compile(model, backend=make_backend(opts, reports))
    _check(model, compiled, family, (13,), reports, greedy=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_model_with_greedy_groups(family, monkeypatch):
    """Greedy groups appended to the pipeline: TVM kernels run in the program.
    GPT-2 runs at a second sequence length (Dynamo recompiles with symbolic
    dims: shape-generic TVM kernels)."""
    monkeypatch.setattr(driver, "PIPELINE", list(driver.PIPELINE) + [Pass("test_greedy_fuse", greedy_fuse)])
    model = hf_models.build(family)
    reports: list = []
    opts = Options(backend="tvm", strict=True, extra={"select": "first"})   # TVM kernels, as above
    compiled = torch.compile(model, backend=make_backend(opts, reports))
    _check(model, compiled, family, (16, 11) if family == "gpt2" else (13,), reports, greedy=True)


def test_jit_routes_groups_to_tvm(monkeypatch):
    """``braze.jit(backend="tvm")`` routes fused groups to TVM kernels."""
    monkeypatch.setattr(driver, "PIPELINE", list(driver.PIPELINE) + [Pass("test_greedy_fuse", greedy_fuse)])
    model = hf_models.build("llama", num_hidden_layers=1)
    inp = hf_models.inputs(batch=1, seq=8)
    fast = braze.jit(model, backend="tvm")
    before = tvm_kernel.STATS["runners"]
    with torch.no_grad():
        out = fast(**inp, use_cache=False).logits
        ref = model(**inp, use_cache=False).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert tvm_kernel.STATS["runners"] > before


def test_checker_declines_cleanly():
    from braze.compiler.codegen import supported
    from braze.ir import Builder

    b = Builder()
    x = b.input("x", (4, 8))
    y = b.call("cumsum", x, 1)                      # a scan: not a TVM op
    g = b.graph([y])
    _, sub, _ = subgraph_of(g, list(g.compute_nodes))
    assert not supports("pointwise", sub, "cpu")
    assert not supported("pointwise", sub, "cpu", backend="tvm")
    b = Builder()
    x = b.input("x", (4, 8))
    s = b.call("sum", x, [0], overload="dim_IntList")  # not the last dim
    g = b.graph([s])
    _, sub, _ = subgraph_of(g, list(g.compute_nodes))
    assert not supports("reduction", sub, "cpu")
    assert not supports("gemm", sub, "cpu")
    assert not supports("pointwise", sub, "tpu")
