"""Horizontal fusion of parallel projections: one GEMM on concatenated weights, the
concatenation made once per set of weights (shared by every graph of a model)."""
from __future__ import annotations

import torch

from braze.ir import Builder, interpret
from braze.passes.fuse_horizontal import fuse_horizontal


def _qkv_graph(x_rows, weights):
    b = Builder()
    x = b.input("x", (x_rows, 16))
    outs = [b.call("mm", x, b.call("permute", b.constant(w, f"layer.{n}.weight"), (1, 0)))
            for n, w in zip("qkv", weights)]
    return b.graph(outs)


def _cats(g) -> list:
    return [t for k, t in g.constants.items() if k.startswith("hfused")]


def test_projections_become_one_gemm_and_graphs_share_the_concatenation():
    ws = [torch.randn(8, 16), torch.randn(4, 16), torch.randn(4, 16)]
    g1, g2 = fuse_horizontal(_qkv_graph(3, ws)), fuse_horizontal(_qkv_graph(1, ws))   # prefill, decode
    for g, rows in ((g1, 3), (g2, 1)):
        assert [n.op for n in g.compute_nodes].count("mm") == 1
        x = torch.randn(rows, 16)
        for got, w in zip(interpret(g, x), ws):
            torch.testing.assert_close(got, x @ w.T)
    (c1,), (c2,) = _cats(g1), _cats(g2)
    assert c1 is c2                                     # one copy of the concatenated weights
    with torch.no_grad():
        ws[1].add_(1.0)                                 # a weight changed in place: a new concatenation
    g3 = fuse_horizontal(_qkv_graph(2, ws))
    (c3,) = _cats(g3)
    assert c3 is not c1
    x = torch.randn(2, 16)
    torch.testing.assert_close(interpret(g3, x)[1], x @ ws[1].T)
    w0 = ws[0]
    w0.data = w0.data.double().float() * 2            # .data replaced (as module.double() does): same
    (c5,) = _cats(fuse_horizontal(_qkv_graph(2, ws)))  # object and version, new storage
    assert c5 is not c3 and torch.equal(c5[:8], w0)
    ws[2].data.copy_(torch.randn(4, 16))              # written through .data: no version bump
    (c6,) = _cats(fuse_horizontal(_qkv_graph(2, ws)))
    assert c6 is not c5 and torch.equal(c6[12:], ws[2])
    other = [w.clone() for w in ws]                     # equal values, other tensors: not the same parts
    (c4,) = _cats(fuse_horizontal(_qkv_graph(2, other)))
    assert c4 is not c6 and torch.equal(c4, c6)


def test_inference_tensors_are_concatenated_too():
    """Weights made under inference_mode have no version counter; sharing must not need one."""
    with torch.inference_mode():
        ws = [torch.randn(8, 16), torch.randn(8, 16)]
    g1, g2 = fuse_horizontal(_qkv_graph(1, ws + ws[:1])), fuse_horizontal(_qkv_graph(3, ws + ws[:1]))
    (c1,), (c2,) = _cats(g1), _cats(g2)
    assert c1 is c2 and not c1.is_inference()
