"""Padding elimination: whole models equal eager on valid tokens, padding
positions are zero, pack/unpack sit where expected, non-padding masks are
declined with a reason."""
from __future__ import annotations

import pytest
import torch

from tools import hf_models
from braze.compiler.backend import make_backend
from braze.config import Options
from braze.ir import parse_graph

LENGTH_MIXES = {
    "full_and_one": [12, 1, 7],
    "uneven": [9, 12, 4],
}


def _run(model, family, inp):
    with torch.no_grad():
        return (model(**inp) if family == "bert" else model(**inp, use_cache=False))[0]


def _ops(report):
    g = parse_graph(report.final_ir)
    ops = [n.op for n in g.compute_nodes]
    sub = [m.op for n in g.compute_nodes if n.op == "fused" for m in n.attr("graph").compute_nodes]
    return ops + sub


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2"])
def test_model_equals_eager_on_valid_tokens_and_zero_on_padding(family, padding):
    model = hf_models.build(family)
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True), reports))
    for mix, lengths in LENGTH_MIXES.items():
        seq = max(lengths) if mix == "full_and_one" else max(lengths) + 2
        inp = hf_models.inputs(3, seq, padding=padding, lengths=lengths, seed=seq)
        ref = _run(model, family, inp)
        out = _run(compiled, family, inp)
        valid = inp["attention_mask"].bool()
        err = float((out - ref)[valid].abs().max() / ref[valid].abs().max())
        assert err <= 1e-5, (mix, err)
        if (family, padding) == ("bert", "left"):
            # the pooler reads token 0, padding here: the graph runs unpacked, equal to eager everywhere
            assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-5
        else:
            assert torch.count_nonzero(out[~valid]) == 0, "padding positions must be zero"
    for r in reports:
        ops = _ops(r)
        assert ops.count("padding_index") == 1 and ops.count("attention_varlen") == 2, r.notes


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_a_batch_of_one_is_packed_too(family):
    """Dynamo specialises a batch of 1: the mask is looked up at a constant row 0 and
    [S] -> [1, S] reshapes split the merged token dim; both are still token-wise."""
    model = hf_models.build(family)
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True), reports))
    for padding, lengths in (("left", [5]), ("right", [9]), (None, None)):
        inp = hf_models.inputs(1, 11, padding=padding, lengths=lengths, seed=3)
        ref, out = _run(model, family, inp), _run(compiled, family, inp)
        valid = inp["attention_mask"].bool()
        assert float((out - ref)[valid].abs().max() / ref[valid].abs().max()) <= 1e-5, padding
        if (family, padding) != ("bert", "left"):      # BERT's pooler under left padding: run unpacked
            assert torch.count_nonzero(out[~valid]) == 0
    assert reports and all(_ops(r).count("attention_varlen") == 2 for r in reports), [r.notes for r in reports]


def test_llama_structure():
    model = hf_models.build("llama")
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True, fuse=False), reports))
    _run(compiled, "llama", hf_models.inputs(2, 10, padding="right"))
    g = parse_graph(reports[0].final_ir)
    ops = [n.op for n in g.compute_nodes]
    assert ops.count("padding_index") == 1
    assert ops.count("pack") == 1            # input_ids, once, before the embedding
    assert ops.count("unpack") == 1          # the logits, at the output
    assert ops.count("attention_varlen") == 2
    pack = next(n for n in g.compute_nodes if n.op == "pack")
    emb = next(n for n in g.compute_nodes if n.op == "embedding")
    assert emb.args[1] == pack.out()         # packed ids feed the embedding lookup
    unpack = next(n for n in g.compute_nodes if n.op == "unpack")
    assert g.outputs[0].node in (unpack,) or unpack.out() in {v for v in g.outputs} or \
        any(v in unpack.outputs for n in g.compute_nodes if n.op == "reshape" for v in n.inputs)
    # rotary cos/sin are gathered at each token's own position, not packed as tokens
    assert ops.count("index_select") == 2    # cos and sin, shared by q and k and by both layers


def test_bert_structure():
    model = hf_models.build("bert")
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True, fuse=False), reports))
    _run(compiled, "bert", hf_models.inputs(2, 10, padding="right"))
    g = parse_graph(reports[0].final_ir)
    ops = [n.op for n in g.compute_nodes]
    # input ids and token-type ids enter packed; position embeddings are gathered by position
    assert ops.count("pack") == 2 and ops.count("index_select") == 1
    # last_hidden_state is unpacked once; the pooler reads token 0 of the unpacked value
    assert ops.count("unpack") == 1 and ops.count("attention_varlen") == 2


