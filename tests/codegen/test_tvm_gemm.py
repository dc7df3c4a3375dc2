"""TVM GEMM groups (mm / addmm / bmm with epilogues) on the CPU, odd sizes."""
import pytest
import torch

pytest.importorskip("tvm")

from tests.codegen.tvm_groups import check, group, kernel_of, random_like  # noqa: E402

from braze.autotune.space import device_info  # noqa: E402

f32, bf16 = torch.float32, torch.bfloat16
GEMM_TOL = (1e-4, 1e-4)


def test_linear_bias_gelu_residual():
    """nn.Linear (weight [N, K], transposed in the group) + bias + GELU + residual."""
    def build(b, x, w, bias, res):
        y = b.call("addmm", bias, x, b.call("permute", w, (1, 0)))
        return b.call("add", b.call("gelu", y), res)
    g = group(build, "gemm", [((37, 50), f32), ((29, 50), f32), ((29,), f32), ((37, 29), f32)])
    check(g, [(37, 50), (29, 50), (29,), (37, 29)], tol=GEMM_TOL)


def test_conv1d_style_mm_reshaped_output_two_outputs():
    """GPT-2's Conv1D (weight [K, N]), output viewed as [B, S, N], pre- and post-activation outputs."""
    def build(b, x, w, bias):
        y = b.call("addmm", bias, b.call("reshape", x, (14, 24)), w, beta=1.0, alpha=1.0)
        y3 = b.call("reshape", y, (2, 7, 40))
        return [y3, b.call("mul", b.call("tanh", y3), 0.5)]
    g = group(build, "gemm", [((2, 7, 24), f32), ((24, 40), f32), ((40,), f32)])
    check(g, [(2, 7, 24), (24, 40), (40,)], tol=GEMM_TOL)


def test_bmm_bf16_with_scale():
    g = group(lambda b, x, y: b.call("mul", b.call("bmm", x, y), 0.5), "gemm",
              [((3, 17, 20), bf16), ((3, 20, 33), bf16)])
    check(g, [(3, 17, 20), (3, 20, 33)])


def test_symbolic_m_and_strided_a():
    g = group(lambda b, x, w: b.call("silu", b.call("mm", x, w)), "gemm", [(("s0", 24), f32), ((24, 40), f32)])
    k = check(g, [(7, 24), (24, 40)], tol=GEMM_TOL)
    check(g, [(13, 24), (24, 40)], kernel=k, tol=GEMM_TOL)
    check(g, inputs=[torch.randn(24, 5).t(), torch.randn(24, 40)], kernel=k, tol=GEMM_TOL)


def test_gemm_knobs_keep_results():
    """Both layouts: vectors along N (packed or not) and dot products along K;
    tiles that do not divide M, N or K; blocks of columns and of rows; with and
    without a parallel loop."""
    g = group(lambda b, x, w, bias: b.call("addmm", bias, x, w), "gemm", [((19, 31), f32), ((31, 45), f32),
                                                                          ((45,), f32)])
    k = kernel_of(g)
    xs = [random_like(s, f32) for s in ((19, 31), (31, 45), (45,))]
    dev = device_info("cpu")
    prob = k.problem({})
    base = {"tm": 4, "tn": 4, "nb": 1, "mb": 0, "kunroll": 1, "prepack": False}
    for cfg in (dict(base, layout="nn", mr=4, nr=32, nb=2, pack=False, parallel=False),
                dict(base, layout="nn", mr=8, nr=16, mb=24, pack=True, kunroll=8, parallel=True),
                dict(base, layout="nt", mr=6, nr=16, tm=3, tn=2, pack=True, kunroll=2, parallel=True),
                dict(base, layout="nt", mr=6, nr=32, tm=2, tn=8, nb=2, mb=24, pack=False, parallel=False)):
        assert not k.space.violations(cfg, prob, dev), k.space.violations(cfg, prob, dev)
        check(g, inputs=xs, config=cfg, kernel=k, tol=GEMM_TOL)


def test_nt_layout_chosen_for_linear_weights():
    """``layout="auto"``: dot products along K when B is K-contiguous (nn.Linear's
    weight, or a transposed view passed in), vectors along N otherwise."""
    from braze.compiler.codegen.tvm.lower import LowerOptions, lower_group

    lin = group(lambda b, x, w: b.call("mm", x, b.call("permute", w, (1, 0))), "gemm",
                [((8, 16), f32), ((24, 16), f32)])
    conv = group(lambda b, x, w: b.call("mm", x, w), "gemm", [((8, 16), f32), ((16, 24), f32)])
    layout = [lower_group(g.sub, "gemm", LowerOptions(gemm_layout="auto", mr=4, nr=16)).nests[0].gemm["layout"]
              for g in (lin, conv)]
    assert layout == ["nt", "nn"]
    view = lower_group(conv.sub, "gemm", LowerOptions(gemm_layout="auto", mr=4, nr=16,
                                                      strided=frozenset({(1, (0,))})))
    assert view.nests[0].gemm["layout"] == "nt"
    check(conv, inputs=[torch.randn(8, 16), torch.randn(24, 16).t()], tol=GEMM_TOL)


