"""Liveness planning: intermediates are dropped right after their last reader,
never while a later node still reads them, and views share their base's memory."""
from __future__ import annotations

import re

import torch

from braze.compiler.memory_plan import drops_after, lifetimes, peak_bytes, storages
from braze.compiler.runtime import build_plan
from braze.ir import Builder


def _graph():
    b = Builder()
    x = b.input("x", (4, 8))
    a = b.call("relu", x)                              # node 1: read by 2, 3
    e = b.call("exp", a)                               # node 2: read by 3
    c = b.call("add", a, e, overload="Tensor")         # node 3: read by 4, 5
    v = b.call("reshape", c, (32,))                    # node 4: a view of c, read by 6
    d = b.call("mul", c, 2.0, overload="Tensor")       # node 5: read by 6
    out = b.call("add", b.call("reshape", d, (32,)), v, overload="Tensor")   # nodes 6 (reshape), 7
    return b.graph([out]), (a, e, c, v, d, out)


def test_lifetimes_of_a_known_graph():
    g, (a, e, c, v, d, out) = _graph()
    life = lifetimes(g)
    assert (life[a].first, life[a].last) == (1, 3)
    assert (life[e].first, life[e].last) == (2, 3)
    assert (life[c].first, life[c].last) == (3, 5)
    assert (life[v].first, life[v].last) == (4, 7)
    assert life[out].last == len(g.nodes)              # outputs live to the end
    drops = drops_after(g)
    assert set(drops[3]) == {a, e} and c in drops[5]
    assert storages(g)[v] == c                         # a reshape is a view of its operand


def test_peak_counts_views_with_their_base():
    g, _ = _graph()
    # a, e (128 B each) live together; then c (its view v keeps it to node 7) with d and
    # d's reshape, then out: c + d + out = 384 bytes at node 7.
    assert peak_bytes(g) == 3 * 4 * 8 * 4


def test_the_plan_never_drops_a_value_before_its_last_reader():
    g, _ = _graph()
    plan = build_plan(g, {}, {})
    lines = plan.source.splitlines()
    for k, ln in enumerate(lines):
        m = re.match(r"\s+del (.+)$", ln)
        if not m:
            continue
        for name in (s.strip() for s in m.group(1).split(",")):
            later = [x for x in lines[k + 1:] if re.search(rf"\b{name}\b", x)]
            assert not later, f"{name} is read after it was dropped: {later}"
    x = torch.randn(4, 8)
    torch.testing.assert_close(plan([x])[0], ((x.relu() + x.relu().exp()) * 3).reshape(32))
