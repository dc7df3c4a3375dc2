"""merge_leaf_pointwise: lone pointwise ops reading only inputs and constants run as one
kernel; ops whose result the graph returns (a counter written back) stay, become in-place
updates, and merge_counter_updates advances them all in one foreach_add_."""
from __future__ import annotations

import torch

from braze.ir import Builder, parse_graph
from braze.passes.merge_leaf_pointwise import merge_leaf_pointwise
from tests.passes.mutation_helpers import assert_same_effects, run_both


def _layers(n0, n1, n2, c0, c1, c2, k):
    """Three 'layers' of HF's static cache: positions from each layer's own counter, read
    first, then the counter advanced."""
    out = 0
    for n, cache in ((n0, c0), (n1, c1), (n2, c2)):
        pos = torch.arange(1) + n
        n.add_(1)
        cache.index_copy_(0, pos, k)
        out = out + cache.sum()
    return out


def test_per_layer_positions_are_one_kernel_and_counters_stay_in_place():
    args = [torch.tensor(i) for i in (3, 3, 3)] + [torch.zeros(8, 2) for _ in range(3)] + [torch.randn(1, 2)]
    (want, a), (got, b), reports = run_both(_layers, *args)
    torch.testing.assert_close(got, want)
    assert_same_effects(a, b)
    g = parse_graph(reports[0].final_ir)
    merged = [n for n in g.compute_nodes if n.op == "fused" and n.types[0].dtype == torch.int64]
    assert len(merged) == 1 and len(merged[0].types) == 3, reports[0].final_ir
    (counters,) = [n for n in g.compute_nodes if n.op == "foreach_add_"]   # in place, after their readers
    assert len(counters.types) == 3 and "= add_." not in reports[0].final_ir
    assert g.nodes.index(merged[0]) < min(g.nodes.index(n) for n in g.compute_nodes if n.op == "index_copy_")
    assert g.nodes.index(counters) > max(g.nodes.index(n) for n in g.compute_nodes if n.op == "index_copy_")


def test_only_leaf_ops_of_one_shape_merge_and_outputs_stay():
    b = Builder()
    x = b.input("x", (4,), torch.float32)
    y = b.input("y", (4,), torch.float32)
    z = b.input("z", (2,), torch.float32)
    a1 = b.call("add", x, y, overload="Tensor")
    a2 = b.call("mul", x, 2.0, overload="Tensor")
    a3 = b.call("neg", z)                                  # another shape: alone
    a4 = b.call("exp", a1)                                 # reads a computed value: not a leaf
    ret = b.call("sub", y, 1.0, overload="Tensor")         # returned: stays
    g = b.graph([b.call("add", a4, a2, overload="Tensor"), a3, ret])
    out = merge_leaf_pointwise(g)
    fused = [n for n in out.compute_nodes if n.op == "fused"]
    assert len(fused) == 1 and sorted(m.op for m in fused[0].attr("graph").compute_nodes) == ["add", "mul"]
    assert {n.op for n in out.compute_nodes} == {"fused", "neg", "exp", "add", "sub"}
    xs = [torch.randn(4), torch.randn(4), torch.randn(2)]
    from braze.ir import interpret

    for w, v in zip(interpret(g, *xs), interpret(out, *xs)):
        torch.testing.assert_close(v, w)


def test_counter_updates_merge_only_when_only_returned_and_alike():
    """A counter read again in the graph, or advanced by another number, keeps its own add_."""
    def fn(n0, n1, n2, n3, x):
        y = x * n0 + n1 + n2 + n3
        n0.add_(1)
        n1.add_(1)
        n2.add_(2)
        n3.add_(1)
        return y, n3 * 3

    (want, a), (got, b), reports = run_both(fn, *[torch.tensor(i) for i in (1, 2, 3, 4)], torch.randn(3))
    for w, v in zip(want, got):
        torch.testing.assert_close(v, w)
    assert_same_effects(a, b)
    g = parse_graph(reports[0].final_ir)
    (fe,) = [n for n in g.compute_nodes if n.op == "foreach_add_"]   # n0 and n1 (+1)
    assert len(fe.types) == 2 and fe.args[1] == 1
    assert [n.args[1] for n in g.compute_nodes if n.op == "add_"] == [2]   # n2 adds 2; n3's new value is read
