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
    for w, rows in zip(ws, ((0, 8), (8, 12), (12, 16))):   # the parts now view their rows of it
        assert w.data_ptr() == c1[rows[0]].data_ptr() and torch.equal(w, c1[rows[0]:rows[1]])
    with torch.no_grad():
        ws[1].add_(1.0)                                 # a weight changed in place: the graphs see it
    x = torch.randn(1, 16)
    torch.testing.assert_close(interpret(g2, x)[1], x @ ws[1].T)
    (c3,) = _cats(fuse_horizontal(_qkv_graph(2, ws)))
    assert c3 is c1
    w0 = ws[0]
    w0.data = w0.data.double().float() * 2            # .data replaced (as module.double() does): same
    (c5,) = _cats(fuse_horizontal(_qkv_graph(2, ws)))  # object and version, new storage
    assert c5 is not c3 and torch.equal(c5[:8], w0)
    assert ws[1].data_ptr() == c3[8].data_ptr()         # ws[1] no longer owns its storage: a copy
    c5[12:].zero_()                                      # rows of a copy that went stale
    (c6,) = _cats(fuse_horizontal(_qkv_graph(2, ws)))
    assert c6 is not c5 and torch.equal(c6[12:], ws[2])
    other = [w.clone() for w in ws]                     # equal values, other tensors: not the same parts
    (c4,) = _cats(fuse_horizontal(_qkv_graph(2, other)))
    assert c4 is not c6 and torch.equal(c4, c6)
    assert all(w.data_ptr() == c4[r].data_ptr() for w, r in zip(other, (0, 8, 12)))


def test_module_weights_are_held_once_and_follow_in_place_updates():
    """The module's projections view the concatenation: no second copy, and ``copy_``
    into a weight reaches the compiled graphs (a dead graph's concatenation is found
    again while the parts live)."""
    import gc

    lin = [torch.nn.Linear(16, n, bias=False) for n in (8, 4, 4)]
    ws = [m.weight for m in lin]
    storages = {w.untyped_storage().data_ptr() for w in ws}
    g1 = fuse_horizontal(_qkv_graph(1, ws))
    (c1,) = _cats(g1)
    assert {w.untyped_storage().data_ptr() for w in ws} == {c1.untyped_storage().data_ptr()} != storages
    ptr = c1.data_ptr()
    del g1, c1
    gc.collect()
    g2 = fuse_horizontal(_qkv_graph(3, ws))
    (c2,) = _cats(g2)
    assert c2.data_ptr() == ptr                        # no new copy for the next graph
    with torch.no_grad():
        lin[2].weight.copy_(torch.randn(4, 16))
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(interpret(g2, x)[2], lin[2](x))


def test_inference_tensors_are_concatenated_too():
    """Weights made under inference_mode have no version counter; sharing must not need one."""
    with torch.inference_mode():
        ws = [torch.randn(8, 16), torch.randn(8, 16)]
    g1, g2 = fuse_horizontal(_qkv_graph(1, ws + ws[:1])), fuse_horizontal(_qkv_graph(3, ws + ws[:1]))
    (c1,), (c2,) = _cats(g1), _cats(g2)
    assert c1 is c2 and not c1.is_inference()


def test_parts_rebound_only_when_safe():
    """No rebinding across dtypes (torch.cat would promote a part), none for a weight
    another tensor views (tied weights stay tied), and a concatenation the parts left
    (``.data`` swapped, as ``module.half()`` does) is freed with its last graph."""
    import gc
    import weakref

    from braze.passes.shared_constants import concat_once

    a, b = torch.randn(4, 8), torch.randn(2, 8).double()
    concat_once([a, b])
    assert a.dtype == torch.float32 and b.dtype == torch.float64 and a.untyped_storage().nbytes() == 4 * 8 * 4
    w, tied = torch.randn(4, 8), None
    tied = w.view(4, 8)                                  # a second tensor on w's storage
    c = torch.randn(3, 8)
    cat = concat_once([w, c])
    assert w.data_ptr() != cat.data_ptr() and tied.data_ptr() == w.data_ptr()
    p, q = torch.randn(4, 8), torch.randn(3, 8)
    cat = concat_once([p, q])
    assert p.data_ptr() == cat.data_ptr()
    ref = weakref.ref(cat)
    p.data, q.data = p.data.clone(), q.data.clone()     # the parts leave the concatenation
    del cat
    gc.collect()
    assert ref() is None
    e, f = torch.randn(2, 8), torch.empty(0, 8)        # an empty part
    c1 = concat_once([e, f])
    assert concat_once([e, f]) is c1 and c1.shape == (2, 8)