@pytest.mark.parametrize("model_class", ["BertModel", "BertForSequenceClassification"])
def test_a_pooler_reading_token_0_is_guarded(model_class, monkeypatch):
    """BERT's pooler reads token 0 in the padded layout: right-padded batches run packed
    (the pooled output equal to eager), a batch where token 0 is padding in some row runs
    the graph unpacked (eager's values there, not the zeros of an unpacked output)."""
    import transformers

    from braze.compiler.padded_program import PositionGuarded

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  vocab_size=128, initializer_range=0.2)
    model = getattr(transformers, model_class)(cfg).eval()
    programs: list = []
    init = PositionGuarded.__init__

    def record(self, *a, **k):
        init(self, *a, **k)
        programs.append(self)

    monkeypatch.setattr(PositionGuarded, "__init__", record)
    compiled = torch.compile(model, backend=make_backend(Options(strict=True)))
    for padding in ("right", "left", "right"):
        inp = hf_models.inputs(3, 12, padding=padding, lengths=[12, 2, 7], seed=1)
        with torch.no_grad():
            want, got = model(**inp), compiled(**inp)
        key = "pooler_output" if model_class == "BertModel" else "logits"
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
    (prog,) = programs
    assert prog.fallbacks == 1 and prog.positions == (0,)


def test_a_mean_over_the_sequence_is_not_packed():
    """A mean over every position (padding included, as the user wrote it) cannot run on
    packed tokens: the pass declines, naming the op."""
    model = hf_models.build("bert", initializer_range=0.2)
    reports: list = []

    def embed(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.mean(dim=1)

    compiled = torch.compile(embed, backend=make_backend(Options(strict=True), reports))
    inp = hf_models.inputs(2, 16, padding="right", lengths=[16, 5])
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inp), embed(**inp), rtol=1e-5, atol=1e-5)
    assert "padding_index" not in reports[0].final_ir
    assert any("reads token values in the padded layout" in n for n in reports[0].notes)


class ArbitraryMask(torch.nn.Module):
    """Attention with a mask that is not a padding mask: a per-query pattern."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 48)

    def forward(self, x, mask):
        q, k, v = self.proj(x).view(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
        keep = (mask[:, None, :, None] * mask[:, None, None, :]).roll(1, dims=-1).bool()
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def test_non_padding_mask_is_declined_with_a_reason():
    import braze

    m = ArbitraryMask().eval()
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    report = braze.explain(m, x, mask, options={"strict": True})
    notes = " ".join(n for g in report.graphs for n in g.notes)
    assert "eliminate_padding: pack the valid tokens of a padded batch declined" in notes and "not provably padding" in notes
    with torch.no_grad():
        torch.testing.assert_close(braze.jit(m, strict=True)(x, mask), m(x, mask), equal_nan=True)


def test_disabled_pass_leaves_padding():
    model = hf_models.build("gpt2")
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True, disable=("eliminate_padding",)),
                                                         reports))
    _run(compiled, "gpt2", hf_models.inputs(2, 8, padding="left"))
    assert "pack" not in _ops(reports[0])


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_bucketed_prologue_program_equals_eager(backend, monkeypatch, tmp_path):
    """The CUDA-graph layout of a padding-eliminated program (prologue + body
    per token bucket), run here without graph capture. With Triton kernels (the
    interpreter) the LM head scatters its rows, bucket rows to the discarded row."""
    from braze.compiler.driver import compile_graph
    from braze.compiler.backend import capture_graphs
    from braze.compiler.padded_program import PaddedProgram, token_bucket

    if backend == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setenv("BRAZE_CACHE_DIR", str(tmp_path))
    model = hf_models.build("llama")
    inp = hf_models.inputs(3, 12, padding="left", lengths=[12, 1, 7])
    (g,) = capture_graphs(lambda **a: model(**a, use_cache=False), **inp)
    prog = compile_graph(g, Options(strict=True, cuda_graphs=True, backend=backend))
    assert isinstance(prog, PaddedProgram)
    scatters = [n for n in prog.body.graph.compute_nodes if n.op == "fused"
                and any(m.op == "unpack" for m in n.attr("graph").compute_nodes)]
    assert len(scatters) == (1 if backend == "triton" else 0)
    assert not prog.body.graph.sym_bounds and len(prog.body.graph.inputs) == len(g.inputs) + 5
    xs = [inp[n.args[0].split(".")[-1]] for n in g.inputs]
    out = prog(*xs)[0]
    ref = _run(model, "llama", inp)
    valid = inp["attention_mask"].bool()
    assert float((out - ref)[valid].abs().max() / ref[valid].abs().max()) <= 1e-5
    assert torch.count_nonzero(out[~valid]) == 0
    assert token_bucket(20) == 64 and token_bucket(1000) == 64 and token_bucket(5000) == 512


@pytest.mark.parametrize("family,kind", [("bert", "reduction"), ("llama", "gemm")])
def test_unpack_is_a_scatter_store_of_the_last_kernel(family, kind, monkeypatch, tmp_path):
    """With Triton kernels (here under the interpreter), the output's ``unpack`` joins
    the kernel that computes it: BERT's final LayerNorm, Llama's LM head."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("BRAZE_CACHE_DIR", str(tmp_path))
    model = hf_models.build(family)
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True, backend="triton"), reports))
    # NOTE: BERT right-padded: its pooler reads token 0, which must be valid in every row
    inp = hf_models.inputs(3, 12, padding="right" if family == "bert" else "left", lengths=[12, 1, 7], seed=5)
    ref, out = _run(model, family, inp), _run(compiled, family, inp)
    valid = inp["attention_mask"].bool()
    assert float((out - ref)[valid].abs().max() / ref[valid].abs().max()) <= 1e-5
    assert torch.count_nonzero(out[~valid]) == 0
    g = parse_graph(reports[0].final_ir)
    assert not [n for n in g.compute_nodes if n.op == "unpack"]
    (group,) = [n for n in g.compute_nodes if n.op == "fused"
                and any(m.op == "unpack" for m in n.attr("graph").compute_nodes)]
    assert group.attr("kind") == kind and g.outputs[0] == group.out()


