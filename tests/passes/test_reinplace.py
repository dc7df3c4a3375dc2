"""Side effects: in-place ops are captured (functionalised, written back) and
a KV-cache update is written in place, only its new rows.

Every test compiles with ``strict=True`` (no eager fallback) and compares
with the same function run eagerly on copies of the same inputs.
"""
from __future__ import annotations

import pytest
import torch

from braze.config import Options
from braze.ir import Builder, Graph, VerificationError, verify
from braze.passes.reinplace import reinplace
from tests.passes.mutation_helpers import compile_strict, run_both


_compile = compile_strict
_both = run_both


def test_cache_update_writes_only_the_new_rows_of_the_callers_buffer():
    def step(cache, pos, k, q):
        cache.index_copy_(2, pos, k)
        return torch.nn.functional.scaled_dot_product_attention(q, cache, cache)

    cache = torch.randn(2, 4, 32, 8)
    pos = torch.tensor([5])
    k, q = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8)
    reports: list = []
    fast = _compile(step, reports)
    before = cache.clone()
    ptr = cache.data_ptr()
    with torch.no_grad():
        out = fast(cache, pos, k, q)
    want_cache = before.clone().index_copy_(2, pos, k)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, want_cache, want_cache))
    assert cache.data_ptr() == ptr
    changed = (cache != before).any(dim=3).any(dim=1).any(dim=0)
    assert changed.nonzero().flatten().tolist() == [5]          # exactly the row written
    torch.testing.assert_close(cache, want_cache, rtol=0, atol=0)
    ir = reports[0].final_ir
    assert "index_copy_" in ir and "writes 0 <- " in ir
    assert reports[0].fallback is None


def test_in_place_write_is_not_a_whole_copy():
    """The functional form would copy the cache; the plan must not."""
    def step(cache, pos, k):
        cache.index_copy_(1, pos, k)
        return cache.sum(dim=1)

    programs = []

    def backend(gm, example_inputs):
        from braze.compiler.backend import _compile as compile_entry
        from braze.compiler.report import GraphReport

        entry = compile_entry(gm, example_inputs, Options(strict=True), GraphReport("g"))
        programs.append(entry.program)
        return entry

    cache, pos, k = torch.randn(3, 64, 4), torch.tensor([7, 9]), torch.randn(3, 2, 4)
    with torch.no_grad():
        torch.compile(step, backend=backend)(cache, pos, k)
    plan = next(iter(programs[0]._plans.values()))
    assert ".copy_(" not in plan.source
    assert "index_copy_" in programs[0].graph.__str__()


@pytest.mark.parametrize("op", ["add_", "div_", "mul_", "masked_fill_", "copy_"])
def test_in_place_ops_on_inputs_are_written_back(op):
    def fn(x, y):
        if op == "masked_fill_":
            x.masked_fill_(y > 0, -1.0)
        elif op == "copy_":
            x.copy_(y * 3)
        else:
            getattr(x, op)(y)
        return x * 2

    (want, a), (got, b), reports = _both(fn, torch.randn(4, 5), torch.randn(4, 5))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b[0], a[0])          # the caller sees the update
    torch.testing.assert_close(b[1], a[1])          # and only that
    assert reports[0].fallback is None


def test_in_place_ops_on_intermediates_are_functionalised():
    def fn(x):
        h = x @ x.t()
        h.add_(1.0)
        h.div_(3.0)
        h[:, 0] = 0.0                       # setitem on an intermediate
        h.mul_(torch.arange(h.shape[1], dtype=h.dtype))
        return h.softmax(-1)

    (want, _), (got, _), reports = _both(fn, torch.randn(6, 6))
    torch.testing.assert_close(got, want)
    assert reports[0].fallback is None


def test_setitem_on_a_cache_slice_is_written_in_place():
    def fn(cache, k):
        cache[:, 3:5] = k                    # slice_scatter written back
        return cache[:, :5].sum(1)

    (want, a), (got, b), reports = _both(fn, torch.randn(2, 16, 4), torch.randn(2, 2, 4))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b[0], a[0], rtol=0, atol=0)
    assert "slice_scatter_" in reports[0].final_ir


def test_index_put_with_a_tensor_index_writes_in_place():
    def fn(cache, pos, v):
        cache[:, pos] = v
        return cache.mean()

    (want, a), (got, b), reports = _both(fn, torch.randn(2, 10, 3), torch.tensor([4]), torch.randn(2, 1, 3))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b[0], a[0], rtol=0, atol=0)
    assert "index_put_" in reports[0].final_ir


