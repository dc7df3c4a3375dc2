"""Bad input gives a clear error or a correct recompilation, never a wrong result."""
from __future__ import annotations

import pytest
import torch

import braze
from braze.compiler.capture import capture_dynamo  # noqa: F401 - import check
from braze.compiler.driver import compile_graph
from braze.config import Options
from braze.ir import BindError, Builder


def _program():
    b = Builder()
    x = b.input("x", ("s0", 8))
    w = b.constant(torch.randn(8, 4), "w")
    y = b.call("relu", b.call("mm", x, w))
    return compile_graph(b.graph([y], name="prog"), Options())


def test_program_rejects_wrong_dtype_rank_device_and_non_tensor():
    prog = _program()
    good = torch.randn(5, 8)
    torch.testing.assert_close(prog(good)[0], torch.relu(good @ prog.graph.constants["w"]))
    with pytest.raises(BindError, match=r"input 'x': expected dtype torch.float32, got torch.float64"):
        prog(good.double())
    with pytest.raises(BindError, match=r"input 'x': expected rank 2 \(f32\[s0, 8\]\), got shape \(5, 8, 1\)"):
        prog(good[..., None])
    with pytest.raises(BindError, match=r"input 'x': expected shape \[s0, 8\] = \[5, 8\], got \[5, 9\]"):
        prog(torch.randn(5, 9))
    with pytest.raises(BindError, match=r"input 'x': expected device cpu, got meta"):
        prog(torch.empty(5, 8, device="meta"))
    with pytest.raises(BindError, match=r"input 'x': expected a tensor f32\[s0, 8\], got list"):
        prog([[1.0] * 8] * 5)
    with pytest.raises(BindError, match="takes 1 tensor inputs, got 2"):
        prog(good, good)


def test_new_symbolic_size_gets_its_own_plan():
    prog = _program()
    for n in (3, 7, 3):
        x = torch.randn(n, 8)
        torch.testing.assert_close(prog(x)[0], torch.relu(x @ prog.graph.constants["w"]))
    assert prog.num_plans == 2


def f(x, y):
    return torch.softmax(x * 2 + y, dim=-1).sum(-1)


def test_jit_recompiles_for_new_dtype_rank_and_shape():
    fast = braze.jit(f, strict=True)
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(fast(x, y), f(x, y))
    torch.testing.assert_close(fast(x.double(), y.double()), f(x.double(), y.double()))
    x3, y3 = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(fast(x3, y3), f(x3, y3))
    torch.testing.assert_close(fast(torch.randn(4, 9), torch.randn(4, 9)).shape, torch.Size([4]))


def test_non_tensor_argument_is_recompiled_or_rejected_like_eager():
    from braze.compiler.backend import make_backend

    reports: list = []
    fast = torch.compile(f, backend=make_backend(Options(), reports))
    y = torch.randn(3, 5)
    x = torch.randn(3, 5)
    torch.testing.assert_close(fast(x, y), f(x, y))
    # a Python number where a tensor was traced: a new graph, with eager's semantics
    torch.testing.assert_close(fast(2.0, y), f(2.0, y))
    torch.testing.assert_close(fast(3, y), f(3, y))
    assert len(reports) >= 2
    for r in reports[1:]:  # the scalar graph either compiles or runs eagerly with its reason
        assert r.fallback is None or "SymFloat" in r.fallback or "symbolic" in r.fallback
    with pytest.raises(Exception, match="mul|unsupported|must be|Tensor|str"):
        fast("not a tensor", y)


def test_weights_changed_in_place_are_seen():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()).eval()
    fast = braze.jit(model, strict=True)
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x))
        model[0].weight.mul_(2.0)
        torch.testing.assert_close(fast(x), model(x))
        model[0].weight = torch.nn.Parameter(torch.randn(8, 8))
        torch.testing.assert_close(fast(x), model(x))


def test_python_scalars_that_change_between_calls_fall_back_not_crash():
    """A float and an int argument that both change make Dynamo pass them symbolic; the graph
    reads the float with ``.item()``, which braze cannot capture per shape: that signature runs
    eagerly (with a warning), and the results are eager's."""
    def f(x, s, n):
        return (x * s).pow(n)

    fast = braze.jit(f)
    for s, n in ((2.0, 2), (3.5, 3), (-1.25, 1)):
        x = torch.randn(5)
        torch.testing.assert_close(fast(x, s, n), f(x, s, n))


def test_a_merged_weight_rebound_through_data_is_seen():
    """``param.data = new`` keeps the Parameter object and its version: the storage
    address tells the compiled model (whose Q/K/V and gate/up weights are one
    concatenation made at compile time) that the weight changed."""
    from tools import hf_models

    model = hf_models.build("llama", initializer_range=0.2)
    fast = braze.jit(model, strict=True)
    ids = hf_models.inputs(2, 12)["input_ids"]
    with torch.no_grad():
        fast(ids, use_cache=False)
        for name in ("model.layers.1.mlp.gate_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
            p = model.get_parameter(name)
            p.data = torch.randn_like(p) * 0.2
            torch.testing.assert_close(fast(ids, use_cache=False).logits, model(ids, use_cache=False).logits,
                                       rtol=1e-4, atol=1e-4)


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError, match="unknown braze option.*fusee"):
        braze.jit(f, fusee=True)
    with pytest.raises(ValueError, match="backend='cuda'"):
        braze.jit(f, backend="cuda")
    with pytest.raises(ValueError, match="no pass named no_such_pass .*eliminate_padding"):
        braze.jit(f, disable=["no_such_pass"])


def test_grad_mode_runs_eagerly_with_a_reason():
    from braze.compiler.backend import make_backend

    model = torch.nn.Linear(4, 4)
    reports: list = []
    out = torch.compile(model, backend=make_backend(Options(), reports))(torch.randn(2, 4))
    assert out.requires_grad and reports[0].fallback and "inference only" in reports[0].fallback
