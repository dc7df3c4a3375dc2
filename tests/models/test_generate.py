"""Decoding compiled end to end, on the CPU (fp32, tiny configs).

Greedy decoding through both user paths equals eager ``generate`` token for
token, with ``strict=True`` (no eager fallback anywhere):

(a) ``model.forward = braze.jit(model.forward)`` and Hugging Face's own
    ``model.generate(..., cache_implementation="static")``;
(b) ``braze.generate(model, input_ids, ...)`` with its own static cache.
"""
from __future__ import annotations

import pytest
import torch
import transformers

import braze
from tools import hf_models
from braze.compiler.generate import CacheMismatchError, GenerateError

FAMILIES = ["llama", "qwen2", "mistral", "gpt2"]
NEW = 10


def _prompt(batch=3, seq=12, vocab=128):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row, pad in ((1, 3), (2, 5)):   # left padding
        if row < batch:
            mask[row, :pad] = 0
    return ids, mask


def _cache_kw(model, cache) -> dict:
    """The forward's cache argument: ``cache`` in newer transformers, ``past_key_values`` before."""
    import inspect

    return {"cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values": cache}


def _eager(model, ids, mask, new=NEW):
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                              cache_implementation="static", pad_token_id=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_generate_with_braze_forward_equals_eager(family):
    model = hf_models.build(family)
    ids, mask = _prompt()
    want = _eager(model, ids, mask)
    model.forward = braze.jit(model.forward, strict=True)
    got = _eager(model, ids, mask)
    assert torch.equal(got, want), (got[:, ids.shape[1]:], want[:, ids.shape[1]:])


@pytest.mark.parametrize("family", FAMILIES)
def test_braze_generate_equals_eager(family):
    # mistral's window (8) is shorter than prompt + new tokens (22): the window is the mask's.
    model = hf_models.build(family)
    ids, mask = _prompt()
    want = _eager(model, ids, mask)
    got = braze.generate(model, ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0,
                         options={"strict": True})
    assert torch.equal(got, want), (got[:, ids.shape[1]:], want[:, ids.shape[1]:])


def test_decode_step_compiles_once_and_names_its_torch_ops():
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=2, seq=6)
    report = braze.explain_generate(model, ids, attention_mask=mask, max_new_tokens=8, options={"strict": True})
    text = str(report)
    assert "decode compiled 0 graph(s) after its first step" in text
    assert len(report.graphs) == 2                      # prefill, decode: nothing recompiled in 8 steps
    assert all(g.fallback is None for g in report.graphs)
    assert "runs through its torch reference" in text and "index_copy_many_" in report.torch_ops
    decode = report.graphs[1].final_ir
    assert decode.count("= index_copy_many_(") == 2     # K and V of each of 2 layers, one node, in place
    assert decode.count("= foreach_add_(") == 1         # the layers' step counters, one update
    assert " s" not in decode.split("{")[0]             # the step's input shapes are all static
    # A second call with another prompt length reuses the decode step.
    ids2, mask2 = _prompt(batch=2, seq=9)
    report2 = braze.explain_generate(model, ids2, attention_mask=mask2, max_new_tokens=8, options={"strict": True})
    assert "decode compiled 0 graph(s)" in str(report2)


def test_a_second_identical_generate_call_compiles_nothing():
    """The static cache is allocated before the first compiled call: a cache the first
    prefill initialised lazily made the second call's prefill recompile (its graph had
    guarded on an uninitialised cache)."""
    from braze.compiler.generate import DecodeStats, generate as generate_with_stats

    model = hf_models.build("llama")
    ids, mask = _prompt(batch=2, seq=6)
    first, second = DecodeStats(), DecodeStats()
    a = generate_with_stats(model, ids, 4, attention_mask=mask, pad_token_id=0, stats=first)
    b = generate_with_stats(model, ids, 4, attention_mask=mask, pad_token_id=0, stats=second)
    assert torch.equal(a, b)
    assert len(first.graphs) == 2 and len(second.graphs) == 2, (len(first.graphs), len(second.graphs))


