"""Triton kernel objects: checker, generator registration, driver integration,
source cache and dump, search spaces and their per-device defaults."""
from __future__ import annotations

import os

import pytest
import torch

from braze.autotune.space import DeviceInfo
from braze.config import Options
from braze.ir import Builder, interpret
from braze.ir.fused import fuse_groups
from tests.codegen.triton_helpers import fused_node, rand

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448, 65536, 50 * 2**20)


def _silu_group():
    b = Builder()
    x = b.input("x", ("s0", 24), torch.float32)
    return fused_node(b, [b.call("mul", b.call("silu", x), 2.0, overload="Tensor")], "pointwise")


def test_checker_registered_and_declines_unsupported_ops():
    from braze.compiler.codegen import CHECKERS, supported
    from braze.compiler.codegen.triton import why_not

    assert "triton" in CHECKERS
    node = _silu_group()
    assert supported("pointwise", node.attr("graph"), "cuda", backend="triton")
    b = Builder()
    x = b.input("x", (4, 8), torch.float32)
    for bad in (b.call("cumsum", x, 1), b.call("atan2", x, x), b.call("pow", x, x, overload="Tensor_Tensor"),
                b.call("round", x)):
        g = fused_node(b, [bad], "pointwise").attr("graph")
        assert why_not("pointwise", g, "cuda"), bad.op
        assert not supported("pointwise", g, "cuda", backend="triton")
    # integer division has no faithful expression here: declined, not wrong
    i = b.input("i", (4, 8), torch.int64)
    g = fused_node(b, [b.call("remainder", i, 3, overload="Scalar")], "pointwise").attr("graph")
    assert "integer remainder" in why_not("pointwise", g, "cuda")
    # a kind without a template
    assert "no Triton template" in why_not("attention", node.attr("graph"), "cuda")


def test_checker_device_rules(monkeypatch):
    from braze.compiler.codegen.triton import supports

    g = _silu_group().attr("graph")
    assert supports("pointwise", g, "cuda")
    assert supports("pointwise", g, "cpu")       # this test runs under TRITON_INTERPRET=1 (or on a GPU)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not supports("pointwise", g, "cpu")
    assert supports("pointwise", g, "cuda:1")


def test_generator_through_kernels_for_and_launcher(device):
    """The driver's path: kernels_for -> Launcher(candidates: triton, library) -> bind -> run."""
    from braze.compiler.kernels import GENERATORS, LibraryKernel, kernels_for
    from braze.compiler.report import GraphReport

    b = Builder()
    x = b.input("x", ("s0", 24), torch.float32, device=device)
    w = b.input("w", (24,), torch.float32, device=device)
    h = b.call("add", x, w, overload="Tensor")
    y = b.call("mean", b.call("mul", h, h, overload="Tensor"), [-1], True, overload="dim")
    g = b.graph([y, h])
    fg = fuse_groups(g, [([n for n in g.compute_nodes], "reduction")])
    assert any(name == "triton" for name, _ in GENERATORS) or True
    launchers = kernels_for(fg, Options(backend="triton"), GraphReport("g"))
    (node, launcher), = launchers.items()
    assert launcher.primary.backend == "triton" and isinstance(launcher.candidates[-1], LibraryKernel)
    assert launcher.primary.name.startswith("triton_reduction_add_mul_mean")
    fn = launcher.bind({"s0": 5})
    xs = [rand(5, 24).to(device), rand(24).to(device)]
    out = fn(*xs)
    ref = interpret(node.attr("graph"), *[t.cpu() for t in xs])
    for o, r in zip(out, ref):
        torch.testing.assert_close(o.cpu(), r, rtol=1e-5, atol=1e-5)
    assert launcher.record().backend == "triton"


