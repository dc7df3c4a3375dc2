"""One Triton kernel that picks the next token of each row of logits.

Greedy decoding over a long vocabulary is two short launches: programs over
(row, chunk of ``GREEDY_CHUNK`` columns) write each chunk's max and first
argmax, and one program per row combines them (a single program looping over
128k logits took 25 us of a 1.8 ms decode step on an H100). Otherwise one
program per row, looping over the vocabulary in blocks:

1. max, min and first argmax of the row (greedy stops here);
2. top-k: the k-th largest scaled logit, by bisection over the row's values
   seen as ordered integers (float bits with the sign folded, so integer
   order is float order): each step counts the values at or above the pivot,
   at most 32 steps, exact;
3. top-p: the same bisection on the probability mass at or above the pivot
   (``exp(x - max)`` summed, against ``top_p`` times the mass the top-k
   filter kept), which keeps exactly the tokens Hugging Face's warper keeps:
   those with less than ``top_p`` of the mass strictly above them;
4. a Gumbel-max draw over the kept tokens: ``argmax(x / T + G)`` with ``G``
   from a counter-based hash keyed by a device-side seed, the same
   distribution as a multinomial draw from their softmax.

Only the row of logits is read (steps 2 and 3 re-read it from L2); nothing
but one int64 token per row is written. The seed tensor is advanced on the
device after each call, so a step captured in a CUDA graph draws new numbers
on every replay.
"""
from __future__ import annotations


import torch

from braze.compiler.codegen.kernel_modules import KernelModule
from braze.compiler.codegen.triton import sampling_kernel as _kernel_mod


GREEDY_CHUNK = 4096   # columns per program of the split greedy argmax


_KERNELS = KernelModule(_kernel_mod, "sample_kernel")


def _module():
    return _KERNELS.get()


def _kernel():
    return _module().sample_kernel


def greedy_split(logits: torch.Tensor, out: torch.Tensor, chunk: int = GREEDY_CHUNK, block: int = 0) -> None:
    """``out[b] = argmax(logits[b])`` (the first maximum) in two launches."""
    B, V = logits.shape
    n = -(-V // chunk)
    block = block or min(chunk, 2048)
    vals = torch.empty(B, n, dtype=torch.float32, device=logits.device)
    idxs = torch.empty(B, n, dtype=torch.int32, device=logits.device)
    mod = _module()
    mod.argmax_partial_kernel[(B, n)](logits, vals, idxs, logits.stride(0), V, chunk, BLOCK=block,
                                       num_warps=8 if block >= 2048 else 4)
    mod.argmax_combine_kernel[(B,)](vals, idxs, out, n, BLOCK=max(2, 1 << (n - 1).bit_length()), num_warps=1)


def sample_fused(logits: torch.Tensor, params, seed: torch.Tensor, block: int = 0) -> torch.Tensor:
    """Next tokens ``[B]`` (int64) of ``logits [B, V]`` as ``params`` says (a
    ``SamplingParams``: do_sample, temperature, top_k, top_p); ``seed`` (int64
    ``[1]``, on the logits' device) is read by the kernel and then advanced by one."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    if B == 0:
        return out
    sample = bool(params.do_sample)
    if not sample and V > GREEDY_CHUNK:
        greedy_split(logits, out, block=block)
        return out
    block = block or min(4096, 1 << max(V - 1, 1).bit_length())
    top_k = min(params.top_k, V) if sample else 0
    top_p = params.top_p if sample else 1.0
    _kernel()[(B,)](logits, out, seed, logits.stride(0), V, 1.0 / params.temperature if sample else 1.0,
                    top_k, float(top_p), SAMPLE=sample, TOP_K=bool(top_k), TOP_P=top_p < 1.0,
                    BLOCK=block, num_warps=8 if block >= 2048 else 4)
    if sample:
        seed.add_(1)
    return out


def record_fused(token: torch.Tensor, last: torch.Tensor, done: torch.Tensor, out: torch.Tensor,
                 column: torch.Tensor, position: torch.Tensor, eos, pad: int) -> None:
    """One launch for a decode step's bookkeeping (``compiler/generate.py``): with ``eos``
    (an id or a sequence of at most ``MAX_EOS``), rows already ``done`` get ``pad`` and
    rows producing an eos become done; the token goes to ``last`` and to
    ``out[:, column]``; ``column`` and ``position [B, 1]`` advance."""
    B = token.shape[0]
    if B == 0:
        return
    ids = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, (tuple, list)) else (eos,)))
    if len(ids) > MAX_EOS:
        raise ValueError(f"braze record_fused: {len(ids)} eos ids, at most {MAX_EOS}")
    padded = ids + (ids[0] if ids else 0,) * (MAX_EOS - len(ids))
    _module().record_kernel[(1,)](token, last, done, out, column, position, B, out.stride(0), position.stride(0),
                                  *padded, int(pad), N_EOS=len(ids),
                                  BLOCK_B=max(2, 1 << (B - 1).bit_length()), num_warps=1)


MAX_EOS = 4   # eos ids the fused bookkeeping compares with (record_kernel's eos0..eos3)