def test_gemma2_decode_runs_soft_capped_attention_and_equals_eager():
    """Gemma-2 (logit soft-capping, alternating sliding windows): every layer's decode attention
    is one ``attention`` op with ``softcap`` over the static cache, tokens equal eager's."""
    model = hf_models.build("gemma2")
    ids, mask = _prompt()
    want = _eager(model, ids, mask)
    report = braze.explain_generate(model, ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0,
                                    options={"strict": True})
    decode = report.graphs[-1].final_ir
    attn = [line for line in decode.splitlines() if " = attention(" in line]
    assert len(attn) == model.config.num_hidden_layers, decode
    assert all(f"softcap={model.config.attn_logit_softcapping}" in line for line in attn), attn
    got = braze.generate(model, ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0,
                         options={"strict": True})
    assert torch.equal(got, want), (got[:, ids.shape[1]:], want[:, ids.shape[1]:])


def test_batch_bucket_rows_never_change_results():
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=3)                          # bucket 4: one padded row
    out3 = braze.generate(model, ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0)
    for b in range(3):
        one = braze.generate(model, ids[b:b + 1, mask[b].argmax():], max_new_tokens=6, pad_token_id=0)
        assert torch.equal(one[0, -6:], out3[b, -6:])


def test_a_model_moved_to_another_dtype_gets_new_steps_and_a_batch_past_the_buckets_so_far_compiles():
    """Guards: the static cache and step of a float32 model are never reused once it is
    float64 (they were: SDPA then met float64 queries and float32 keys); a batch larger
    than every bucket compiled so far gets its own bucket; each equals eager."""
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=2)
    assert torch.equal(braze.generate(model, ids, attention_mask=mask, max_new_tokens=5, pad_token_id=0),
                       _eager(model, ids, mask, 5))
    from braze.compiler.generate import DecodeStats, generate as generate_with_stats

    model.double()
    stats = DecodeStats()
    got = generate_with_stats(model, ids, 5, attention_mask=mask, pad_token_id=0, stats=stats)
    assert torch.equal(got, _eager(model, ids, mask, 5))
    assert stats.compiles_prefill >= 1                   # recompiled for the float64 weights
    big, big_mask = torch.cat([ids] * 3)[:5], torch.cat([mask] * 3)[:5]
    got = generate_with_stats(model, big, 5, attention_mask=big_mask, pad_token_id=0, stats=stats)
    assert stats.batch_bucket == 8 and torch.equal(got, _eager(model, big, big_mask, 5))


def test_sampling_is_seeded_and_respects_top_k():
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=2)
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=True, temperature=0.8, top_k=3, pad_token_id=0)
    a = braze.generate(model, ids, seed=7, **kw)
    b = braze.generate(model, ids, seed=7, **kw)
    c = braze.generate(model, ids, seed=8, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Every sampled token is among the 3 most likely after the same prefix (teacher forcing).
    with torch.no_grad():
        full_mask = torch.cat([mask, torch.ones(2, 12, dtype=torch.long)], 1)
        pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(a, attention_mask=full_mask, position_ids=pos, use_cache=False).logits
    top3 = logits[:, ids.shape[1] - 1:-1].topk(3, dim=-1).indices
    assert (top3 == a[:, ids.shape[1]:, None]).any(-1).all()


def test_eos_stops_like_hf():
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=2)
    free = braze.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    eos = int(free[0, ids.shape[1] + 2])               # row 0 produces it at step 3
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=eos,
                              pad_token_id=0, cache_implementation="static")
    got = braze.generate(model, ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, want)


def test_finished_rows_take_the_configured_pad_token_and_bucket_rows_any_eos():
    """Without pad_token_id=, finished rows hold the generation config's pad token, as HF's
    generate fills them (not eos); the filler rows of a batch bucket are token 0, so a
    model whose eos lies outside its vocabulary (GPT-2's 50256 on a small test vocabulary)
    still runs a batch of 3 (bucket 4)."""
    model = hf_models.build("llama")
    model.generation_config.pad_token_id = 0
    ids, mask = _prompt(batch=2)
    free = braze.generate(model, ids, attention_mask=mask, max_new_tokens=8)
    model.generation_config.eos_token_id = int(free[0, ids.shape[1] + 2])
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                              cache_implementation="static")
    assert torch.equal(braze.generate(model, ids, attention_mask=mask, max_new_tokens=8), want)
    gpt2 = hf_models.build("gpt2")
    assert gpt2.config.eos_token_id >= gpt2.config.vocab_size
    ids, mask = _prompt(batch=3)
    got = braze.generate(gpt2, ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)
    assert torch.equal(got, _eager(gpt2, ids, mask, new=4))


