"""A Llama decode step through the Triton backend end to end (``TRITON_INTERPRET=1``
on the CPU): the norms folded into the GEMMs that read them (row-scale prologues)
and the rotary group + KV write as one kernel, with the tokens of Hugging Face's
eager greedy ``generate``."""
from __future__ import annotations

import torch


def test_generate_through_the_triton_kernels_equals_eager():
    import transformers

    from braze.compiler.generate import DecodeStats, generate

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=256, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 256, (1, 8))
    stats = DecodeStats()
    out = generate(model, ids, max_new_tokens=4, stats=stats, options={"backend": "triton"})
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, want)
    step = stats.graphs[-1]
    step.refresh()
    ops = [tuple(k.ops) for k in step.kernels]
    assert ("cache_write_heads_",) in ops
    prologues = [o for o in ops if "mean" in o and "mm" in o]
    assert len(prologues) == 3                     # input norm + QKV, post-attention norm + gate/up, final norm + LM head
    assert not [o for o in ops if o[:1] == ("index_copy_many_",)]
