"""Hugging Face attention, every family and implementation, becomes one
``attention`` op per layer with the right attributes, and the compiled
model equals eager.

Each case compiles the model once through braze (Dynamo, strict), runs it at
a static and then a symbolic sequence length with right and left padding
(or without any ``attention_mask``), compares with eager on valid positions
(fp32, max relative error 1e-5), and checks the optimised graphs of both
compilations: one ``attention`` per layer, no softmax or SDPA left, the
expected causal/window/groups/scale/mask, the padding mask a view of
``attention_mask`` itself, and K/V passed with their own (fewer) heads.
"""
from __future__ import annotations

import pytest
import torch

from tools import hf_models
from braze.compiler.backend import make_backend
from braze.config import Options

LAYERS = 2
# family -> attributes every attention must have (head dim 16: scale 0.25)
EXPECT = {
    "gpt2": dict(causal="top_left", window=None, groups=1),
    "llama": dict(causal="top_left", window=None, groups=2),
    "bert": dict(causal="none", window=None, groups=1),
    "opt": dict(causal="top_left", window=None, groups=1),      # q pre-scaled: folded into scale
    "bloom": dict(causal="top_left", window=None, groups=1),
    "mistral": dict(causal="top_left", window=8, groups=2),      # sliding_window 8 < sequence
    "qwen2": dict(causal="top_left", window=None, groups=2),
    "gemma": dict(causal="top_left", window=None, groups=4),     # MQA: one K/V head
    "phi": dict(causal="top_left", window=None, groups=1),
}
CASES = [(f, a, "padded") for f in EXPECT for a in ("eager", "sdpa") if not (f == "bloom" and a == "sdpa")]
# Without attention_mask HF builds the mask from positions (packed-sequence detection): one case per
# distinct mask-building path (the llama-like families share theirs), to keep the file fast.
CASES += [("gpt2", "eager", "no_mask"), ("llama", "eager", "no_mask"), ("llama", "sdpa", "no_mask"),
          ("bert", "sdpa", "no_mask"), ("opt", "eager", "no_mask"), ("bloom", "eager", "no_mask"),
          ("mistral", "sdpa", "no_mask")]


def _run(model, family, inp):
    with torch.no_grad():
        out = model(**inp) if family == "bert" else model(**inp, use_cache=False)
    return out[0]


def _compile(model):
    entries: list = []
    # padding elimination would turn the padded attention into attention_varlen (tests/passes has its own)
    inner = make_backend(Options(strict=True, disable=("eliminate_padding",)))

    def backend(gm, example_inputs):
        entries.append(inner(gm, example_inputs))
        return entries[-1]

    torch._dynamo.reset()
    return torch.compile(model, backend=backend), entries


def _calls(masking):
    if masking == "no_mask":
        return [{"input_ids": hf_models.inputs(2, n, seed=n)["input_ids"]} for n in (11, 13)]
    return [hf_models.inputs(2, 11, padding="right", seed=1), hf_models.inputs(2, 11, padding="left", seed=2),
            hf_models.inputs(2, 13, padding="left", seed=3, lengths=[13, 6]),
            hf_models.inputs(2, 13, padding="right", seed=4, lengths=[9, 13])]


def _producers(v):
    """Ops from ``v`` back to the graph inputs along first operands."""
    ops = []
    while v is not None:
        ops.append(v.node.op)
        v = v.node.inputs[0] if v.node.inputs else None
    return ops


@pytest.mark.parametrize("family,attn,masking", CASES)
def test_attention_is_specialised_and_model_matches_eager(family, attn, masking):
    model = hf_models.build(family, attn=attn, **({"n_layer": LAYERS} if family in ("gpt2", "bloom")
                                                 else {"num_hidden_layers": LAYERS}))
    compiled, entries = _compile(model)
    for inp in _calls(masking):
        ref, out = _run(model, family, inp), _run(compiled, family, inp)
        valid = inp.get("attention_mask", torch.ones(ref.shape[:2])).bool()
        err = float((out - ref)[valid].abs().max() / ref[valid].abs().max())
        assert err <= 1e-5, f"{family}/{attn}/{masking}: max rel error {err}"
    assert len(entries) == 2, "a static then a symbolic-length compilation"
    want = EXPECT[family]
    heads_kv = 4 // want["groups"]
    for e in entries:
        g = e.program.graph
        ops = [n.op for n in g.compute_nodes]
        attn_nodes = [n for n in g.compute_nodes if n.op == "attention"]
        assert len(attn_nodes) == LAYERS, f"{family}/{attn}: {ops.count('attention')} attention ops"
        assert not {"_softmax", "sdpa", "bmm", "baddbmm"} & set(ops), sorted(set(ops))
        S = g.inputs[0].type.shape[1]
        for a in attn_nodes:
            kw = a.kw
            assert {k: kw[k] for k in want} == want, kw
            assert kw["scale"] == pytest.approx(0.25)
            q, k, v, mask, slopes = a.args
            assert k.type.shape[1] == heads_kv and v.type.shape[1] == heads_kv, "K/V must not be repeated"
            if masking == "no_mask":
                assert mask is None and kw["mask_kind"] == "none", kw
                assert (slopes is not None) == (family == "bloom"), "ALiBi on arange positions -> slopes"
                continue
            assert slopes is None  # BLOOM's positions come from the padding mask: kept additive
            assert "attention_mask" in g.inputs[_input_index(g, mask)].args[0]
            if family == "bloom":
                assert kw["mask_kind"] == "additive" and mask.type.shape == (2, 4, 1, S)
            else:
                assert kw["mask_kind"] == "bool" and mask.type.shape == (2, 1, 1, S)
                assert _producers(mask)[:3] == ["reshape", "_to_copy", "input"], _producers(mask)


def _input_index(g, v) -> int:
    """The graph input the mask is computed from."""
    stack, seen = [v], set()
    while stack:
        x = stack.pop()
        if x.node in seen:
            continue
        seen.add(x.node)
        if x.node.op == "input" and "attention_mask" in x.node.args[0]:
            return g.inputs.index(x.node)
        stack.extend(x.node.inputs)
    raise AssertionError("the mask does not come from attention_mask")


def test_output_attentions_keeps_the_probabilities():
    """The probabilities are a model output: the pass declines and the model stays exact."""
    model = hf_models.build("llama", attn="eager")
    compiled, entries = _compile(model)
    inp = hf_models.inputs(2, 9, padding="right")
    with torch.no_grad():
        ref = model(**inp, use_cache=False, output_attentions=True)
        out = compiled(**inp, use_cache=False, output_attentions=True)
    for r, o in zip((ref.logits,) + tuple(ref.attentions), (out.logits,) + tuple(out.attentions)):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-6)
    assert not any(n.op == "attention" for e in entries for n in e.program.graph.compute_nodes)
