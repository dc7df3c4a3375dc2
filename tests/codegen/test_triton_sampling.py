"""The fused sampling kernel (``TRITON_INTERPRET=1`` on the CPU) against the
torch reference: greedy equals argmax exactly; sampled tokens follow the
distribution Hugging Face's warpers define (a chi-square test with a fixed
seed, on many rows of the same logits); the seed advances on the device."""
from __future__ import annotations

import math

import pytest
import torch

from braze.compiler.codegen.triton.sampling import sample_fused
from braze.compiler.sampling import SamplingParams, sample_reference

# 99.9th percentile of chi-square by degrees of freedom (a fixed seed: the test is deterministic).
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59,
            11: 31.26, 12: 32.91, 13: 34.53, 14: 36.12, 15: 37.70}


def _expected(row: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """HF's warpers in float64: temperature, top-k, top-p, softmax."""
    scores = row.double() / p.temperature
    if p.top_k:
        kth = scores.topk(p.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if p.top_p < 1.0:
        ordered, order = scores.sort()
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - p.top_p
        drop[-1] = False
        scores = scores.masked_fill(drop.scatter(0, order, drop), -math.inf)
    return scores.softmax(-1)


def _chi2(tokens: torch.Tensor, probs: torch.Tensor) -> tuple[float, int, int]:
    n = tokens.numel()
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    exp = probs * n
    live = exp > 0
    chi2 = float((((counts - exp) ** 2)[live] / exp[live]).sum())
    return chi2, int(live.sum()) - 1, int(counts[~live].sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_is_argmax(device, dtype):
    logits = (torch.randn(5, 1000) * 4).to(dtype)
    logits[3, 17] = logits[3, 900] = logits[3].max() + 1       # a tie: the first index wins, like argmax
    seed = torch.tensor([0], device=device)
    got = sample_fused(logits.to(device), SamplingParams(), seed, block=256).cpu()
    assert torch.equal(got, logits.argmax(-1))
    assert int(seed) == 0                                       # greedy draws nothing


def test_greedy_over_a_long_vocabulary_is_argmax_in_two_launches(device):
    """Past GREEDY_CHUNK columns greedy splits the row: chunk maxima, then one combine;
    ties inside a chunk and across chunks go to the first index, like torch.argmax."""
    from braze.compiler.codegen.triton import sampling

    V = 3 * 64 + 17
    logits = torch.randn(4, V) * 4
    top = logits.max() + 1
    logits[1, 5] = logits[1, 200] = top                  # across chunks: 5 wins
    logits[2, 70] = logits[2, 71] = top                  # inside one chunk: 70 wins
    logits[3, :] = -math.inf                             # no finite logit: column 0, as argmax says
    out = torch.empty(4, dtype=torch.int64, device=device)
    sampling.greedy_split(logits.to(device), out, chunk=64, block=32)
    assert torch.equal(out.cpu(), logits.argmax(-1))


CASES = [SamplingParams(True, 0.7), SamplingParams(True, 1.3, top_k=4), SamplingParams(True, 1.0, top_p=0.8),
         SamplingParams(True, 0.9, top_k=6, top_p=0.7)]


def _rows(device: str, params: SamplingParams) -> int:
    # The interpreter runs a program in ~10 ms, ~100 ms with a bisection; a GPU runs them all at once.
    if device != "cpu":
        return 20000
    return 1200 if not (params.top_k or params.top_p < 1.0) else 100


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"T{p.temperature}-k{p.top_k}-p{p.top_p}")
def test_sampled_tokens_follow_the_warped_distribution(device, params):
    g = torch.Generator().manual_seed(3)
    row = torch.randn(8, generator=g) * 1.5
    rows = _rows(device, params)
    logits = row.expand(rows, -1).contiguous().to(device)
    seed = torch.tensor([11], device=device)
    tokens = sample_fused(logits, params, seed, block=4).cpu()   # blocks smaller than the row: the loops run
    probs = _expected(row, params)
    chi2, dof, outside = _chi2(tokens, probs)
    assert outside == 0, "a token the filters remove was drawn"
    if dof:
        assert chi2 < CHI2_999[dof], (chi2, dof)
    assert int(seed) == 12


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"T{p.temperature}-k{p.top_k}-p{p.top_p}")
def test_reference_sampler_follows_the_warped_distribution(params):
    """The torch reference (what runs on the CPU) passes the same test with many draws."""
    g = torch.Generator().manual_seed(3)
    row = torch.randn(40, generator=g) * 1.5
    tokens = sample_reference(row.expand(50000, -1), params, torch.Generator().manual_seed(0))
    chi2, dof, outside = _chi2(tokens, _expected(row, params))
    assert outside == 0 and (not dof or chi2 < CHI2_999.get(dof, 2.0 * dof + 40)), (chi2, dof)


def test_same_seed_same_tokens_next_call_new_tokens(device):
    logits = torch.randn(64, 10).to(device)
    p = SamplingParams(True, 1.0)
    a = sample_fused(logits, p, torch.tensor([5], device=device))
    b = sample_fused(logits, p, torch.tensor([5], device=device))
    seed = torch.tensor([5], device=device)
    c1 = sample_fused(logits, p, seed)
    c2 = sample_fused(logits, p, seed)
    assert torch.equal(a, b) and torch.equal(a, c1) and not torch.equal(c1, c2)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(True, top_k=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(True, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(True, temperature=float("nan"))
    with pytest.raises(ValueError, match=r"\[batch, vocab\]"):
        sample_fused(torch.randn(3), SamplingParams(), torch.tensor([0]))


@pytest.mark.parametrize("eos", [None, 7, (9, 7, 2)], ids=["no-eos", "eos", "three-eos"])
def test_step_bookkeeping_in_one_launch_equals_the_aten_sequence(device, eos):
    """``record_fused``: pad for finished rows, done marks, the token's column of ``out``,
    then the column and every row's position advanced, as ``compiler/generate.py``'s ATen
    sequence does them."""
    from braze.compiler.codegen.triton.sampling import record_fused

    B, L, pad = 5, 9, 0
    token = torch.tensor([7, 3, 7, 1, 2])
    done = torch.tensor([False, False, True, True, False])
    out = torch.randint(0, 50, (B, L))
    column, position = torch.tensor([4]), torch.arange(B)[:, None] + 10
    want_done, want_out, want_pos = done.clone(), out.clone(), position + 1
    t = token.clone()
    if eos is not None:
        t = torch.where(want_done, pad, t)
        want_done |= torch.isin(t, torch.tensor(eos))
    want_out[:, 4] = t
    dev = [x.clone().to(device) for x in (token, torch.zeros(B, dtype=torch.long), done, out, column, position)]
    record_fused(*dev, eos, pad)
    _, last, d, o, c, p = (x.cpu() for x in dev)
    assert torch.equal(last, t) and torch.equal(o, want_out) and torch.equal(p, want_pos)
    assert int(c) == 5 and torch.equal(d, want_done if eos is not None else done)
