"""Weight-only INT8 / INT4 (braze.quantize) on the CPU.

Packing round trips, the dequantize op against its definition, the fold of
dequantization into quant_linear (parallel projections merged), the
quantized model under braze against the quantized model in eager, the
relative logit error against the float model, and a real accuracy check: a
tiny Llama trained here to sort sequences keeps its accuracy after int8 and
int4 (g128). Errors name the layer, its shape and the group size.
"""
from __future__ import annotations

import pytest
import torch

import braze
from braze.compiler.quantize import QuantEmbedding, QuantizeError, QuantLinear, quantize_weight, weight_bytes
from braze.ir.quant import dequantize, pack_int4, unpack_int4
from tools import hf_models


def test_int4_packing_round_trips():
    q = torch.randint(0, 16, (7, 96), dtype=torch.uint8)
    packed = pack_int4(q)
    assert packed.shape == (7, 48) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q)
    # chunks of 32 channels: byte 16c + i holds channel 32c + i (low nibble) and 32c + 16 + i (high)
    for c, i in ((0, 0), (0, 15), (1, 3), (2, 9)):
        assert torch.equal(packed[:, 16 * c + i] & 0xF, q[:, 32 * c + i])
        assert torch.equal(packed[:, 16 * c + i] >> 4, q[:, 32 * c + 16 + i])
    with pytest.raises(ValueError, match="not a multiple of 32"):
        pack_int4(q[:, :48])