def test_prepacked_constant_weight_is_packed_once_and_follows_changes():
    """A GEMM whose B is a graph constant is packed by its own function on first
    use and reused; an in-place change of the weight (new version) repacks."""
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    g = group(lambda b, x, w: b.call("gelu", b.call("mm", x, b.call("permute", w, (1, 0)))), "gemm",
              [((21, 40), f32), ((37, 40), f32)])
    wpos = [v.node.name for v in g.node.args].index("x1")  # operands are in first-use order
    k = TVMKernel(g.node, "gemm", "cpu", const_operands=frozenset({wpos}))
    prob = k.problem({})
    assert prob["b_const"] == 1
    cfg = k.space.default_config(prob, device_info("cpu"))
    assert cfg["prepack"]
    fn = k.compile(cfg)
    assert fn.prepack == wpos

    def call(x, w):
        return fn(*([w, x] if wpos == 0 else [x, w]))
    x, w = torch.randn(21, 40), torch.randn(37, 40)
    ref = torch.nn.functional.gelu(x @ w.t())
    torch.testing.assert_close(call(x, w), ref, rtol=1e-4, atol=1e-4)
    packed = fn._packed
    assert call(torch.randn(21, 40), w).shape == ref.shape
    assert fn._packed is packed                        # same weight: not packed again
    w.mul_(-1.0)                                       # in place: a new version
    torch.testing.assert_close(call(x, w), torch.nn.functional.gelu(x @ w.t()), rtol=1e-4, atol=1e-4)
    assert fn._packed is not packed
    xt = torch.randn(40, 21).t()                       # a strided A with the packed weight
    torch.testing.assert_close(call(xt, w), torch.nn.functional.gelu(xt @ w.t()), rtol=1e-4, atol=1e-4)


def test_prepacked_weight_is_shared_by_launchers_of_the_same_weight():
    """Two groups reading one constant weight (a model's prefill and decode graphs) pack it
    once; another tensor with equal contents, or the weight after an in-place change, does
    not read that packing."""
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    def launcher(act, build=None, wtype=((37, 40), f32)):
        build = build or (lambda b, x, w: b.call(act, b.call("mm", x, b.call("permute", w, (1, 0)))))
        g = group(build, "gemm", [((5, 40), f32), wtype])
        pos = [v.node.name for v in g.node.args].index("x1")
        k = TVMKernel(g.node, "gemm", "cpu", const_operands=frozenset({pos}))
        fn = k.compile(k.space.default_config(k.problem({}), device_info("cpu")))
        assert fn.prepack == pos
        return lambda x, w: fn(*([w, x] if pos == 0 else [x, w])), fn

    (gelu, f1), (relu, f2) = launcher("gelu"), launcher("relu")
    x, w = torch.randn(5, 40), torch.randn(37, 40)
    torch.testing.assert_close(gelu(x, w), torch.nn.functional.gelu(x @ w.t()), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(relu(x, w), torch.relu(x @ w.t()), rtol=1e-4, atol=1e-4)
    assert f2._packed is f1._packed                     # one packed copy of w
    w2 = w.clone()
    torch.testing.assert_close(relu(x, w2), torch.relu(x @ w2.t()), rtol=1e-4, atol=1e-4)
    assert f2._packed is not f1._packed                 # another tensor: its own packing
    w.mul_(-1.0)
    torch.testing.assert_close(gelu(x, w), torch.nn.functional.gelu(x @ w.t()), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(relu(x, w), torch.relu(x @ w.t()), rtol=1e-4, atol=1e-4)
    assert f2._packed is f1._packed                     # repacked once for the new version
    # the same weight read through other layout ops (W against W^T, one expert against
    # another) is packed by another function: never shared
    (plain, f3), (trans, f4) = (launcher("", lambda b, x, w: b.call("mm", x, w), ((40, 40), f32)),
                                launcher("", lambda b, x, w: b.call("mm", x, b.call("permute", w, (1, 0))),
                                         ((40, 40), f32)))
    sq = torch.randn(40, 40)
    torch.testing.assert_close(plain(x, sq), x @ sq, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(trans(x, sq), x @ sq.t(), rtol=1e-4, atol=1e-4)
    assert f4._packed is not f3._packed
    experts = [launcher("", lambda b, x, w, i=i: b.call("mm", x, b.call("select", w, 0, i)), ((2, 40, 24), f32))
               for i in (0, 1)]
    stack = torch.randn(2, 40, 24)
    for i, (fn, _) in enumerate(experts):
        torch.testing.assert_close(fn(x, stack), x @ stack[i], rtol=1e-4, atol=1e-4)


def test_prepacked_weight_passed_as_a_transposed_view():
    """nn.Linear's weight reaching the group as ``W.t()`` (a strided view of a constant)."""
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    g = group(lambda b, x, wt, bias: b.call("addmm", bias, x, wt), "gemm",
              [((13, 40), f32), ((40, 24), f32), ((24,), f32)])
    pos = [v.node.name for v in g.node.args].index("x1")
    k = TVMKernel(g.node, "gemm", "cpu", const_operands=frozenset({pos}))
    cfg = k.space.default_config(k.problem({}), device_info("cpu"))
    fn = k.compile(cfg)
    assert fn.prepack == pos
    x, w, bias = torch.randn(13, 40), torch.randn(24, 40), torch.randn(24)
    ops = [[x, w.t(), bias][int(v.node.name[1:])] for v in g.node.args]
    torch.testing.assert_close(fn(*ops), torch.addmm(bias, x, w.t()), rtol=1e-4, atol=1e-4)
    assert None not in fn._pack_fns and len(fn._pack_fns) == 1   # packed through the strided pack variant
