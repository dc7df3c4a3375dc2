"""index_as_view: a constant gather naming every element once, in order, is a reshape."""
from __future__ import annotations

import torch

from braze.ir import Builder, interpret
from braze.passes.index_as_view import index_as_view


def _mask_gather(index_of_kv, rows=2, cols=12):
    """HF's ``mask[batch_arange, kv_arange]`` over broadcast shapes, [rows, cols] -> [rows, 1, 1, cols]."""
    b = Builder()
    m = b.input("m", (rows, cols), torch.bool)
    bi = b.call("reshape", b.constant(torch.arange(rows), "ab"), (rows, 1, 1, 1))
    ki = b.call("reshape", b.constant(index_of_kv, "ak"), (1, 1, 1, cols))
    g = b.graph([b.call("index", m, [bi, ki], overload="Tensor")])
    return g


def test_an_identity_gather_becomes_a_reshape():
    g = _mask_gather(torch.arange(12))
    out = index_as_view(g)
    assert [n.op for n in out.compute_nodes if n.op not in ("reshape",)] == []
    m = torch.rand(2, 12) > 0.5
    assert torch.equal(interpret(out, m)[0], interpret(g, m)[0])
    assert interpret(out, m)[0].shape == (2, 1, 1, 12)


def test_a_gather_that_moves_elements_stays():
    for idx in (torch.arange(12).flip(0), torch.tensor([0] * 12), torch.arange(12) % 6):
        g = _mask_gather(idx)
        out = index_as_view(g)
        assert [n.op for n in out.compute_nodes].count("index") == 1
        m = torch.rand(2, 12) > 0.5
        assert torch.equal(interpret(out, m)[0], interpret(g, m)[0])


def test_a_gather_with_a_runtime_index_stays():
    b = Builder()
    m = b.input("m", (2, 12), torch.bool)
    bi = b.call("reshape", b.constant(torch.arange(2), "ab"), (2, 1))
    ki = b.input("k", (1, 12), torch.int64)
    g = b.graph([b.call("index", m, [bi, ki], overload="Tensor")])
    assert [n.op for n in index_as_view(g).compute_nodes].count("index") == 1
