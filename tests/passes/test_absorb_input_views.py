"""absorb_input_views: the view chains a pointwise / reduction group's operands go through
move inside the group (Triton and TVM targets), so the plain call runs no host view ops; the
results stay those of the eager function (float64 reference, fresh random inputs)."""
from __future__ import annotations

import pytest
import torch

import braze
from braze.ir import parse_graph
from braze.passes.absorb_input_views import absorb_input_views
from braze.passes.context import PassContext

VIEW_OPS = {"reshape", "permute", "expand", "slice", "select"}


def _rotary(B, S, Hq, Hkv, D):
    def rotate_half(x):
        return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)

    def fn(q, k, cos, sin):   # as HF Llama: view to heads, transpose, unsqueeze cos / sin
        qh = q.view(B, S, Hq, D).transpose(1, 2)
        kh = k.view(B, S, Hkv, D).transpose(1, 2)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        return qh * c + rotate_half(qh) * s, kh * c + rotate_half(kh) * s
    return fn


def _final(fn, *args, **options):
    rep = braze.explain(fn, *args, options=dict(options))
    (g,) = rep.graphs
    return parse_graph(g.final_ir), rep


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("BRAZE_SELECT", "first")   # the Triton kernel, not the quicker library candidate


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_rotary_reads_its_inputs_directly_and_matches_float64(interpret, dtype, tol):
    B, S, Hq, Hkv, D = 2, 6, 4, 2, 16
    fn = _rotary(B, S, Hq, Hkv, D)
    g = torch.Generator().manual_seed(7)
    args = [torch.randn(*s, generator=g).to(dtype) for s in ((B, S, Hq * D), (B, S, Hkv * D), (B, S, D), (B, S, D))]
    graph, rep = _final(fn, *args, backend="triton")
    outer = [n for n in graph.compute_nodes if n.op != "fused"]
    assert not outer, graph                    # no view runs on the host
    assert all(v.node.op == "input" for n in graph.compute_nodes for v in n.inputs)
    assert all(k.backend == "triton" for k in rep.kernels) and len(rep.kernels) == 2
    got = braze.jit(fn, backend="triton")(*args)
    want = fn(*[a.double() for a in args])
    for o, w in zip(got, want):
        assert o.dtype == dtype and o.shape == w.shape
        torch.testing.assert_close(o.double(), w, rtol=tol, atol=tol)


def test_reduction_over_a_transposed_operand(interpret):
    def fn(x):               # softmax over the transposed last two dims of a strided input
        return torch.softmax(x.transpose(-1, -2) * 0.5, dim=-1)

    x = torch.randn(3, 20, 12)[:, ::2]          # a strided input: the kernel's strides are the caller's
    graph, _ = _final(fn, x, backend="triton")
    (f,) = [n for n in graph.compute_nodes if n.op == "fused"]
    assert f.inputs[0].node.op == "input" and not (set(n.op for n in graph.compute_nodes) & VIEW_OPS)
    torch.testing.assert_close(braze.jit(fn, backend="triton")(x).double(), fn(x.double()), rtol=1e-5, atol=1e-6)


def test_a_view_also_returned_stays_outside_for_its_other_reader(interpret):
    def fn(x):
        t = x.transpose(0, 1)
        return t, torch.relu(t) + 1

    x = torch.randn(5, 7)
    graph, _ = _final(fn, x, backend="triton")
    (f,) = [n for n in graph.compute_nodes if n.op == "fused"]
    assert f.inputs[0].node.op == "input"             # the group reads x through its own permute
    assert any(n.op == "permute" for n in graph.compute_nodes)   # the returned view is still made
    t, y = braze.jit(fn, backend="triton")(x)
    torch.testing.assert_close(t, x.t())
    torch.testing.assert_close(y, torch.relu(x.t()) + 1)


def _fused_graph():
    B, S, H, D = 1, 3, 2, 8
    fn = _rotary(B, S, H, H, D)
    args = [torch.randn(B, S, H * D), torch.randn(B, S, H * D), torch.randn(B, S, D), torch.randn(B, S, D)]
    rep = braze.explain(fn, *args, options=dict(disable=("absorb_input_views",), backend="triton"))
    return parse_graph(rep.graphs[0].final_ir)


def test_declined_by_the_generator_or_the_torch_backend_nothing_changes(interpret):
    g = _fused_graph()
    assert any(n.op in VIEW_OPS for n in g.compute_nodes)
    no = PassContext(device="cuda:0", supports=lambda kind, sub: False)
    assert absorb_input_views(g, no) is g
    torch_only = PassContext(braze.Options(backend="torch"), device="cpu")
    assert absorb_input_views(g, torch_only) is g
    for device in ("cuda:0", "cpu"):                 # Triton's templates, TVM's on the CPU
        out = absorb_input_views(g, PassContext(device=device))
        assert not any(n.op in VIEW_OPS for n in out.compute_nodes)
        assert len([n for n in out.compute_nodes if n.op == "fused"]) == 2


def test_tvm_kernels_read_the_views_inside_and_match_float64(monkeypatch):
    """On the CPU the TVM templates take the absorbed rotary groups: no view runs on the host,
    TVM kernels compute them, the results are the float64 function's."""
    pytest.importorskip("tvm", reason="TVM kernels")
    monkeypatch.setenv("BRAZE_SELECT", "first")
    B, S, Hq, Hkv, D = 2, 6, 4, 2, 16
    fn = _rotary(B, S, Hq, Hkv, D)
    g = torch.Generator().manual_seed(3)
    args = [torch.randn(*s, generator=g) for s in ((B, S, Hq * D), (B, S, Hkv * D), (B, S, D), (B, S, D))]
    graph, rep = _final(fn, *args, backend="tvm")
    assert not [n for n in graph.compute_nodes if n.op != "fused"], graph
    assert [k.backend for k in rep.kernels] == ["tvm", "tvm"]
    got = braze.jit(fn, backend="tvm")(*args)
    for o, w in zip(got, fn(*[a.double() for a in args])):
        torch.testing.assert_close(o.double(), w, rtol=1e-5, atol=1e-5)


def test_dynamic_shapes_keep_their_symbols_bound(interpret):
    """A transposed, sliced operand of a dynamic length: the group reads x and y directly,
    its symbol bound by y's size, and one compiled program serves every length."""
    def fn(x, y):
        return torch.relu(x.transpose(0, 1)[1:]) * y.unsqueeze(1)

    def make(n):
        x, y = torch.randn(3, n + 1), torch.randn(n)
        torch._dynamo.maybe_mark_dynamic(x, 1)
        torch._dynamo.maybe_mark_dynamic(y, 0)
        return x, y

    graph, _ = _final(fn, *make(9), backend="triton")
    (f,) = graph.compute_nodes
    assert f.op == "fused" and all(v.node.op == "input" for v in f.inputs), graph
    inside = {n.op for n in f.attr("graph").compute_nodes}
    assert {"permute", "slice"} <= inside, inside
    assert not isinstance(f.types[0].shape[0], int)          # the length stayed a symbol
    compiled = braze.jit(fn, backend="triton")
    for n in (9, 13, 16):
        x, y = make(n)
        torch.testing.assert_close(compiled(x, y), fn(x, y))