def test_sliding_window_models_are_packed():
    """Mistral's sliding window (8 here): a batch of at most 8 tokens has its mask proven
    plain causal; a longer one is packed with the window counted in the tokens' positions
    (``attention_varlen`` positions), so a padding mask with holes inside a row gives
    what the dense model gives."""
    model = hf_models.build("mistral")
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True), reports))
    for seq, lengths in ((8, [8, 1, 5]), (12, [12, 3, 9]), (20, [20, 6, 14])):
        inp = hf_models.inputs(3, seq, padding="left", lengths=lengths, seed=seq)
        if seq == 20:
            inp["attention_mask"][0, 9:12] = 0      # a hole: 3 padded tokens inside row 0
        ref, out = _run(model, "mistral", inp), _run(compiled, "mistral", inp)
        valid = inp["attention_mask"].bool()
        assert float((out - ref)[valid].abs().max() / ref[valid].abs().max()) <= 1e-5, seq
        assert torch.count_nonzero(out[~valid]) == 0     # packed: zeros at padding
    assert _ops(reports[0]).count("attention_varlen") == 2
    windowed = [ln for ln in reports[-1].final_ir.splitlines() if " = attention_varlen(" in ln]
    assert len(windowed) == 2 and all("window=8" in ln for ln in windowed), windowed


def test_gemma2_soft_capped_alternating_windows_are_packed():
    model = hf_models.build("gemma2")
    reports: list = []
    compiled = torch.compile(model, backend=make_backend(Options(strict=True), reports))
    inp = hf_models.inputs(3, 20, padding="left", lengths=[20, 6, 14], seed=4)
    inp["attention_mask"][0, 5:8] = 0                   # a hole inside row 0
    ref, out = _run(model, "gemma2", inp), _run(compiled, "gemma2", inp)
    valid = inp["attention_mask"].bool()
    assert float((out - ref)[valid].abs().max() / ref[valid].abs().max()) <= 1e-5
    assert torch.count_nonzero(out[~valid]) == 0
    lines = [ln for ln in reports[-1].final_ir.splitlines() if " = attention_varlen(" in ln]
    assert len(lines) == model.config.num_hidden_layers
    assert all(f"softcap={model.config.attn_logit_softcapping}" in ln for ln in lines), lines
    assert any("window=" in ln for ln in lines) and any("window=None" in ln or "window=" not in ln
                                                         for ln in lines), lines