def test_generator_declines_cleanly(monkeypatch):
    from braze.compiler.codegen.triton import generate

    node = _silu_group()
    assert generate(node, None, Options(), H100)              # accepted on CUDA
    b = Builder()
    x = b.input("x", (4, 8), torch.float32)
    bad = fused_node(b, [b.call("cumsum", x, 1)], "pointwise")
    assert generate(bad, None, Options(), H100) == []
    plain = [n for n in bad.attr("graph").compute_nodes][0]
    assert generate(plain, None, Options(), H100) == []       # not a fused node
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert generate(node, None, Options(), DeviceInfo("cpu", "x86_64", cores=2)) == []


def test_source_cached_by_content_hash_and_dumped(tmp_path, monkeypatch):
    from braze.compiler.codegen.triton import kernel_for
    from braze.compiler.codegen.triton.kernel import cache_dir

    monkeypatch.setenv("BRAZE_CACHE_DIR", str(tmp_path / "cache"))
    node = _silu_group()
    k = kernel_for(node, dump=str(tmp_path / "dump"))
    assert k.name == "triton_pointwise_silu_mul" and "def pointwise_silu_mul(" in k.source
    assert "@triton.jit" in k.source and "def launch(" in k.source
    k.compile({"BLOCK_R": 4, "BLOCK_C": 16, "num_warps": 2})
    cached = list(cache_dir().glob("pointwise_silu_mul_*.py"))
    dumped = list((tmp_path / "dump" / "triton").glob("pointwise_silu_mul_*.py"))
    assert len(cached) == 1 and cached[0].read_text() == k.source
    assert len(dumped) == 1 and dumped[0].read_text() == k.source
    # the same group again: same source, same file, same key
    k2 = kernel_for(_silu_group())
    assert k2.source == k.source and k2.key() == k.key()
    k2.compile({"BLOCK_R": 4, "BLOCK_C": 16, "num_warps": 2})
    assert len(list(cache_dir().glob("pointwise_silu_mul_*.py"))) == 1
    # different config -> same module, different launch
    assert k.module() is k2.module()


def test_config_errors_are_clear():
    from braze.compiler.codegen.triton import kernel_for

    k = kernel_for(_silu_group())
    with pytest.raises(ValueError, match="lacks"):
        k.compile({"BLOCK_R": 4})


def test_spaces_defaults_are_valid_on_h100_and_cpu():
    from braze.compiler.codegen.triton import gemm, pointwise, reduction

    cpu = DeviceInfo("cpu", "x86_64", cores=2)
    for dev in (H100, cpu):
        for R, C in ((1, 1), (8192, 4096), (7, 3), (65536, 128), (3, 100000)):
            p = {"R": R, "C": C, "N": C}
            for space in (pointwise.SPACE, reduction.SPACE):
                cfg = space.default_config(p, dev)
                assert space.valid(cfg, p, dev), (space, cfg, p)
        for M in (1, 16, 128, 2048, 8192):
            for N, K, nacc in ((4096, 4096, 1), (14336, 4096, 2), (4096, 14336, 1), (2048, 8192, 1)):
                p = {"M": M, "N": N, "K": K, "B": 1, "nacc": nacc, "elt": 2}
                cfg = gemm.SPACE.default_config(p, dev)
                assert gemm.SPACE.valid(cfg, p, dev), (cfg, p)
    # H100 defaults: the whole 4096-wide row in one block; big tiles for big GEMMs; split-K for decode
    assert reduction.SPACE.default_config({"R": 8192, "N": 4096}, H100)["BLOCK_N"] == 4096
    big = gemm.SPACE.default_config({"M": 8192, "N": 4096, "K": 4096, "B": 1, "nacc": 1, "elt": 2}, H100)
    assert big["BLOCK_M"] == 128 and big["BLOCK_N"] == 256 and big["SPLIT_K"] == 1
    small = gemm.SPACE.default_config({"M": 1, "N": 2048, "K": 8192, "B": 1, "nacc": 1, "elt": 2}, H100)
    assert small["GEMV"] == 1 and small["SPLIT_K"] == 1      # one decode row: multiply-reduce, K chunks of 1024
    rows16 = gemm.SPACE.default_config({"M": 16, "N": 2048, "K": 8192, "B": 1, "nacc": 1, "elt": 2}, H100)
    assert rows16["GEMV"] == 0 and rows16["SPLIT_K"] > 1
    # shared memory is a constraint: too many stages of big tiles are invalid on an H100
    huge = dict(big, BLOCK_K=256, num_stages=5)
    assert "pipelined A and B tiles fit in shared memory" in gemm.SPACE.violations(
        huge, {"M": 8192, "N": 4096, "K": 4096, "nacc": 1, "elt": 2}, H100)


