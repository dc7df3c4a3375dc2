"""Choosing the next token: greedy, temperature, top-k and top-p sampling.

``Sampler`` is what ``braze.generate`` calls on the LM head's last-token
logits. On CUDA it runs one Triton kernel per step
(``compiler/codegen/triton/sampling.py``) that reads each row of logits a
few times and writes one token: no softmax, sort or cumulative sum of the
vocabulary is ever written to memory, and its seed is a device tensor, so a
step replays inside a CUDA graph. Elsewhere it runs ``sample_reference``,
the same math as Hugging Face's logits warpers (temperature, then top-k,
then top-p, then a multinomial draw), which is also what the kernel is
tested against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How a token is chosen. ``do_sample=False`` is greedy (argmax; the
    other fields are then ignored). ``top_k=0`` and ``top_p=1.0`` turn those
    filters off."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 turns it off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 turns it off), got {self.top_p!r}")
        t = self.temperature
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0.0):
            raise ValueError(f"temperature must be a finite number > 0, got {t!r}; for greedy decoding pass "
                             "do_sample=False")


def sample_reference(logits: torch.Tensor, params: SamplingParams,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Next tokens ``[B]`` (int64) from ``logits [B, V]``, as Hugging Face's
    warpers and ``torch.multinomial`` choose them."""
    if not params.do_sample:
        return logits.argmax(dim=-1)
    scores = logits.float() / params.temperature
    if params.top_k:
        k = min(params.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, dim=-1)
        cum = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1.0 - params.top_p
        drop[..., -1] = False  # keep at least the most likely token
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Sampler:
    """Picks the next token of each row; seeded, and on CUDA capturable in a
    CUDA graph (the seed lives on the device and advances on the device)."""

    def __init__(self, params: SamplingParams, device: torch.device, seed: Optional[int] = None):
        self.params = params
        self.device = torch.device(device)
        seed = int(torch.randint(0, 2 ** 62, ()).item()) if seed is None else int(seed)
        self.fused = self.device.type == "cuda"
        if self.fused:
            self.seed = torch.tensor([seed], dtype=torch.int64, device=self.device)
        else:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def reseed(self, seed: Optional[int]) -> None:
        """Start a new stream (in place: a captured CUDA graph keeps reading the same seed tensor)."""
        seed = int(torch.randint(0, 2 ** 62, ()).item()) if seed is None else int(seed)
        if self.fused:
            self.seed.fill_(seed)
        else:
            self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2:
            raise ValueError(f"the sampler takes logits [batch, vocab], got shape {tuple(logits.shape)}")
        if self.fused:
            from braze.compiler.codegen.triton.sampling import sample_fused  # lazy: imports triton on first use

            return sample_fused(logits, self.params, self.seed)
        return sample_reference(logits, self.params, self.generator)
