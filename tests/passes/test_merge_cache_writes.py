"""merge_cache_writes: a layer's K and V index_copy_ at the same rows become one
index_copy_many_ node; results and caches equal eager's; a full cache still raises first."""
from __future__ import annotations

import pytest
import torch

from braze.ir import parse_graph
from tests.passes.mutation_helpers import assert_same_effects, compile_strict, run_both


def _layers(n, kc0, vc0, kc1, vc1, k, v):
    out = 0
    for kc, vc in ((kc0, vc0), (kc1, vc1)):
        pos = torch.arange(1) + n
        kc.index_copy_(2, pos, k * 2)
        vc.index_copy_(2, pos, v)
        out = out + (kc.sum(-1) * vc.sum(-1)).sum()
    n.add_(1)
    return out


def _args(start=3, rows=8):
    return [torch.tensor(start)] + [torch.zeros(1, 2, rows, 4) for _ in range(4)] + [torch.randn(1, 2, 1, 4),
                                                                                    torch.randn(1, 2, 1, 4)]


def test_k_and_v_writes_are_one_node_with_eager_results():
    (want, a), (got, b), reports = run_both(_layers, *_args())
    torch.testing.assert_close(got, want)
    assert_same_effects(a, b)
    g = parse_graph(reports[0].final_ir)
    merged = [n for n in g.compute_nodes if n.op == "index_copy_many_"]
    assert len(merged) == 2 and not [n for n in g.compute_nodes if n.op == "index_copy_"]


def test_a_full_cache_still_raises_before_writing():
    args = _args(start=8, rows=8)
    before = [x.clone() for x in args]
    fn = compile_strict(_layers)
    with torch.no_grad(), pytest.raises(IndexError, match="cache is full"):
        fn(*args)
    for x, y in zip(before, args):
        assert torch.equal(x, y)


def test_two_writes_into_one_buffer_stay_apart():
    """The second write's buffer is the first's result: not a pair (merging would read a
    value that no longer exists)."""
    def fn(n, kc, k, v):
        pos = torch.arange(1) + n
        kc.index_copy_(2, pos, k)
        kc.index_copy_(2, pos, v * 2)
        return kc.sum()

    (want, a), (got, b), reports = run_both(fn, torch.tensor(2), torch.zeros(1, 2, 8, 4), torch.randn(1, 2, 1, 4),
                                            torch.randn(1, 2, 1, 4))
    torch.testing.assert_close(got, want)
    assert_same_effects(a, b)
    assert "index_copy_many_" not in reports[0].final_ir
