"""The TVM search spaces: defaults valid for every kind on small and large
problems, and every hand-picked GEMM config valid and correct (the tuning
itself: tests/autotune/test_tvm_cpu_tuning.py)."""
import pytest
import torch

pytest.importorskip("tvm")

from tests.codegen.tvm_groups import check, group, kernel_of  # noqa: E402

from braze.autotune.space import device_info  # noqa: E402


def test_space_defaults_are_valid_for_every_kind():
    from braze.compiler.codegen.tvm.schedule_cpu import SPACES
    from braze.compiler.codegen.tvm.schedule_cuda import SPACES as CUDA_SPACES
    from braze.compiler.codegen.tvm.kernel import _cuda_info

    cpu, cuda = device_info("cpu"), _cuda_info()
    problems = {"pointwise": [{"numel": 7, "last": 7, "dtype": "f32"}, {"numel": 1 << 24, "last": 4096, "dtype": "bf16"}],
                "reduction": [{"rows": 3, "N": 33, "dtype": "f32"}, {"rows": 8192, "N": 4096, "dtype": "bf16"}],
                "gemm": [{"batch": 1, "M": 1, "N": 8, "K": 3, "dtype": "f32"},
                         {"batch": 1, "M": 4096, "N": 4096, "K": 4096, "dtype": "bf16"}]}
    for kind, probs in problems.items():
        for p in probs:
            assert SPACES[kind].valid(SPACES[kind].default_config(p, cpu), p, cpu)
            assert CUDA_SPACES[kind].valid(CUDA_SPACES[kind].default_config(p, cuda), p, cuda)
    g = group(lambda b, x: b.call("exp", x), "pointwise", [((5,), torch.float32)])
    assert kernel_of(g).space is SPACES["pointwise"]


def test_hand_picked_gemm_configs_are_valid_and_correct():
    f32 = torch.float32
    g = group(lambda b, x, w, bias: b.call("relu", b.call("addmm", bias, x, b.call("permute", w, (1, 0)))),
              "gemm", [((96, 256), f32), ((192, 256), f32), ((192,), f32)])
    k = kernel_of(g)
    dev = device_info("cpu")
    prob = k.problem({})
    default = k.space.default_config(prob, dev)
    lanes = 16 if default["nr"] % 16 == 0 else 8
    tried = [default, dict(default, nb=1, mb=0), dict(default, layout="nn"), dict(default, layout="nt"),
             dict(default, mr=1, nr=lanes, kunroll=1),     # the smallest register tile
             dict(default, pack=not default["pack"]),
             dict(default, mr=4, nr=2 * lanes)]
    tried = [c for i, c in enumerate(tried) if c not in tried[:i]]
    assert all(k.space.valid(c, prob, dev) for c in tried), [k.space.violations(c, prob, dev) for c in tried]
    xs = [torch.randn(96, 256), torch.randn(192, 256), torch.randn(192)]
    for cfg in tried:
        check(g, inputs=xs, config=cfg, kernel=k, tol=(1e-4, 1e-4))
