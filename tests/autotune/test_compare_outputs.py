"""The selection's check of a candidate's outputs against the float64 reference
(``measure.check_outputs``): the chunked float32 comparison finds the same error as a
float64 one, across chunk boundaries, with non-finite values in the same or other places."""
import pytest
import torch

from braze.autotune import measure
from braze.ir import Builder


def _node(shape, dtype=torch.float32):
    b = Builder()
    x = b.input("x", shape, dtype)
    return b.graph([b.call("exp", x)], name="g").compute_nodes[0]


@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_the_error_is_the_float64_one_across_chunks(monkeypatch, chunk):
    monkeypatch.setattr(measure, "COMPARE_CHUNK", chunk)
    torch.manual_seed(0)
    ref = torch.randn(37, 11, dtype=torch.float64)
    out = (ref * (1 + 1e-3 * torch.randn_like(ref))).float()
    out[36, 10] = ref[36, 10] + 0.25                      # the worst element, in the last chunk
    want = float((out.double() - ref).abs().max() / ref.abs().max())
    problem, err = measure.check_outputs(_node((37, 11)), {}, out, (ref,))
    assert err == pytest.approx(want, rel=1e-5)
    assert problem is not None and "max relative error" in problem
    assert measure.check_outputs(_node((37, 11)), {}, ref.float(), (ref,)) == (None, pytest.approx(0, abs=1e-7))


@pytest.mark.parametrize("chunk", [5, 1 << 22])
def test_non_finite_values_must_sit_where_the_reference_has_them(monkeypatch, chunk):
    monkeypatch.setattr(measure, "COMPARE_CHUNK", chunk)
    ref = torch.linspace(-2, 2, 40, dtype=torch.float64).reshape(4, 10)
    ref[1, 3], ref[2, 9] = float("inf"), float("nan")
    out = ref.float()
    problem, err = measure.check_outputs(_node((4, 10)), {}, out, (ref,))
    assert problem is None and err < 1e-7                  # same places: compared where finite
    for i, v in ((0, float("nan")), (1, float("-inf"))):
        bad = out.clone()
        bad.view(-1)[i * 17] = v
        assert "non-finite" in measure.check_outputs(_node((4, 10)), {}, bad, (ref,))[0]
    swapped = out.clone()
    swapped[2, 9] = float("inf")                           # inf where the reference has nan
    assert "non-finite" in measure.check_outputs(_node((4, 10)), {}, swapped, (ref,))[0]
    nothing = torch.full((4, 10), float("nan"), dtype=torch.float64)
    assert measure.check_outputs(_node((4, 10)), {}, nothing.float(), (nothing,)) == (None, 0.0)


def test_a_float64_output_is_compared_in_float64():
    ref = torch.ones(8, dtype=torch.float64)
    out = ref + 1e-12
    err = measure.check_outputs(_node((8,), torch.float64), {}, out, (ref,))[1]
    assert err == pytest.approx(1e-12, rel=1e-3)
