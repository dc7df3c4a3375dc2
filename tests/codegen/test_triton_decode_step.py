"""A Llama decode step through the Triton backend end to end (``TRITON_INTERPRET=1``
on the CPU): the norms folded into the GEMMs that read them (row-scale prologues)
and the rotary group + KV write as one kernel, with the tokens of Hugging Face's
eager greedy ``generate``. With ``BRAZE_TEST_DEVICE=cuda`` the same on the GPU, where the
step replays as one CUDA graph (``BRAZE_PDL=1``: of kernels launched with programmatic
dependent launch)."""
from __future__ import annotations

import pytest
import torch


def _llama(tie: bool = False):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
                                   tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(cfg).eval()


def _decode_step_kernels(model, device="cpu"):
    """Greedy-decode 4 tokens through the Triton kernels; assert they equal eager generate's
    and return the decode step's kernels."""
    from braze.compiler.generate import DecodeStats, generate

    model = model.to(device)
    ids = torch.randint(0, 256, (1, 8)).to(device)
    stats = DecodeStats()
    out = generate(model, ids, max_new_tokens=4, stats=stats, options={"backend": "triton"})
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, want)
    step = stats.graphs[-1]
    step.refresh()
    return step.kernels


def test_generate_through_the_triton_kernels_equals_eager(device):
    ops = [tuple(k.ops) for k in _decode_step_kernels(_llama(), device)]
    assert ("cache_write_heads_",) in ops
    prologues = [o for o in ops if "mean" in o and "mm" in o]
    assert len(prologues) == 3                     # input norm + QKV, post-attention norm + gate/up, final norm + LM head
    assert not [o for o in ops if o[:1] == ("index_copy_many_",)]


@pytest.mark.parametrize("fmt,head", [("int8", False), ("int4", False), ("int4", True)],
                         ids=["int8", "int4", "int4-tied-head"])
def test_quantized_generate_through_the_gemm_template_equals_eager(fmt, head, device, monkeypatch):
    """Weight-only int8 / int4 decode: every projection a GEMM group of the template
    (norm prologues, the gate/up dual epilogue, residual adds), tokens of eager generate
    on the same quantized model (with ``head``: the tied LM head quantized too, the
    embedding lookup reading its integer table). On a GPU the selection would time the
    template against the other candidates of each group and may pick another: the first
    candidate (the template) is taken there, so that its kernels are the ones checked."""
    import braze

    if device == "cuda":
        monkeypatch.setenv("BRAZE_SELECT", "first")

    model = braze.quantize(_llama(tie=head), fmt, group_size=32, inplace=False, lm_head=head)
    kernels = _decode_step_kernels(model, device)
    quant = [tuple(k.ops) for k in kernels if "quant_linear" in k.ops]
    assert len(quant) == 4 + head and all(k.name == "triton_gemm" for k in kernels if "quant_linear" in k.ops)
    assert sum("mean" in o for o in quant) == 2 + head   # the norms folded into QKV and gate/up (and the LM head)
    assert any("silu" in o for o in quant)               # the dual epilogue
