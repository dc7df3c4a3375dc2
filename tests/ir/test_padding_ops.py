"""The ops of padding elimination on their own: padding_index, pack, unpack."""
from __future__ import annotations

import pytest
import torch

from braze.ir.padding import pack_ref, padding_index_ref, unpack_ref


@pytest.mark.parametrize("mask,bucket", [
    ([[1, 1, 1, 0], [0, 1, 1, 1]], 1),    # right and left padding
    ([[1, 1, 1, 1], [1, 1, 1, 1]], 1),    # no padding: unpack is a reshape
    ([[1, 1, 1, 1], [1, 1, 1, 0]], 8),    # bucket rows (to 8) go to the discarded row
    ([[1, 1, 1, 1], [1, 1, 1, 1]], 16),   # no padding, but bucket rows: the general path
])
def test_pack_unpack_round_trip_zeros_at_padding(mask, bucket):
    m = torch.tensor(mask)
    x = torch.randn(2, 4, 3, 5)
    idx, cu, pos, batch, dst = padding_index_ref(m, bucket=bucket)
    assert cu.tolist() == [0, int(m[0].sum()), int(m.sum())]
    xp = pack_ref(x, idx)
    assert xp.shape[0] % bucket == 0 and xp.shape[0] >= int(m.sum())
    out = unpack_ref(xp * 2, dst, batch=2, seq=4)
    valid = m.bool()
    torch.testing.assert_close(out[valid], x[valid] * 2, rtol=0, atol=0)
    assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))
    assert out.shape == x.shape


@pytest.mark.parametrize("fused", [False, True], ids=["op", "scatter_group"])
def test_padded_outputs_names_unpacked_and_derived_outputs(fused):
    """What a check against eager may compare: an unpack result (also as a fused
    group's scatter output) on valid tokens; an output computed from one is derived."""
    from braze.ir import Builder
    from braze.ir.fused import fuse_groups
    from braze.ir.padding import padded_outputs

    b = Builder()
    x = b.input("x", (2, 4, 3))
    mask = b.input("mask", (2, 4), torch.int64)
    idx, _, _, _, dst = b.call("padding_index", mask, symbol="t")
    y = b.call("unpack", b.call("relu", b.call("pack", x, idx)), dst, batch=2, seq=4)
    pooled = b.call("select", y, 1, 0)
    g = b.graph([y, pooled, b.call("exp", x)])
    if fused:
        g = fuse_groups(g, [([n for n in g.nodes if n.op in ("relu", "unpack")], "reduction")])
        assert [n.op for n in g.compute_nodes].count("unpack") == 0
    assert padded_outputs(g) == (1, {0: "unpacked", 1: "derived"})
    b = Builder()
    x = b.input("x", (2, 4, 3))
    assert padded_outputs(b.graph([b.call("exp", x)])) == (None, {})
