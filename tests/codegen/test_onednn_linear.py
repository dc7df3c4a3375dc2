"""oneDNN linear with its epilogue as a post-op (``codegen/onednn_linear.py``): which
groups match, each form against the float64 reference, the packed-weight cache, and
the candidate in a compiled model."""
from __future__ import annotations

import math

import pytest
import torch

from braze.autotune.space import DeviceInfo
from braze.compiler.codegen import onednn_linear as od
from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, reference

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
CPU = DeviceInfo("cpu", "test cpu", (0, 0), 2)
M, K, N = 7, 32, 48


def _gpt2_gelu(b, p):
    """NewGELU as GPT-2 writes it (transformers' activations.py), op by op."""
    half = b.call("mul", p, 0.5, overload="Tensor")
    cube = b.call("mul", b.call("pow", p, 3.0, overload="Tensor_Scalar"), 0.044715, overload="Tensor")
    inner = b.call("mul", b.call("add", p, cube, overload="Tensor"), math.sqrt(2.0 / math.pi), overload="Tensor")
    return b.call("mul", half, b.call("add", b.call("tanh", inner), 1.0, overload="Tensor"), overload="Tensor")


def _group(epilogue: str, layout: str = "kn", bias: bool = True, reshape: bool = True):
    """A GEMM group: ``addmm(b, x, w)`` (GPT-2's Conv1D, ``w`` [K, N]) or, with layout "nk",
    ``x @ permute(w)`` (nn.Linear), then ``epilogue``."""
    b = Builder()
    x = b.input("x", (M, K))
    w = b.constant(torch.randn((K, N) if layout == "kn" else (N, K)), "w")   # a parameter: packed once
    wv = w if layout == "kn" else b.call("permute", w, (1, 0))
    if bias:
        p = b.call("addmm", b.input("bias", (N,)), x, wv)
    else:
        p = b.call("mm", x, wv)
    if reshape:
        p = b.call("reshape", p, (-1, N))
    if epilogue == "none":
        out = p
    elif epilogue == "gelu":
        out = b.call("gelu", p)
    elif epilogue in ("tanh", "relu"):
        out = b.call(epilogue, p)
    elif epilogue == "gpt2_gelu":
        out = _gpt2_gelu(b, p)
    elif epilogue in ("add", "add_first"):
        r = b.input("r", (M, N))
        out = b.call("add", *((r, p) if epilogue == "add_first" else (p, r)), overload="Tensor")
    elif epilogue == "gelu_wrong_constant":   # 0.0447 instead of 0.044715: not GELU
        half = b.call("mul", p, 0.5, overload="Tensor")
        cube = b.call("mul", b.call("pow", p, 3.0, overload="Tensor_Scalar"), 0.0447, overload="Tensor")
        inner = b.call("mul", b.call("add", p, cube, overload="Tensor"), math.sqrt(2.0 / math.pi), overload="Tensor")
        out = b.call("mul", half, b.call("add", b.call("tanh", inner), 1.0, overload="Tensor"), overload="Tensor")
    elif epilogue == "two_ops":   # relu then a scale: no single post-op
        out = b.call("mul", b.call("relu", p), 2.0, overload="Tensor")
    else:
        raise AssertionError(epilogue)
    return fused_node(b, [out], "gemm")


def _inputs(node, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(v.type.shape), generator=g) for v in node.inputs]