@pytest.mark.parametrize("bits,group,bound", [(8, 0, 0.01), (4, 32, 0.09), (4, 128, 0.12)])
def test_quantize_then_dequantize_is_close(bits, group, bound):
    w = torch.randn(48, 256)
    q, s, z = quantize_weight(w, bits, group)
    back = dequantize(q, s, z, bits, group, torch.float32)
    assert back.shape == w.shape
    assert ((back - w).norm() / w.norm()).item() < bound
    if bits == 4:
        # the definition: w = (q - z) * s per group, q unpacked low nibble first
        qq = unpack_int4(q).float().reshape(48, 256 // group, group)
        want = ((qq - z[..., None]) * s[..., None]).reshape(48, 256)
        torch.testing.assert_close(back, want)
    else:
        torch.testing.assert_close(back, q.float() * s[:, None])


def _llama(**kw):
    return hf_models.build("llama", hidden_size=128, intermediate_size=256, **kw)


@pytest.mark.parametrize("fmt,group,bound", [("int8", 128, 0.03), ("int4", 32, 0.15), ("int4", 128, 0.25)])
def test_quantized_model_logits_and_memory(fmt, group, bound):
    model = _llama()
    ids = hf_models.inputs(2, 16)["input_ids"]
    with torch.no_grad():
        ref = model(ids).logits
    q = braze.quantize(model, fmt, group_size=group, inplace=False)
    assert isinstance(q.model.layers[0].mlp.down_proj, QuantLinear) and not isinstance(q.lm_head, QuantLinear)
    with torch.no_grad():
        out = q(ids).logits
    assert ((out - ref).norm() / ref.norm()).item() < bound


@pytest.mark.parametrize("fmt,limit", [("int8", 0.52), ("int4", 0.3)])
def test_weight_memory_against_bf16(fmt, limit):
    """The quantized layers' bytes (weights, scales, zero points) against their bf16 weights (g128)."""
    model = _llama(dtype=torch.bfloat16)
    layers_bf16 = sum(weight_bytes(m) for m in model.modules() if isinstance(m, torch.nn.Linear)
                      and m is not model.lm_head)
    q = braze.quantize(model, fmt, group_size=128, inplace=False)
    layers_q = sum(weight_bytes(m) for m in q.modules() if isinstance(m, QuantLinear))
    assert layers_q / layers_bf16 <= limit, layers_q / layers_bf16


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_braze_runs_the_quantized_model_as_eager_does(fmt):
    model = braze.quantize(_llama(), fmt, group_size=64)
    ids = hf_models.inputs(2, 12)["input_ids"]
    with torch.no_grad():
        want = model(ids).logits
        report = braze.explain(model, ids, options={"strict": True})
        got = braze.jit(model, strict=True)(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ir = report.graphs[0].final_ir
    assert "braze::dequantize" not in ir
    assert ir.count("= quant_linear(") == 2 * 4      # per layer: QKV and gate/up merged, o_proj, down_proj
    assert "qfused" in ir
    # On the CPU the Triton kernel declines (the report says so); ATen's integer-weight
    # kernels or the reference run, whichever the selection timed faster.
    assert any("triton_quant declines" in n for g in report.graphs for n in g.notes)
    names = {k.name for g in report.graphs for k in g.kernels if "quant_linear" in k.ops}
    assert names <= {f"library_quant_linear_{fmt}" + ("_g64" if fmt == "int4" else "")} | {
        k.name for g in report.graphs for k in g.kernels if k.backend == "torch"}, names


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_a_quantized_model_through_atens_integer_kernels(fmt, monkeypatch, tmp_path):
    """With the first candidate taken, every quant_linear of a quantized Llama runs ATen's
    integer-weight CPU kernel (codegen/library_quant.py), and the logits are eager's."""
    from braze.compiler.codegen import library_quant

    monkeypatch.setenv("BRAZE_SELECT", "first")
    monkeypatch.setenv("BRAZE_TUNING_DB", str(tmp_path / "t.db"))
    model = braze.quantize(_llama(), fmt, group_size=32)
    ids = hf_models.inputs(2, 12)["input_ids"]
    with torch.no_grad():
        want = model(ids).logits
        report = braze.explain(model, ids)
        got = braze.jit(model)(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    names = [k.name for g in report.graphs for k in g.kernels if "quant_linear" in k.ops]
    assert len(names) == 2 * 4
    if library_quant.available(int(fmt[3:])):
        assert set(names) == {f"library_quant_linear_{fmt}" + ("_g32" if fmt == "int4" else "")}
    else:                                            # a torch without the kernel: the reference runs
        assert not any(n.startswith("library_quant") for n in names), names


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_lm_head_quantized_on_request(fmt):
    """``lm_head=True``: the output head becomes a QuantLinear too, the logits stay close to
    the float model's, and braze runs it as eager does, the head a quant_linear of its own. A
    tied head: the embedding lookup reads the head's integer table (one table, no float
    copy), rows dequantized as the head's weight is; it follows the model across ``.to()``."""
    model = _llama(tie_word_embeddings=True)
    ids = hf_models.inputs(2, 12)["input_ids"]
    with torch.no_grad():
        ref = model(ids).logits
    q = braze.quantize(model, fmt, group_size=32, inplace=False, lm_head=True)
    emb = q.get_input_embeddings()
    assert isinstance(q.lm_head, QuantLinear) and isinstance(emb, QuantEmbedding)
    assert not any(p.is_floating_point() and p.shape == q.lm_head.weight().shape for p in q.parameters())
    torch.testing.assert_close(emb(ids[:1, :5]), q.lm_head.weight()[ids[0, :5]][None])
    assert weight_bytes(q) < weight_bytes(model) * (0.3 if fmt == "int8" else 0.2)   # the table was most of it
    with torch.no_grad():
        want = q(ids).logits
        report = braze.explain(q, ids, options={"strict": True})
        got = braze.jit(q, strict=True)(ids).logits
    assert ((want - ref).norm() / ref.norm()).item() < (0.04 if fmt == "int8" else 0.2)   # one layer more than above
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert report.graphs[0].final_ir.count("= quant_linear(") == 2 * 4 + 1
    copy = __import__("copy").deepcopy(q)      # the copy's embedding reads the copy's head
    assert copy.get_input_embeddings().head is copy.lm_head and copy.lm_head is not q.lm_head
    fresh = braze.quantize(_llama(tie_word_embeddings=True), fmt, group_size=32, inplace=False, lm_head=True)
    fresh.load_state_dict(q.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, want)
    q.to(torch.float16)
    assert emb(ids).dtype == torch.float16 == emb.dtype and q.lm_head.scales.dtype == torch.float16


def test_a_scaled_tied_embedding_keeps_its_float_table():
    """Gemma's embedding multiplies the looked-up rows by sqrt(hidden): it is not a plain
    lookup, so quantizing its tied head leaves it as it is (float table kept, logits close)."""
    model = hf_models.build("gemma", tie_word_embeddings=True)
    ids = hf_models.inputs(2, 12)["input_ids"]
    with torch.no_grad():
        ref = model(ids).logits
    q = braze.quantize(model, "int8", inplace=False, lm_head=True)
    assert isinstance(q.lm_head, QuantLinear) and not isinstance(q.get_input_embeddings(), QuantEmbedding)
    assert type(q.get_input_embeddings()) is type(model.get_input_embeddings())
    with torch.no_grad():
        out = q(ids).logits
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


def test_bad_input_names_the_layer():
    model = hf_models.build("llama", hidden_size=96, intermediate_size=192)
    with pytest.raises(QuantizeError, match=r"model\.layers\.0\.self_attn\.q_proj: weight \[96, 96\] .* 96 input "
                                            r"features, not a multiple of the int4 group size 64"):
        braze.quantize(model, "int4", group_size=64, inplace=False)
    with pytest.raises(QuantizeError, match="group_size=48"):
        braze.quantize(model, "int4", group_size=48, inplace=False)
    with pytest.raises(QuantizeError, match="unknown format 'int2'"):
        braze.quantize(model, "int2")
    q = braze.quantize(_llama(), "int8", inplace=False)
    with pytest.raises(QuantizeError, match="torch.float64"):
        q.to(torch.float64)
    with pytest.raises(QuantizeError, match=r"skip=\['model.layers.0.nope'\]: no module of that name"):
        braze.quantize(model, "int8", skip=["model.layers.0.nope"], inplace=False)
    with pytest.raises(QuantizeError, match="Conv1D layers"):
        braze.quantize(hf_models.build("gpt2"), "int8")
    kept = braze.quantize(_llama(), "int8", skip=(n for n in ["model.layers.0.mlp.down_proj"]), inplace=False)
    assert type(kept.model.layers[0].mlp.down_proj) is torch.nn.Linear     # a generator of names counts too
    assert isinstance(kept.model.layers[0].mlp.up_proj, QuantLinear)


def _sorting_batch(n: int, gen: torch.Generator, vocab: int, length: int) -> torch.Tensor:
    a = torch.randint(3, vocab, (n, length), generator=gen)
    return torch.cat([torch.ones(n, 1, dtype=torch.long), a, torch.full((n, 1), 2), a.sort(dim=1).values], 1)


def test_a_trained_model_keeps_its_accuracy():
    """A 2-layer Llama trained here (seconds) to sort 8 tokens: int8 keeps >= 99% of its
    accuracy, int4 with groups of 128 >= 97%."""
    import transformers

    torch.manual_seed(0)
    vocab, length = 32, 8
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    cfg._attn_implementation = "sdpa"
    model = transformers.LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(300):
        s = _sorting_batch(64, gen, vocab, length)
        logits = model(s[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits[:, length + 1:].reshape(-1, vocab),
                                                 s[:, length + 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = _sorting_batch(512, torch.Generator().manual_seed(99), vocab, length)

    def accuracy(m) -> float:
        with torch.no_grad():
            pred = m(test[:, :-1]).logits[:, length + 1:].argmax(-1)
        return (pred == test[:, length + 2:]).float().mean().item()

    base = accuracy(model)
    assert base > 0.85, f"the model did not learn to sort ({base:.3f})"
    int8 = accuracy(braze.quantize(model, "int8", inplace=False))
    int4 = accuracy(braze.quantize(model, "int4", group_size=128, inplace=False))
    assert int8 >= 0.99 * base, (int8, base)
    assert int4 >= 0.97 * base, (int4, base)


def test_int8_projections_fuse_their_epilogues_under_triton(monkeypatch, tmp_path):
    """With Triton kernels (the interpreter here), each int8 quant_linear is the GEMM of a
    fused group: o_proj and down_proj with the residual add, gate/up with SiLU * up; the
    model equals its eager self (which dequantizes and multiplies)."""
    from braze.ir import parse_graph

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("BRAZE_CACHE_DIR", str(tmp_path))
    model = braze.quantize(_llama(), "int8")
    ids = hf_models.inputs(1, 5)["input_ids"]
    with torch.no_grad():
        want = model(ids).logits
        report = braze.explain(model, ids, options={"strict": True, "backend": "triton"})
        got = braze.jit(model, strict=True, backend="triton")(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    g = parse_graph(report.graphs[0].final_ir)
    groups = [n.attr("graph") for n in g.compute_nodes if n.op == "fused" and n.attr("kind") == "gemm"
              and any(m.op == "quant_linear" for m in n.attr("graph").compute_nodes)]
    ops = [sorted({m.op for m in sg.compute_nodes} - {"quant_linear", "reshape", "slice"}) for sg in groups]
    assert len(groups) == 2 * 4, ops
    assert ops.count(["add"]) == 2 * 2 and ops.count(["mul", "silu"]) == 2, ops
    assert "quant_linear" not in report.torch_ops


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_decode_step_folds_every_dequantization(fmt):
    """braze.generate's decode step (one token a row): the o_proj's linear of a 3-D
    activation reaches the graph as bmm(x, expand(w^T)), which the fold takes too; no
    weight is dequantized into memory, and the tokens equal eager generate's."""
    model = braze.quantize(_llama(), fmt, group_size=64)
    ids = hf_models.inputs(2, 7)["input_ids"]
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static",
                              pad_token_id=0)
    report = braze.explain_generate(model, ids, max_new_tokens=5, options={"strict": True})
    for g in report.graphs:
        assert "braze::dequantize" not in g.final_ir, g.name
    assert report.graphs[1].final_ir.count("= quant_linear(") == 2 * 4
    got = braze.generate(model, ids, max_new_tokens=5)
    assert torch.equal(got, want)


def test_batched_fold_matches_the_reference():
    """The bmm form alone, with a batch of 3 and a symbolic row count, against the graph
    before the fold."""
    from braze.ir import Builder, interpret
    from braze.passes.fold_dequantize import fold_dequantize

    q, s, z = quantize_weight(torch.randn(24, 64), 8, 0)
    b = Builder()
    x = b.input("x", (3, "s0", 64), torch.float32)
    w = b.call("braze::dequantize", b.constant(q, "q"), b.constant(s, "s"), None, 8, 0, torch.float32)
    wt = b.call("expand", b.call("permute", w, (1, 0)), (3, 64, 24))
    y = b.call("bmm", x, wt)
    g = b.graph([y])
    folded = fold_dequantize(g)
    ops = [n.op for n in folded.compute_nodes]
    assert "braze::dequantize" not in ops and "bmm" not in ops and ops.count("quant_linear") == 1
    xv = torch.randn(3, 5, 64)
    torch.testing.assert_close(interpret(folded, xv)[0], interpret(g, xv)[0], rtol=1e-5, atol=1e-5)
    assert interpret(folded, xv)[0].shape == (3, 5, 24)
