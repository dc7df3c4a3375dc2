"""Structural tests of the canonicalisation passes: this graph in, exactly this graph out."""
from __future__ import annotations

import pytest
import torch

from braze.config import Options
from braze.ir import Builder, interpret, print_graph, verify
from braze.passes import PIPELINE, PassError, run_pipeline
from braze.passes.cse import cse
from braze.passes.dce import dce
from braze.passes.fold_constants import fold_constants
from braze.passes.normalize_views import normalize_views
from braze.passes.runner import Pass


def _ops(g):
    return [n.op for n in g.compute_nodes]


def test_dce_drops_unused_nodes_and_constants():
    b = Builder()
    x = b.input("x", (4,))
    b.call("exp", x)  # unused
    b.constant(torch.ones(4), "unused")
    y = b.call("neg", x)
    g = dce(b.graph([y]))
    assert _ops(g) == ["neg"] and g.constants == {}


def test_cse_merges_identical_nodes_only():
    b = Builder()
    x = b.input("x", (4,))
    a1 = b.call("mul", x, 2.0, overload="Tensor")
    a2 = b.call("mul", x, 2.0, overload="Tensor")
    a3 = b.call("mul", x, 3.0, overload="Tensor")
    s = b.call("add", b.call("add", a1, a2, overload="Tensor"), a3, overload="Tensor")
    g = cse(b.graph([s]))
    assert _ops(g) == ["mul", "mul", "add", "add"]
    xin = torch.randn(4)
    torch.testing.assert_close(interpret(g, xin)[0], xin * 7)


def test_cse_keeps_random_ops_apart():
    b = Builder()
    x = b.input("x", (4,))
    r1 = b.call("rand_like", x)
    r2 = b.call("rand_like", x)
    g = cse(b.graph([b.call("add", r1, r2, overload="Tensor")]))
    assert _ops(g).count("rand_like") == 2


def test_fold_constants_folds_weight_only_math_but_not_views_or_big_expansions():
    b = Builder()
    x = b.input("x", (2, 8))
    w1, w2 = b.constant(torch.randn(8, 3), "w1"), b.constant(torch.randn(8, 5), "w2")
    wcat = b.call("cat", (w1, w2), 1)                       # folds: same size out as in
    wt = b.call("permute", w1, (1, 0))                       # a view: stays
    big = b.call("expand", b.constant(torch.randn(1, 8), "row"), (4096, 8))  # would store 4096x: stays
    y = b.call("mm", x, wcat)
    g = fold_constants(b.graph([y, wt, big]))
    assert sorted(_ops(g)) == ["expand", "mm", "permute"]
    assert any(k.startswith("folded.") for k in g.constants)
    xin = torch.randn(2, 8)
    ref = xin @ torch.cat([b.constants["w1"], b.constants["w2"]], 1)
    torch.testing.assert_close(interpret(g, xin)[0], ref)


def test_normalize_views_spells_layout_in_few_ops():
    b = Builder()
    x = b.input("x", ("s0", 4, 6))
    a = b.call("view", x, (b.input("y", ("s0",)).type.shape[0], 24))
    a = b.call("unsqueeze", a, 0)
    a = b.call("squeeze", a, (0,), overload="dims")
    t = b.call("transpose", x, 1, 2, overload="int")
    t = b.call("transpose", t, 1, 2, overload="int")       # back to identity
    c = b.call("clone", t)
    d = b.call("_to_copy", c, dtype=torch.float32)          # same dtype: a no-op
    e = b.call("_to_copy", d, dtype=torch.bfloat16, layout=torch.strided)
    g = normalize_views(b.graph([a, e]))
    verify(g, types=True)
    assert _ops(g) == ["reshape", "_to_copy"], print_graph(g)
    cast = g.compute_nodes[-1]
    assert cast.kwargs == (("dtype", torch.bfloat16),) and cast.args[0] == g.inputs[0].out()
    xin, yin = torch.randn(3, 4, 6), torch.randn(3)
    out = interpret(g, xin, yin)
    torch.testing.assert_close(out[0], xin.reshape(3, 24))
    torch.testing.assert_close(out[1], xin.bfloat16())


def test_permute_chains_compose():
    b = Builder()
    x = b.input("x", (2, 3, 4))
    p = b.call("permute", x, (2, 0, 1))
    q = b.call("t", b.call("reshape", b.call("permute", p, (1, 2, 0)), (6, 4)))
    g = normalize_views(b.graph([q]))
    assert _ops(g) == ["reshape", "permute"]


def test_runner_names_the_failing_pass_and_verifies():
    b = Builder()
    x = b.input("x", (4,))
    g = b.graph([b.call("neg", x)])

    def broken(graph, options):
        raise ValueError("boom")

    def bad_output(graph, options):
        from dataclasses import replace

        return replace(graph, outputs=(graph.outputs[0], graph.nodes[0].out(1)))

    with pytest.raises(PassError, match="pass 'broken' failed: ValueError: boom"):
        run_pipeline(g, [Pass("broken", broken)], Options())
    with pytest.raises(PassError, match="pass 'bad' failed: its result does not verify"):
        run_pipeline(g, [Pass("bad", bad_output)], Options())
    # a report keeps the IR of the last pass that ran, also when a later one fails
    from braze.compiler.report import GraphReport

    report = GraphReport("g")
    with pytest.raises(PassError):
        run_pipeline(g, [Pass("dce", dce), Pass("broken", broken)], Options(), report)
    assert [p.name for p in report.passes] == ["dce"] and report.final_ir.startswith("graph ")
    report = GraphReport("g")
    run_pipeline(g, [Pass("dce", dce), Pass("cse", cse)], Options(), report)
    assert report.passes[0].ir == "" and report.final_ir == print_graph(run_pipeline(g, [], Options()))


def test_dump_writes_ir_after_every_pass(tmp_path):
    b = Builder()
    x = b.input("x", (4,))
    g = b.graph([b.call("neg", b.call("alias", x))], name="dumped")
    run_pipeline(g, PIPELINE, Options(dump=str(tmp_path)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "dumped.00.input.ir"
    assert [f.split(".")[2] for f in files[1:]] == [p.name for p in PIPELINE]
    assert "alias" not in (tmp_path / files[-1]).read_text()
