"""The library GEMM + one generated epilogue kernel candidate (``triton/split_gemm.py``),
under TRITON_INTERPRET=1 against the group in float64."""
from __future__ import annotations

import torch

from braze.autotune.space import device_info
from braze.compiler.codegen.triton.split_gemm import split_kernel
from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, gate_up_node, reference


def test_gate_up_runs_as_library_gemm_and_one_epilogue_kernel():
    node = gate_up_node(3, k=32, inter=24, dtype=torch.float32)
    k = split_kernel(node)
    assert k is not None and k.backend == "triton" and k.name.startswith("split_")
    assert [n.op for n in k.pre.compute_nodes] == ["permute", "mm"]
    assert None in k.epi_operands                      # the epilogue reads the product
    g = torch.Generator().manual_seed(0)
    feed = {"x": torch.randn(3, 32, generator=g), "w": torch.randn(48, 32, generator=g)}
    xs = [feed[v.node.name] for v in node.inputs]
    config = k.space.default_config(k.problem({}), device_info("cpu"))
    out = k.compile(config)(*xs)
    (want,) = reference(node, xs)
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-4)


def test_no_split_where_the_epilogue_is_one_op():
    b = Builder()
    x, w, r = b.input("x", (4, 32)), b.input("w", (32, 48)), b.input("r", (4, 48))
    node = fused_node(b, [b.call("add", b.call("mm", x, w), r, overload="Tensor")], "gemm")
    assert split_kernel(node) is None                  # the op-by-op library call is already two launches