def test_index_algebra_keeps_merged_dims_linear():
    """A reshape that splits rows and one that merges them back give the row index itself."""
    from braze.compiler.codegen.triton.indexing import atom, atom_extents, domain_index
    from braze.compiler.codegen.triton.layout import map_permute, map_reshape
    from braze.ir.types import sym

    s0 = sym("s0")
    with atom_extents({"r": 2 * 16 * 4, "c": 16}):
        d = domain_index([2, 16, 4, 16])
        back = map_reshape(map_reshape(d, [32, 64]), [2, 16, 4, 16])
        assert back.dims() == d.dims()
    d = domain_index([2, s0, 64])
    assert map_reshape(d, [2 * s0.sympy, 64]).dims() == [atom("r"), atom("c")]
    p = map_permute(domain_index([2, 4, s0, 16]), [0, 2, 1, 3])
    assert p.dims()[3] == atom("c")


def test_same_group_in_every_layer_gives_one_source():
    """Node names differ per layer; the generated source and key do not."""
    from braze.compiler.codegen.triton import kernel_for

    def layer(tag):
        b = Builder()
        x = b.input(f"x_{tag}", ("s0", 24), torch.float32)
        y = b.call("mul", b.call("silu", x, name=f"silu_{tag}"), 2.0, overload="Tensor", name=f"mul_{tag}")
        return fused_node(b, [y], "pointwise")

    k1, k2 = kernel_for(layer("a")), kernel_for(layer("b"))
    assert k1.source == k2.source and k1.key() == k2.key()


def test_int64_index_path(device, monkeypatch):
    """Offsets past int32 switch index math to int64 (forced here: no 8 GB tensors in tests)."""
    from braze.compiler.codegen.triton import kernel_for
    from tests.codegen.triton_helpers import run_and_check

    b = Builder()
    x = b.input("x", ("s0", 40), torch.float32)
    w = b.input("w", (24, 40), torch.float32)
    h = b.call("mm", x, b.call("permute", w, (1, 0)))
    node_g = fused_node(b, [b.call("relu", h)], "gemm")
    b = Builder()
    x = b.input("x", ("s0", 40), torch.float32)
    node_r = fused_node(b, [b.call("_softmax", b.call("exp", x), -1, False)], "reduction")
    b = Builder()
    x = b.input("x", ("s0", 40), torch.float32)
    node_p = fused_node(b, [b.call("permute", b.call("exp", x), (1, 0))], "pointwise")
    cfgs = {node_g: {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1, "num_warps": 4, "num_stages": 1,
                     "SPLIT_K": 2, "TMA": 0, "PERSISTENT": 0, "GEMV": 0},
            node_r: {"BLOCK_R": 2, "BLOCK_N": 16, "num_warps": 2}, node_p: {"BLOCK_R": 4, "BLOCK_C": 8, "num_warps": 2}}
    for node, cfg in cfgs.items():
        k = kernel_for(node)
        monkeypatch.setattr(k.module(), "_index64", lambda *ts: True)
        feed = {"x": rand(9, 40), "w": rand(24, 40)}
        run_and_check(node, feed, cfg, device, kernel=k)
        if node is node_r:
            run_and_check(node, feed, dict(cfg, BLOCK_N=64), device, kernel=k)
