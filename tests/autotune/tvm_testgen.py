"""Real TVM/LLVM kernels (and deliberately broken ones) for the autotuner tests.

- ``TvmMatmul``: C = A @ B (optionally relu(C)) as a TE compute, scheduled
  with tile / reorder / parallel / vectorize / unroll knobs (``unroll`` is a
  conditional knob, active only when ``vectorize`` is on) and compiled by
  TVM for LLVM. Accepts ``mm`` nodes and ``fused`` gemm groups of
  ``mm`` (+ ``relu``) on 2-D float32 operands of static shape.
- ``TvmSoftmax``: row softmax over the last dim of a 2-D float32 input
  (``fused`` reduction group of one ``_softmax``).
- Broken candidates: one that fails to compile, one that hangs, one that
  returns wrong values (a real TVM matmul that skips the last k), one that
  kills its process (segfault).

Generators (``gen_tvm``, ``gen_broken``) have the code-generator signature
``fn(node, graph, options, device) -> list``; the tests register them in
``autotune.contract.GENERATORS``; worker processes rebuild them by name.
"""
from __future__ import annotations

import ctypes
import time
from typing import Any, Callable, Mapping

import torch

try:
    import tvm  # noqa: F401  # NOTE: imported with the generator, so a worker's rebuild step pays for it
except ImportError:  # pragma: no cover - a machine without TVM (the GPU machine): the tests using it skip
    tvm = None

from braze.autotune.space import Config, Constraint, Knob, Space
from braze.autotune.contract import problem_of, structural_key
from braze.ir import Builder, Graph, Node
from braze.ir.fused import fuse_groups


def _sub_ops(node: Node) -> list[str]:
    sub = node.attr("graph")
    if isinstance(sub, Graph):
        return [n.op for n in sub.compute_nodes]
    return [node.op]


def _static_f32_2d(node: Node) -> bool:
    ts = [v.type for v in node.inputs] + list(node.types)
    return all(t.is_static and t.rank == 2 and t.dtype == torch.float32 and t.device == "cpu" for t in ts)


def matmul_space() -> Space:
    return Space(
        knobs=(Knob("tile_m", (1, 2, 4, 8, 16, 32)), Knob("tile_n", (4, 8, 16, 32, 64)),
               Knob("k_outer", (False, True)), Knob("parallel", (False, True)), Knob("vectorize", (False, True)),
               Knob("unroll", (False, True), when=("vectorize", (True,)))),
        constraints=(Constraint("vector_fits_registers", lambda c, p, d: not c["vectorize"] or c["tile_n"] <= 32),),
        default=lambda p, d: {"tile_m": 8, "tile_n": 16, "k_outer": False, "parallel": True, "vectorize": True,
                              "unroll": False})


class TvmMatmul:
    """A real TVM/LLVM matmul (+ relu) kernel; ``bug="skip_k"`` makes it wrong."""

    backend = "tvm"

    def __init__(self, node: Node, bug: str = ""):
        self.node = node
        self.bug = bug
        self.relu = "relu" in _sub_ops(node)
        self.name = "tvm_test_matmul" + ("_relu" if self.relu else "") + (f"_{bug}" if bug else "")
        self.space = matmul_space()
        self.source = f"te.compute matmul relu={self.relu} bug={bug}"

    def key(self) -> str:
        return structural_key(self.node, f"test-tvm-matmul{self.bug}")

    def problem(self, env: Mapping[str, int]) -> dict:
        return problem_of(self.node, env)

    def compile(self, config: Config) -> Callable[..., Any]:
        import tvm
        from tvm import s_tir, te

        (m, k_), (_, n) = (v.type.shape for v in self.node.inputs)
        a = te.placeholder((m, k_), "float32", name="A")
        b = te.placeholder((k_, n), "float32", name="B")
        kr = te.reduce_axis((0, k_ - 1 if self.bug == "skip_k" else k_), name="k")
        c = te.compute((m, n), lambda i, j: te.sum(a[i, kr] * b[kr, j], axis=kr), name="C")
        outs = [a, b, c]
        if self.relu:
            d = te.compute((m, n), lambda i, j: te.max(c[i, j], tvm.tirx.const(0, "float32")), name="D")
            outs = [a, b, d]
        sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func(outs)}))
        blk = sch.get_sblock("C")
        i, j, kk = sch.get_loops(blk)
        io, ii = sch.split(i, [None, config["tile_m"]])
        jo, ji = sch.split(j, [None, config["tile_n"]])
        if config["k_outer"]:
            sch.reorder(io, jo, kk, ii, ji)
        else:
            sch.reorder(io, jo, ii, kk, ji)
        if self.relu:
            sch.reverse_compute_at(sch.get_sblock("D"), jo)
        if config["parallel"]:
            sch.parallel(io)
        if config["vectorize"]:
            sch.vectorize(ji)
            if config["unroll"]:
                sch.unroll(ii)
        lib = tvm.compile(sch.mod, target="llvm")
        fn = lib["main"]

        def run(x, w):
            out = torch.empty(m, n, dtype=torch.float32)
            fn(x.contiguous(), w.contiguous(), out)
            return out
        return run