@pytest.mark.parametrize("epilogue,layout,bias,reshape", [
    ("none", "kn", True, False), ("none", "nk", False, False), ("add", "kn", True, True),
    ("add_first", "nk", True, True), ("gelu", "kn", True, True), ("gpt2_gelu", "kn", True, True),
    ("tanh", "kn", True, False), ("relu", "nk", True, False),
])
def test_each_form_equals_the_group(epilogue, layout, bias, reshape):
    node = _group(epilogue, layout, bias, reshape)
    (k,) = od.generate(node, node.attr("graph"), None, CPU)
    assert k.backend == "library"
    want_attr = {"add_first": "add", "gpt2_gelu": "gelu"}.get(epilogue, epilogue)
    assert k.form.attr == want_attr and k.form.w_nk == (layout == "nk")
    for seed in (0, 1):   # fresh inputs: fresh weights, each packed
        xs = _inputs(node, seed)
        out = k.compile({})(*xs)
        (want,) = reference(node, xs)
        assert out.shape == want.shape and out.dtype == torch.float32
        torch.testing.assert_close(out.double(), want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("epilogue", ["gelu_wrong_constant", "two_ops"])
def test_epilogues_without_one_post_op_get_no_candidate(epilogue):
    node = _group(epilogue)
    assert od.generate(node, node.attr("graph"), None, CPU) == []


def test_a_weight_computed_per_call_gets_no_candidate():
    """B an activation (not a constant): it would be packed again every call."""
    b = Builder()
    x, y = b.input("x", (M, K)), b.input("y", (K, N))
    node = fused_node(b, [b.call("mm", x, y)], "gemm")
    assert od.match(node.attr("graph")) is not None
    assert od.generate(node, node.attr("graph"), None, CPU) == []


def test_only_float32_groups_on_the_cpu():
    b = Builder()
    x, w = b.input("x", (M, K), torch.bfloat16), b.constant(torch.randn(K, N, dtype=torch.bfloat16), "w")
    node = fused_node(b, [b.call("mm", x, w)], "gemm")
    assert od.match(node.attr("graph")) is None            # the dtype declines it, not the weight
    assert od.generate(node, node.attr("graph"), None, CPU) == []
    node = _group("none")
    cuda = DeviceInfo("cuda", "gpu", (9, 0), 132)
    assert od.generate(node, node.attr("graph"), None, cuda) == []


def test_switched_off_by_the_environment(monkeypatch):
    node = _group("gelu")
    monkeypatch.setenv("BRAZE_ONEDNN", "0")
    assert od.generate(node, node.attr("graph"), None, CPU) == []


def test_a_weight_is_packed_once_and_again_after_an_in_place_update(monkeypatch):
    node = _group("none", bias=False, reshape=False)
    (k,) = od.generate(node, node.attr("graph"), None, CPU)
    run = k.compile({})
    x, w = _inputs(node)
    packs = []
    real = od._reorder

    def counted(w_nk, rows):
        packs.append(rows)
        return real(w_nk, rows)

    monkeypatch.setattr(od, "_reorder", counted)
    for _ in range(3):
        torch.testing.assert_close(run(x, w), x @ w)
    assert len(packs) == 1
    w.mul_(-2.0)                       # in place: the version moves, the packing follows
    torch.testing.assert_close(run(x, w), x @ w)
    assert len(packs) == 2
    w2 = w.clone()                     # another tensor, other bytes
    torch.testing.assert_close(run(x, w2), x @ w2)
    assert len(packs) == 3
    torch.testing.assert_close(run(x[:0], w), x[:0] @ w)   # no rows
    xt = torch.randn(K, M).t()                             # a strided activation
    torch.testing.assert_close(run(xt, w), xt @ w)


def test_gpt2_mlp_runs_through_onednn_in_a_compiled_model(tmp_path, monkeypatch):
    """A GPT-2 block compiled for the CPU: the quick selection times the oneDNN candidate (a
    fresh database records it), and the outputs equal eager's whichever candidates won."""
    import braze
    from tools import hf_models

    monkeypatch.setenv("BRAZE_TUNING_DB", str(tmp_path / "t.db"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")   # CPU candidates (TVM, library) are timed, not interpreted
    model = hf_models.build("gpt2", **dict(hf_models.GPT2_SMALL, n_layer=1, n_embd=64, n_head=2,
                                             vocab_size=100))
    inp = dict(hf_models.inputs(batch=1, seq=16, vocab_size=100), use_cache=False)
    with torch.inference_mode():
        want = model(**inp)[0]
        got = braze.jit(model)(**inp)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    from braze.autotune.db import get_db

    timed = {t.kernel_name for t in get_db().trials() if t.status == "ok"}   # the quick selection's
    assert "library_onednn_linear" in timed, timed