def test_input_read_before_it_is_written_stays_functional():
    """Another reader of the old value: the scatter cannot be in place, the result is still right."""
    def fn(cache, pos, k):
        old = cache.sum()
        cache.index_copy_(0, pos, k)
        return old + cache.sum()

    (want, a), (got, b), reports = _both(fn, torch.randn(8, 4), torch.tensor([2]), torch.randn(1, 4))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b[0], a[0])
    assert "index_copy_" not in reports[0].final_ir.replace("index_copy.", "")


def test_step_counter_is_updated_in_place_after_its_readers():
    """HF's static cache: positions = arange + n is read first, then n += 1."""
    def fn(n, cache, k):
        pos = torch.arange(1) + n
        n.add_(1)
        cache.index_copy_(0, pos, k)
        return cache.sum()

    (want, a), (got, b), reports = _both(fn, torch.tensor(3), torch.zeros(8, 2), torch.randn(1, 2))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b[0], a[0], rtol=0, atol=0)
    torch.testing.assert_close(b[1], a[1], rtol=0, atol=0)
    ir = reports[0].final_ir
    assert "= add_." in ir and "= index_copy_." in ir


def test_written_input_returned_is_the_callers_tensor():
    def fn(counter, x):
        counter.add_(1)
        return counter, x + counter

    counter = torch.zeros((), dtype=torch.long)
    with torch.no_grad():
        c, y = _compile(fn)(counter, torch.ones(3, dtype=torch.long))
    assert c is counter and int(counter) == 1
    assert y.tolist() == [2, 2, 2]


def test_full_cache_raises_naming_both_numbers_before_writing():
    def fn(cache, pos, k):
        cache.index_copy_(1, pos, k)
        return cache.sum()

    cache = torch.randn(2, 8, 4)
    before = cache.clone()
    fast = _compile(fn)
    with torch.no_grad():
        fast(cache, torch.tensor([7]), torch.randn(2, 1, 4))
        kept = cache.clone()
        with pytest.raises(IndexError, match=r"row 8 .* 8 rows.*max_cache_len 8"):
            fast(cache, torch.tensor([8]), torch.randn(2, 1, 4))
    torch.testing.assert_close(cache, kept, rtol=0, atol=0)
    torch.testing.assert_close(cache[:, :7], before[:, :7], rtol=0, atol=0)


def test_symbolic_integer_outputs_compile():
    def fn(x):
        return x * 2, x.shape[0] * 3 + 1

    fast = _compile(fn)
    for n in (3, 5, 7):                     # the second size makes dim 0 dynamic
        y, s = fast(torch.randn(n, 4))
        assert s == n * 3 + 1 and y.shape == (n, 4)


def test_reinplace_pass_structure():
    """The pass alone: input written back -> in place; read twice -> stays functional."""
    b = Builder()
    cache = b.input("cache", [4, 16, 8])
    pos = b.input("pos", [1], dtype=torch.int64)
    k = b.input("k", [4, 1, 8])
    new = b.call("index_copy", cache, 1, pos, k)
    g = b.graph([new])
    g = Graph(g.nodes, g.inputs, g.outputs, g.constants, name="g", writes=((0, 0),))
    out = reinplace(g)
    assert [n.op for n in out.compute_nodes] == ["index_copy_"]
    verify(out)

    b = Builder()
    cache = b.input("cache", [4, 16, 8])
    pos = b.input("pos", [1], dtype=torch.int64)
    k = b.input("k", [4, 1, 8])
    total = b.call("sum", cache)
    new = b.call("index_copy", cache, 1, pos, k)
    g = b.graph([new, total])
    g = Graph(g.nodes, g.inputs, g.outputs, g.constants, name="g", writes=((0, 0),))
    assert "index_copy_" not in [n.op for n in reinplace(g).compute_nodes]
    # Not written back: the caller's tensor must not change, whoever reads it.
    g2 = Graph(g.nodes, g.inputs, (new,), g.constants, name="g")
    assert "index_copy_" not in [n.op for n in reinplace(g2).compute_nodes]


def test_verifier_rejects_a_read_after_an_in_place_write():
    b = Builder()
    cache = b.input("cache", [4, 16, 8])
    pos = b.input("pos", [1], dtype=torch.int64)
    k = b.input("k", [4, 1, 8])
    new = b.call("index_copy_", cache, 1, pos, k)
    late = b.call("sum", cache)
    g = b.graph([new, late])
    with pytest.raises(VerificationError, match="reads it afterwards"):
        verify(g)
