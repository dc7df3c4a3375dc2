"""Hugging Face models from small configs, compiled by braze, equal eager.

float32 on the CPU, max relative error 1e-5 over valid positions, with and
without an attention mask, at two sequence lengths (the second must not
reuse the first compilation's shapes), through torch.compile and braze.jit.
"""
from __future__ import annotations

import pytest
import torch

import braze
from tools import hf_models
from braze.compiler.backend import make_backend
from braze.config import Options

FAMILIES = ["gpt2", "llama", "bert", "opt", "bloom", "mistral", "qwen2", "gemma", "phi"]


def _run(model, family, inp):
    with torch.no_grad():
        out = model(**inp) if family == "bert" else model(**inp, use_cache=False)
    return out[0]


def _rel_err(out, ref, mask):
    m = mask.bool()
    return float((out - ref)[m].abs().max() / ref[m].abs().max())


@pytest.mark.parametrize("entry", ["torch.compile", "braze.jit"])
@pytest.mark.parametrize("family", FAMILIES)
def test_model_matches_eager(family, entry):
    model = hf_models.build(family)
    reports: list = []
    opts = Options(strict=True)
    if entry == "torch.compile":
        compiled = torch.compile(model, backend=make_backend(opts, reports))
    else:
        compiled = braze.jit(model, strict=True)
    cases = [(11, None), (19, "right")] if entry == "torch.compile" else [(11, "left"), (19, None)]
    for seq, padding in cases:
        inp = hf_models.inputs(2, seq, padding=padding, seed=seq)
        ref = _run(model, family, inp)
        out = _run(compiled, family, inp)
        assert out.shape == ref.shape, "a second length must not reuse the first compilation's shapes"
        assert _rel_err(out, ref, inp["attention_mask"]) <= 1e-5
    if reports:
        assert not any(r.fallback for r in reports), [r.fallback for r in reports]


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "opt", "bloom", "mistral", "qwen2", "gemma", "phi"])
def test_every_aten_op_lowers_to_a_known_op(family, caplog):
    """No opaque node in the lowered forward pass of any model family."""
    from braze.ir import Category, get_op

    model = hf_models.build(family, attn="eager" if family in ("gpt2", "mistral") else "sdpa")
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True, disable=("cse",)), reports))
    inp = hf_models.inputs(2, 9, padding="right")
    _run(compiled, family, inp)
    assert reports and not any("does not know" in r.message for r in caplog.records)
    from braze.ir import parse_graph

    for r in reports:
        g = parse_graph(r.input_ir)
        opaque = sorted({n.op for n in g.compute_nodes if get_op(n.op).category == Category.OPAQUE})
        assert not opaque, f"{family}: opaque ops {opaque}"