def test_several_eos_ids_stop_like_hf():
    """A generation config naming several eos ids (Llama-3's style): a row stops on any."""
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=3)
    free = braze.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    model.generation_config.eos_token_id = [int(free[0, ids.shape[1] + 2]), int(free[2, ids.shape[1] + 4]), 127]
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
                              cache_implementation="static")
    assert torch.equal(braze.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0), want)
    with pytest.raises(GenerateError, match="at most 4"):
        braze.generate(model, ids, max_new_tokens=2, eos_token_id=[1, 2, 3, 4, 5])


def test_generate_under_inference_mode_then_no_grad():
    """The step's buffers, made in a first call under the caller's inference_mode, are written
    again in a later call under no_grad (a user switching modes) without an error."""
    model = hf_models.build("llama")
    ids, mask = _prompt(batch=2)
    with torch.inference_mode():
        first = braze.generate(model, ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)
    for mode in (torch.no_grad, torch.enable_grad):
        with mode():
            assert torch.equal(braze.generate(model, ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0),
                               first)


def test_bad_arguments_name_the_problem():
    model = hf_models.build("llama")
    ids, _ = _prompt(batch=1)
    with pytest.raises(GenerateError, match=r"max_cache_len=16 .* prompt \(12\) .* \(10\) = 22"):
        braze.generate(model, ids, max_new_tokens=10, max_cache_len=16)
    with pytest.raises(GenerateError, match="max_new_tokens"):
        braze.generate(model, ids, max_new_tokens=0)
    with pytest.raises(GenerateError, match="input_ids"):
        braze.generate(model, ids.float())
    with pytest.raises(ValueError, match="top_p"):
        braze.generate(model, ids, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        braze.generate(model, ids, do_sample=True, temperature=0.0)


def test_cache_of_another_dtype_is_named():
    model = hf_models.build("llama")
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    cache.early_initialization(batch_size=1, num_heads=2, head_dim=16, dtype=torch.float64, device="cpu")
    fwd = braze.jit(model.forward, strict=True)
    with torch.no_grad(), pytest.raises(CacheMismatchError, match="layer 0 keys is float64 .* float32"):
        fwd(input_ids=torch.randint(0, 128, (1, 4)), use_cache=True, **_cache_kw(model, cache))


@pytest.mark.parametrize("family", ["falcon", "mixtral", "gemma2"])
def test_forward_with_in_place_ops_compiles_strict(family):
    model = hf_models.build(family)
    inp = hf_models.inputs(2, 16)
    with torch.no_grad():
        want = model(**inp, use_cache=False).logits
        got = braze.jit(model, strict=True)(**inp, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_generate_on_the_gpu_equals_eager(family):
    """fp32 on CUDA: both user paths, greedy, equal eager token for token (the step replays a CUDA graph)."""
    model = hf_models.build(family, device="cuda")
    ids, mask = (t.cuda() for t in _prompt())
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                              cache_implementation="static", pad_token_id=0, disable_compile=True)
    stats_kw = dict(attention_mask=mask, max_new_tokens=NEW, pad_token_id=0, options={"strict": True})
    got = braze.generate(model, ids, **stats_kw)
    again = braze.generate(model, ids, **stats_kw)         # replays the captured step
    assert torch.equal(got, want) and torch.equal(again, want)
    model.forward = braze.jit(model.forward, strict=True)
    got_a = _eager(model, ids, mask)
    assert torch.equal(got_a, want)


def test_a_full_hf_cache_raises_before_writing_and_keeps_its_rows():
    model = hf_models.build("llama")
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    fwd = braze.jit(model.forward, strict=True)
    ids = torch.randint(0, 128, (1, 14))
    with torch.no_grad():
        fwd(input_ids=ids, use_cache=True, **_cache_kw(model, cache))
        fwd(input_ids=ids[:, :1], use_cache=True, **_cache_kw(model, cache))
        fwd(input_ids=ids[:, :1], use_cache=True, **_cache_kw(model, cache))           # rows 14 and 15: full now
        keys = [layer.keys.clone() for layer in cache.layers]
        with pytest.raises(IndexError, match=r"row 16 .*16 rows.*max_cache_len 16"):
            fwd(input_ids=ids[:, :1], use_cache=True, **_cache_kw(model, cache))
    for layer, before in zip(cache.layers, keys):
        torch.testing.assert_close(layer.keys, before, rtol=0, atol=0)
        assert int(layer.cumulative_length) == 16
