"""Hugging Face models built from configs with random weights.

Nothing is downloaded: each family's config class is instantiated with the
sizes asked for. Used by the demo, the tests and the benchmarks.
"""
from __future__ import annotations

from typing import Any

import torch

# family -> (config class, model class, config overrides for a small model)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=2,
                                                      max_position_embeddings=256)),
    "bert": ("BertConfig", "BertModel", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, max_position_embeddings=256)),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                               num_attention_heads=4, max_position_embeddings=256,
                                               word_embed_proj_dim=64)),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(hidden_size=64, n_layer=2, n_head=4)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(hidden_size=64, intermediate_size=128,
                                                            num_hidden_layers=2, num_attention_heads=4,
                                                            num_key_value_heads=2, max_position_embeddings=256,
                                                            sliding_window=8)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=2,
                                                      max_position_embeddings=256)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                                      max_position_embeddings=256)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, max_position_embeddings=256)),
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                         num_kv_heads=1, new_decoder_architecture=False,
                                                         multi_query=True, max_position_embeddings=256)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(hidden_size=64, intermediate_size=128,
                                                            num_hidden_layers=2, num_attention_heads=4,
                                                            num_key_value_heads=2, num_local_experts=4,
                                                            num_experts_per_tok=2, max_position_embeddings=256,
                                                            sliding_window=None)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                         max_position_embeddings=256, sliding_window=8)),
}

# Llama-3.2-1B's shape (16 layers, hidden 2048, GQA 32/8, MLP 8192).
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=131072, vocab_size=128256, rope_theta=500000.0,
                tie_word_embeddings=True)
GPT2_SMALL = dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)
BERT_BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=512, vocab_size=30522)


def build(family: str, vocab_size: int = 128, attn: str = "sdpa", dtype: torch.dtype = torch.float32,
          device: str = "cpu", seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A ``family`` model in eval mode with random weights."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    cfg_name, model_name, small = FAMILIES[family]
    kwargs = dict(small, vocab_size=vocab_size)
    kwargs.update(overrides)
    cfg = getattr(transformers, cfg_name)(**kwargs)
    cls = getattr(transformers, model_name)
    if attn == "sdpa" and not getattr(cls, "_supports_sdpa", False):
        attn = "eager"  # e.g. BLOOM: its attention exists in one form only
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    model = cls(cfg)
    return model.to(device=device, dtype=dtype).eval()


def inputs(batch: int, seq: int, vocab_size: int = 128, padding: str | None = None, device: str = "cpu",
           seed: int = 0, lengths: list[int] | None = None) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask; with ``padding`` ("right"/"left") rows
    have the given ``lengths`` (default: decreasing), else the mask is all ones."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if padding:
        lengths = lengths or [max(1, seq - i * max(1, seq // (batch + 1))) for i in range(batch)]
        for b, n in enumerate(lengths):
            mask[b] = 0
            if padding == "right":
                mask[b, :n] = 1
            else:
                mask[b, seq - n:] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