class TvmSoftmax:
    """A real TVM/LLVM row softmax with parallel / vectorize knobs."""

    backend = "tvm"
    name = "tvm_test_softmax"
    source = "te.compute softmax"

    def __init__(self, node: Node):
        self.node = node
        self.space = Space((Knob("parallel", (False, True)), Knob("split", (1, 4, 8))),
                           default=lambda p, d: {"parallel": True, "split": 1})

    def key(self) -> str:
        return structural_key(self.node, "test-tvm-softmax")

    def problem(self, env):
        return problem_of(self.node, env)

    def compile(self, config):
        import tvm
        from tvm import s_tir, te, topi

        m, n = self.node.inputs[0].type.shape
        x = te.placeholder((m, n), "float32", name="X")
        y = topi.nn.softmax(x, axis=1)
        sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([x, y])}))
        if config["parallel"] or config["split"] > 1:
            blocks = sch.get_child_blocks(sch.get_sblock("root")) if hasattr(sch, "get_child_blocks") else []
            del blocks
            last = sch.get_sblock("T_softmax_norm")
            row = sch.get_loops(last)[0]
            if config["split"] > 1:
                row, _ = sch.split(row, [None, config["split"]])
            if config["parallel"]:
                sch.parallel(row)
        fn = tvm.compile(sch.mod, target="llvm")["main"]

        def run(a):
            out = torch.empty(m, n, dtype=torch.float32)
            fn(a.contiguous(), out)
            return out
        return run


class _Broken:
    backend = "tvm"
    source = "broken on purpose"

    def __init__(self, node: Node, how: str):
        self.node, self.how = node, how
        self.name = f"broken_{how}"
        self.space = Space((Knob("variant", (0, 1, 2)),))

    def key(self) -> str:
        return structural_key(self.node, f"broken-{self.how}")

    def problem(self, env):
        return problem_of(self.node, env)

    def compile(self, config):
        if self.how == "raises":
            raise RuntimeError("code generation failed on purpose")

        def run(*xs):
            if self.how == "hangs":
                while True:
                    time.sleep(1)
            if self.how == "crashes":
                ctypes.string_at(0)  # segfault: the measuring process dies
            raise AssertionError("unreachable")
        return run


def gen_tvm(node: Node, graph, options, device) -> list:
    """Real TVM kernels for 2-D float32 matmuls (mm, gemm groups) and row softmax."""
    if device.kind != "cpu" or not _static_f32_2d(node):
        return []
    ops = _sub_ops(node)
    if node.op == "mm" or (node.op == "fused" and node.attr("kind") == "gemm" and ops in (["mm"], ["mm", "relu"])):
        return [TvmMatmul(node)]
    if node.op == "fused" and node.attr("kind") == "reduction" and ops == ["_softmax"]:
        return [TvmSoftmax(node)]
    return []


def gen_broken(node: Node, graph, options, device) -> list:
    """For gemm groups: a kernel that raises, one that hangs, a wrong TVM matmul, one that segfaults."""
    if node.op != "fused" or node.attr("kind") != "gemm" or not _static_f32_2d(node):
        return []
    return [_Broken(node, "raises"), _Broken(node, "hangs"), TvmMatmul(node, bug="skip_k"), _Broken(node, "crashes")]


# --- graphs ------------------------------------------------------------------------
def gemm_graph(m: int = 48, k: int = 40, n: int = 56, relu: bool = True) -> Graph:
    """x[m,k] @ w[k,n] (+ relu) as one fused gemm group."""
    b = Builder()
    x = b.input("x", (m, k))
    w = b.input("w", (k, n))
    y = b.call("mm", x, w)
    if relu:
        y = b.call("relu", y)
    g = b.graph([y], name="gemm")
    return fuse_groups(g, [(list(g.compute_nodes), "gemm")])


def softmax_graph(m: int = 33, n: int = 70) -> Graph:
    b = Builder()
    x = b.input("x", (m, n))
    y = b.call("_softmax", x, -1, False)
    g = b.graph([y], name="softmax")
    return fuse_groups(g, [(list(g.compute_nodes), "reduction")])


def fused_node(graph: Graph) -> Node:
    return next(n for n in graph.compute_nodes if n.op == "fused")


class _Unstable(TvmMatmul):
    """A kernel whose key differs in every process (as a generator memo can make it)."""

    def key(self) -> str:
        import os

        return structural_key(self.node, f"unstable-{os.getpid()}")


def gen_unstable(node: Node, graph, options, device) -> list:
    return [_Unstable(node)] if gen_tvm(node, graph, options, device) else []
