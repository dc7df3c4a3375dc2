"""cuBLAS workspaces around braze's CUDA graph captures (``autotune/cublas_workspace.py``).

On the CPU the CUDA calls are stubbed: ``release`` clears only outside a capture,
``capture`` releases before and after its body, the warm-up side stream is one a
device, and each capture braze makes goes through ``capture``. On a GPU
(``-m gpu``): timing a library GEMM from CUDA graphs leaves no workspace behind."""
import ast
import pathlib

import pytest
import torch

from braze.autotune import cublas_workspace

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_cuda(monkeypatch):
    calls = []
    state = {"capturing": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: state["capturing"])
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append("clear"), raising=False)
    return calls, state


def test_release_clears_outside_a_capture_only(fake_cuda, monkeypatch):
    calls, state = fake_cuda
    cublas_workspace.release()
    assert calls == ["clear"]
    state["capturing"] = True
    cublas_workspace.release()   # a capture's GEMMs use the workspace it records
    assert calls == ["clear"]
    state["capturing"] = False
    monkeypatch.setenv("BRAZE_CUBLAS_RELEASE", "0")   # a process with CUDA graphs of its own
    cublas_workspace.release()
    assert calls == ["clear"]


def test_capture_releases_before_and_after_its_body(fake_cuda):
    calls, _ = fake_cuda
    with cublas_workspace.capture():
        calls.append("body")
    assert calls == ["clear", "body", "clear"]
    with pytest.raises(RuntimeError):
        with cublas_workspace.capture():
            raise RuntimeError("capture failed")
    assert calls[-1] == "clear"


def test_one_side_stream_a_device(monkeypatch):
    made = []

    class Stream:
        def __init__(self, device=None):
            made.append(device)

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cublas_workspace, "_SIDE", {})
    a, b = cublas_workspace.side_stream(), cublas_workspace.side_stream("cuda:0")
    c = cublas_workspace.side_stream("cuda:1")
    assert a is b and c is not a and made == [0, 1]


def test_every_capture_in_braze_goes_through_capture():
    """Each ``with torch.cuda.graph(...)`` in the package is in the same ``with`` as
    ``cublas_workspace.capture()``: a graph that recorded a shared workspace would
    replay into freed memory once ``release`` runs."""
    found = 0
    for folder in ("autotune", "compiler", "passes", "ir", "braze", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "capture_begin(" not in text and "make_graphed_callables(" not in text, path
            tree = ast.parse(text)
            for node in ast.walk(tree):
                if not isinstance(node, ast.With):
                    continue
                items = [ast.unparse(i.context_expr) for i in node.items]
                if any(i.startswith("torch.cuda.graph(") for i in items):
                    found += 1
                    assert "cublas_workspace.capture()" in items, f"{path}:{node.lineno}: {items}"
    assert found >= 3


@pytest.mark.gpu
def test_cuda_graph_timing_of_a_library_gemm_leaves_no_workspace():
    """Before the fix every timing of a library GEMM warmed up on a new stream and kept its
    32 MiB workspace (0.64 GB after compiling a batch-8 decode step on an H200)."""
    from braze.autotune.measure import MeasureSpec, time_callable

    x = torch.randn(512, 2048, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
    spec = MeasureSpec()
    time_callable(lambda: torch.mm(x, w), "cuda", spec, 50 << 20)   # the current stream's own workspace
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(4):
        ms, st = time_callable(lambda: torch.mm(x, w), "cuda", spec, 50 << 20)
        assert st["method"].startswith("cuda-graph"), st
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < 8 << 20, (before, torch.cuda.memory_allocated())


@pytest.mark.gpu
def test_a_captured_gemm_replays_right_after_release_and_reuse():
    """The safety half: a graph captured through ``capture()`` keeps its workspace in its own
    pool, so freeing every workspace and filling fresh allocations on the same streams with
    garbage does not change what its replay computes."""
    x = torch.randn(256, 1024, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    want = torch.mm(x, w)
    out = torch.empty_like(want)
    side = cublas_workspace.side_stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.mm(x, w, out=out)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with cublas_workspace.capture(), torch.cuda.graph(g):
        torch.mm(x, w, out=out)
    cublas_workspace.release()
    junk = [torch.full((8 << 20,), float("nan"), device="cuda") for _ in range(8)]   # reuse freed blocks
    torch.mm(x, w)            # a new workspace for the current stream
    out.zero_()
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want)
    assert all(bool(j.isnan().all()) for j in junk)
