"""The public API: braze.jit forms, torch.compile entry point, explain, BRAZE_DUMP, export path."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

import braze
from tools import hf_models


def test_jit_as_decorator_with_and_without_options():
    @braze.jit
    def f(x):
        return torch.nn.functional.gelu(x) * 2

    @braze.jit(backend="torch", strict=True)
    def g(x):
        return x.softmax(-1)

    x = torch.randn(4, 8)
    torch.testing.assert_close(f(x), torch.nn.functional.gelu(x) * 2)
    torch.testing.assert_close(g(x), x.softmax(-1))
    assert f.__name__ == "f"


def test_torch_compile_finds_braze_through_the_entry_point():
    # A fresh interpreter that never imports braze: the entry point must register the backend.
    code = ("import torch; m = torch.nn.Linear(4, 4).eval(); x = torch.randn(2, 4)\n"
            "with torch.no_grad():\n"
            "    y = torch.compile(m, backend='braze', options={'strict': True})(x)\n"
            "    assert torch.allclose(y, m(x), atol=1e-6)\n"
            "import sys; print('braze' in sys.modules and 'ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout


def test_explain_reports_passes_ir_and_kernels():
    model = hf_models.build("llama")
    ids = hf_models.inputs(2, 8)["input_ids"]
    report = braze.explain(model, ids, options={"strict": True})
    text = str(report)
    assert "pass normalize_views" in text and "final IR of" in text and "launches" in text
    d = report.to_dict()
    json.dumps(d)
    g = d["graphs"][0]
    assert [p["name"] for p in g["passes"]][:2] == ["dce", "normalize_views"]
    assert all(p["ir"].startswith("graph ") for p in g["passes"])
    assert g["kernels"] and {"name", "ops", "backend", "config", "config_source"} <= set(g["kernels"][0])


def test_braze_dump_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAZE_DUMP", str(tmp_path))
    fast = braze.jit(lambda x: (x + 1).relu(), strict=True)
    fast(torch.randn(3))
    assert any(p.suffix == ".ir" for p in tmp_path.iterdir())


def test_export_path_compiles_and_matches():
    from braze.compiler.capture import capture_export
    from braze.compiler.driver import compile_graph
    from braze.compiler.lower import lower
    from braze.config import Options

    model = hf_models.build("llama")
    inp = hf_models.inputs(2, 12)
    seq = torch.export.Dim("seq", min=2, max=128)
    cap, ep = capture_export(model, (), {"input_ids": inp["input_ids"], "use_cache": False},
                             dynamic_shapes={"input_ids": {1: seq}, "use_cache": None})
    graph, spec = lower(cap.gm, cap.placeholders, name="llama")
    assert len(graph.inputs) == 1 and graph.inputs[0].type.shape[1].__class__.__name__ == "Sym"
    prog = compile_graph(graph, Options(strict=True))
    for n in (12, 20):
        ids = hf_models.inputs(2, n, seed=n)["input_ids"]
        with torch.no_grad():
            ref = model(input_ids=ids, use_cache=False).logits
        out = prog(ids)[0]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_braze_profile_times_every_node_of_a_plan(monkeypatch):
    from braze.compiler import profile

    monkeypatch.setenv("BRAZE_PROFILE", "1")
    profile.reset()
    fast = braze.jit(lambda x, w: torch.nn.functional.linear(x, w).relu() + 1, strict=True)
    x, w = torch.randn(5, 8), torch.randn(6, 8)
    for _ in range(3):
        torch.testing.assert_close(fast(x, w), torch.nn.functional.linear(x, w).relu() + 1)
    rows = profile.totals()
    assert rows and all(calls == 3 and seconds > 0 for calls, seconds in rows.values()), rows
    assert profile.table().splitlines()[0].split()[:2] == ["ms", "total"]


def test_options_refuse_wrong_names_and_types_naming_them():
    import pytest

    with pytest.raises(TypeError, match="unknown braze option.*nope"):
        braze.Options.from_dict({"nope": 1})
    with pytest.raises(TypeError, match=r"fuse='yes': expected True or False, got str"):
        braze.Options(fuse="yes")
    with pytest.raises(TypeError, match=r"cuda_graphs='x'"):
        braze.Options(cuda_graphs="x")
    with pytest.raises(ValueError, match="backend='cuda'"):
        braze.Options(backend="cuda")
    import pathlib

    assert braze.Options(tuning_db=pathlib.Path("/tmp/t.db")).tuning_db == "/tmp/t.db"
    assert braze.Options(disable=["fuse"]).disable == ("fuse",)


def test_no_grad_and_inference_mode_compile_the_same_plan():
    from braze.compiler.backend import make_backend
    from braze.config import Options

    model = hf_models.build("bert")
    inp = hf_models.inputs(2, 16, padding="right")
    plans = []
    for ctx in (torch.no_grad, torch.inference_mode):
        torch._dynamo.reset()
        reports: list = []
        with ctx():
            torch.compile(model, backend=make_backend(Options(strict=True), reports))(**inp)
        assert len(reports) == 1
        ir = reports[0].final_ir.split("{", 1)[1]            # the graph's name differs, nothing else
        plans.append((ir, [(k.name, k.backend) for k in reports[0].kernels]))
    assert plans[0] == plans[1]


def test_graph_whose_symbolic_capture_fails_compiles_per_shape(monkeypatch):
    """Some torch releases cannot trace an op on symbolic shapes (2.11's CUDA SDPA);
    braze then compiles the graph for each concrete shape instead of running it eagerly."""
    from braze.compiler import backend as backend_mod
    from braze.compiler.backend import make_backend
    from braze.config import Options

    real = backend_mod.capture_dynamo
    static_shapes = []

    def fails_on_symbols(gm, example_inputs, static=False):
        if not static and backend_mod._symbolic(example_inputs):
            raise RuntimeError("SymIntArrayRef expected to contain only concrete integers")
        if static:
            static_shapes.append(tuple(x.shape[0] if isinstance(x, torch.Tensor) else x for x in example_inputs))
        return real(gm, example_inputs, static=static)

    monkeypatch.setattr(backend_mod, "capture_dynamo", fails_on_symbols)
    w = torch.randn(16, 8)

    def f(x, n: int):
        return torch.nn.functional.silu(x @ w.t()).sum(-1) * n + x.shape[0]

    reports: list = []
    fast = torch.compile(f, backend=make_backend(Options(strict=True), reports), dynamic=True)
    with torch.no_grad():
        for rows, n in ((3, 2), (5, 4), (3, 2), (7, 3)):
            x = torch.randn(rows, 8)
            torch.testing.assert_close(fast(x, n), f(x, n))
    assert len(reports) == 1 and reports[0].fallback is None
    assert any("compiled per input shape" in note for note in reports[0].notes)
    assert reports[0].kernels, "the report shows the compiled kernels"
    assert len(static_shapes) == 3, static_shapes       # once per shape; (3, 2) is reused
    monkeypatch.setattr(backend_mod.PerShapeEntry, "MAX_SHAPES", 3)
    with torch.no_grad():
        x = torch.randn(9, 8)
        torch.testing.assert_close(fast(x, 1), f(x, 1))   # a fourth shape: eager, still right
    assert len(static_shapes) == 3 and "more than 3 input shapes" in reports[0].fallback
