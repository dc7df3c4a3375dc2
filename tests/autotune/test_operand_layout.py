"""Operands of the selection and the tuner keep the strides views give them at run time
(no TVM needed: the layout tests of ``autotune/measure.py`` and ``autotune/recipe.py``)."""
import torch

from braze.autotune.measure import random_operands
from braze.autotune.contract import structural_key
from braze.autotune.recipe import node_graph, the_node
from braze.ir import Builder, parse_graph, print_graph
from braze.ir.types import Sym


def test_operands_keep_the_layout_views_give_them():
    """A GEMM group reading a weight through ``permute`` (as every decode projection does)
    gets a K-major operand, as at run time (a contiguous [K, N] one timed the GEMV form at
    half its speed); slices and expands keep their strides; a symbolic row count binds."""
    b = Builder()
    x = b.input("x", ("s0", 64), torch.float32)
    w = b.constant(torch.randn(96, 64), "w")
    qkv = b.input("qkv", (2, 96), torch.float32)
    wt = b.call("permute", w, (1, 0))
    sl = b.call("slice", qkv, 1, 32, 96)
    ex = b.call("expand", b.call("reshape", b.input("s", (64,), torch.float32), (1, 64)), (Sym("s0"), 64))
    mm = b.call("mm", x, wt)
    y = b.call("add", b.call("mul", x, ex, overload="Tensor"), 1.0, overload="Tensor")
    g = b.graph([mm, b.call("relu", sl), y])
    mm_node = [n for n in g.compute_nodes if n.op == "mm"][0]
    mul_node = [n for n in g.compute_nodes if n.op == "mul"][0]
    xs = random_operands(mm_node, {"s0": 3}, "cpu")
    assert xs[0].shape == (3, 64) and xs[0].is_contiguous()
    assert xs[1].shape == (64, 96) and xs[1].stride() == (1, 64)
    assert xs[1].abs().sum() > 0
    xs = random_operands(mul_node, {"s0": 3}, "cpu")
    assert xs[1].shape == (3, 64) and xs[1].stride() == (0, 1)
    (q,) = random_operands([n for n in g.compute_nodes if n.op == "slice"][0], {}, "cpu")
    assert q.is_contiguous()        # qkv is an input: a plain tensor
    (sq,) = random_operands([n for n in g.compute_nodes if n.op == "relu"][0], {}, "cpu")
    assert sq.shape == (2, 64) and sq.stride() == (96, 1) and not sq.is_contiguous()   # a slice of it


def test_a_worker_rebuilds_the_views_of_the_operands():
    """The recipe's graph (``node_graph(views=True)``, what a tuning worker parses) carries
    the permute, so the worker's operands are K-major too; keys stay those of the bare node."""
    b = Builder()
    x = b.input("x", (2, 64), torch.float32)
    w = b.constant(torch.randn(96, 64), "w")
    mm = b.call("mm", x, b.call("permute", w, (1, 0)))
    g = b.graph([mm])
    node = g.compute_nodes[-1]
    text = print_graph(node_graph(node, views=True))
    rebuilt = the_node(parse_graph(text))
    assert rebuilt.op == "mm" and rebuilt.inputs[1].node.op == "permute"
    xs = random_operands(rebuilt, {}, "cpu")
    assert xs[1].shape == (64, 96) and xs[1].stride() == (1, 64)
    bare = node_graph(node)
    assert len(bare.compute_nodes) == 1 and "permute" not in print_graph(bare)
    assert structural_key(rebuilt) == structural_key(node)


def test_an_unbound_symbol_of_a_base_falls_back_to_a_plain_operand():
    """A view whose base has a symbol the binding lacks (a tuning task binds only the
    node's own symbols): a plain random tensor, not an error."""
    b = Builder()
    h = b.input("h", (2, "s0", 64), torch.float32)
    last = b.call("select", h, 1, -1)
    g = b.graph([b.call("relu", last)])
    (x,) = random_operands(g.compute_nodes[-1], {}, "cpu")
    assert x.shape == (2, 64)


def test_operands_for_a_compile_only_skip_drawing_floats():
    """values=False (compile-ahead workers): float operands uninitialised, on their layout;
    integer operands keep their sampled invariant (distinct rows of a cache write)."""
    b = Builder()
    w = b.constant(torch.randn(96, 64), "w")
    x = b.input("x", (2, 64), torch.float32)
    mm = b.call("mm", x, b.call("permute", w, (1, 0)))
    cache = b.input("c", (1, 2, 16, 8), torch.float32)
    idx = b.input("i", (16,), torch.int64)
    src = b.input("s", (1, 2, 16, 8), torch.float32)
    wr = b.call("index_copy_", cache, 2, idx, src)
    g = b.graph([mm, wr])
    xs = random_operands([n for n in g.compute_nodes if n.op == "mm"][0], {}, "cpu", values=False)
    assert xs[1].stride() == (1, 64)
    node = [n for n in g.compute_nodes if n.op == "index_copy_"][0]
    c, i, _ = random_operands(node, {}, "cpu", values=False)
    assert sorted(i.tolist()) == list(range(16))
