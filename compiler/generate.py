"""``braze.generate``: prefill and decode a Hugging Face causal LM with braze.

The model's ``forward`` is compiled once per model and options
(``braze.jit``); a static KV cache of ``max_cache_len`` rows per sequence is
allocated once per (batch bucket, cache length) and written in place by the
compiled step (``passes/reinplace.py``). A step's shapes never change: the
batch is padded to a bucket (padded rows never change the real rows'
results: every op is row-wise or per sequence), the attention mask is
``[B, max_cache_len]`` from the first step on, and positions live in device
tensors, so every decode step runs the same compiled program. Prefill
computes the LM head for the last token only (``logits_to_keep=1``). Tokens
are chosen by ``compiler/sampling.py`` (one Triton kernel on CUDA).

Sliding-window layers get full-length cache layers here (HF's sliding layer
rolls its whole window every step, with Python-side counters that change the
compiled graph): the window is applied by the attention mask instead.
"""
from __future__ import annotations

import functools
import inspect
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from braze.autotune import cublas_workspace
from braze.compiler.sampling import Sampler, SamplingParams
from braze.autotune.options import Options
from braze.compiler.backend import make_backend

log = logging.getLogger("braze.generate")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_EOS = 4                  # eos ids a step stops on (the fused bookkeeping kernel's limit)
CACHE_BUCKET = 256           # cache lengths are rounded up to a multiple of this
EOS_CHECK_EVERY = 16         # steps between the host reading whether every row has finished


class GenerateError(ValueError):
    """Arguments ``braze.generate`` cannot run with; the message names the argument."""


@dataclass
class DecodeStats:
    """What the last ``generate`` call compiled and ran."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    batch: int = 0
    batch_bucket: int = 0
    max_cache_len: int = 0
    compiles_prefill: int = 0
    compiles_decode: int = 0      # graphs compiled during decode steps after the first
    cuda_graph: bool = False      # decode steps replayed a captured CUDA graph
    graphs: list = field(default_factory=list)   # every graph compiled for this model and options so far


@dataclass
class _ModelState:
    forward: Any                   # the compiled forward
    reports: list                  # GraphReports of every graph compiled for this model
    steps: dict = field(default_factory=dict)    # (batch bucket, max_cache_len, sampling, eos, pad) -> step


_STATES: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def bucket_batch(b: int) -> int:
    for size in BATCH_BUCKETS:
        if b <= size:
            return size
    return b


def bucket_cache_len(n: int) -> int:
    return -(-n // CACHE_BUCKET) * CACHE_BUCKET


def generate(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 32, *,
             attention_mask: Optional[torch.Tensor] = None, do_sample: bool = False, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, eos_token_id=None,
             pad_token_id: Optional[int] = None, seed: Optional[int] = None, max_cache_len: Optional[int] = None,
             stats: Optional[DecodeStats] = None, options: Optional[dict] = None) -> torch.Tensor:
    """See ``braze.generate``."""
    params = SamplingParams(bool(do_sample), float(temperature), top_k, float(top_p))
    _check(model, input_ids, max_new_tokens, attention_mask)
    B, S = input_ids.shape
    device = input_ids.device
    need = S + max_new_tokens
    L = bucket_cache_len(need) if max_cache_len is None else int(max_cache_len)
    if L < need:
        raise GenerateError(f"max_cache_len={L} is shorter than the prompt ({S}) plus max_new_tokens "
                            f"({max_new_tokens}) = {need}")
    eos = _eos(model, eos_token_id)
    pad = _pad(model, pad_token_id, eos)
    Bb = bucket_batch(B)
    state = _state(model, options or {})
    compiled_before = len(state.reports)

    ids = _pad_rows(input_ids, Bb, 0)   # NOTE: filler rows of the bucket: token 0 is in every vocabulary
    # NOTE: every write to the step's buffers (the cache, mask, positions), the first call's
    # included, under inference_mode: buffers made in an earlier call under the caller's
    # inference_mode are inference tensors, which a write outside it may not touch.
    with torch.inference_mode():
        step = _step(model, state, params, Bb, L, device, eos, pad)
        step.start(attention_mask, S, seed)
        positions = (step.mask[:, :S].cumsum(-1) - 1).clamp_(min=0)
        # NOTE: the mask is [B, max_cache_len] in the prefill too, so its shape never
        # changes and Dynamo keeps it static in the decode step.
        logits = step.call(input_ids=ids, attention_mask=step.mask, position_ids=positions, cache=step.cache,
                           prefill=True)
        compiled_prefill = len(state.reports) - compiled_before
        step.first(logits[:, -1], positions[:, -1:])
        compiled_first = None
        steps = 1
        while steps < max_new_tokens:
            if eos is not None and steps % EOS_CHECK_EVERY == 0 and bool(step.done[:B].all()):
                break
            step()
            steps += 1
            if compiled_first is None:
                compiled_first = len(state.reports)
        new = step.out[:B, :steps].clone()
    if eos is not None:
        new = _trim_finished(new, eos, pad)
    if stats is not None:
        stats.prompt_tokens, stats.new_tokens, stats.batch, stats.batch_bucket = S, new.shape[1], B, Bb
        stats.max_cache_len = L
        stats.compiles_prefill = compiled_prefill
        stats.compiles_decode = len(state.reports) - (compiled_first or len(state.reports))
        stats.cuda_graph = step.graph is not None
        stats.graphs = list(state.reports)
    return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


class _DecodeStep:
    """One decode step over static buffers: the compiled forward on the last
    token, the sampler, eos bookkeeping and the token's column of ``out``, all
    on the device. On CUDA, after two real steps (which compile and tune), the
    step is captured once as a CUDA graph and replayed from then on: a step is
    one replay, with no Python in it and nothing waiting on the host.

    NOTE: everything a replay touches keeps its address for the life of the
    step (the cache, these buffers, the sampler's seed); ``start`` refills them
    in place for a new call.
    """

    WARMUP = 2

    def __init__(self, call, cache, params: SamplingParams, batch: int, max_len: int, device, eos, pad,
                 cuda_graph: bool, weights=lambda: ()):
        self.call, self.cache, self.eos, self.pad = call, cache, eos, pad
        self.weights = weights
        self.sampler = Sampler(params, device, seed=0)
        self.mask = torch.ones(batch, max_len, dtype=torch.long, device=device)
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.position = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.out = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.use_graph = cuda_graph
        self.graph = None
        self.steps_run = 0

    def start(self, attention_mask, prompt_len: int, seed) -> None:
        self.mask.fill_(1)
        if attention_mask is not None:
            b = attention_mask.shape[0]
            self.mask[:b, :prompt_len] = attention_mask.to(device=self.mask.device, dtype=torch.long)
        self.done.zero_()
        self.column.zero_()
        self.sampler.reseed(seed)
        with torch.inference_mode():
            self.cache.reset()

    def first(self, logits: torch.Tensor, position: torch.Tensor) -> None:
        """The prefill's token: sampled from its last logits, recorded in column 0."""
        self.position.copy_(position)
        self._record(self.sampler(logits))

    def _record(self, token: torch.Tensor) -> None:
        """Keep the token (``pad`` for finished rows), write its column of ``out``, and
        advance the column and the positions for the next step. On CUDA one kernel
        (six ATen launches otherwise, each a node of the step's graph)."""
        if self.sampler.fused:
            from braze.compiler.codegen.triton.sampling import record_fused  # lazy: imports triton

            record_fused(token, self.token, self.done, self.out, self.column, self.position, self.eos, self.pad)
            return
        if self.eos is not None:
            token = torch.where(self.done, self.pad, token)
            self.done |= _is_eos(token, self.eos)
        self.token.copy_(token)
        self.out.index_copy_(1, self.column, token[:, None])
        self.column += 1
        self.position += 1

    def _run(self) -> None:
        logits = self.call(input_ids=self.token[:, None], attention_mask=self.mask, position_ids=self.position,
                           cache=self.cache)
        self._record(self.sampler(logits[:, -1]))

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        self._run()
        self.steps_run += 1
        if self.use_graph and self.steps_run == self.WARMUP:
            self._capture()

    def _capture(self) -> None:
        torch.cuda.synchronize()
        # NOTE: the graph reads the weights' storage as it is now: keep it, should a
        # parameter's .data be swapped later (runtime.CudaGraphPlan does the same).
        self.storages = tuple(t.data for t in self.weights())
        graph = torch.cuda.CUDAGraph()
        # NOTE: capture records the step without running it: nothing advances here.
        try:
            with cublas_workspace.capture(), torch.cuda.graph(graph):
                self._run()
        except Exception as e:  # noqa: BLE001 - a step that cannot be captured still runs
            log.warning("braze.generate: the decode step cannot be captured in a CUDA graph (%s: %s); it runs "
                        "uncaptured", type(e).__name__, e)
            self.use_graph = False
            torch.cuda.synchronize()
            return
        self.graph = graph


def _step(model, state: _ModelState, params: SamplingParams, batch: int, max_len: int, device, eos, pad):
    """The decode step of (batch bucket, cache length, device, model dtype, sampling, eos/pad),
    built once and reused. A model moved to another dtype or device since gets new steps
    (static caches of its dtype; the compiled forward recompiles for its new weights), and
    the steps of what it was are dropped."""
    param = _float_param(model)
    where = (str(device), param.dtype if param is not None else None)
    key = (batch, max_len, where, params, eos, pad)
    step = state.steps.get(key)
    if step is None:
        for old in [k for k in state.steps if k[2] != where]:
            del state.steps[old]
        with torch.inference_mode():
            cache = _cache(model, batch, max_len, param.dtype if param is not None else torch.float32, device)
        step = state.steps[key] = _DecodeStep(_forward_call(model, state.forward), cache, params, batch, max_len,
                                              device, eos, pad, cuda_graph=torch.device(device).type == "cuda",
                                              weights=functools.partial(_weights_of, weakref.ref(model)))
    return step


def _check(model, input_ids, max_new_tokens, attention_mask) -> None:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise GenerateError(f"braze.generate takes a Hugging Face causal LM (an nn.Module with a config), "
                            f"got {type(model).__name__}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
            torch.int64, torch.int32):
        raise GenerateError("input_ids must be an integer tensor [batch, prompt length], got "
                            f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                            f"{tuple(getattr(input_ids, 'shape', ()))}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise GenerateError(f"input_ids is empty: shape {tuple(input_ids.shape)}")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise GenerateError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    param = next(model.parameters(), None)
    if param is not None and param.device != input_ids.device:
        raise GenerateError(f"input_ids are on {input_ids.device} but the model is on {param.device}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise GenerateError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
                            f"{tuple(input_ids.shape)}: they must match")


class CacheMismatchError(GenerateError):
    """A KV cache tensor has another dtype or device than the model."""


def check_caches(model: torch.nn.Module, values, cause: Optional[BaseException] = None) -> None:
    """Raise ``CacheMismatchError`` naming the first cache tensor among ``values``
    (Hugging Face ``Cache`` objects) whose dtype or device differs from the model's."""
    param = _float_param(model)
    if param is None:
        return
    for v in values:
        for i, layer in enumerate(getattr(v, "layers", None) or ()):
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if not isinstance(t, torch.Tensor) or t.numel() == 0:
                    continue
                if t.dtype != param.dtype or t.device != param.device:
                    raise CacheMismatchError(
                        f"KV cache layer {i} {name} is {str(t.dtype).replace('torch.', '')} on {t.device}, but the "
                        f"model runs in {str(param.dtype).replace('torch.', '')} on {param.device}: build the "
                        "cache with the model's dtype and device") from cause


def _float_param(model) -> Optional[torch.Tensor]:
    """The model's first floating parameter: its compute dtype and device."""
    return next((p for p in model.parameters() if p.is_floating_point()), None)


def _eos(model, eos_token_id) -> Optional[tuple]:
    """The eos ids (a tuple, as HF's generate takes one or several), or None."""
    eos = eos_token_id
    if eos is None:
        cfg = getattr(model, "generation_config", None) or model.config
        eos = getattr(cfg, "eos_token_id", None)
    ids = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else (eos,)) if e is not None)
    if len(ids) > MAX_EOS:
        raise GenerateError(f"eos_token_id: {len(ids)} eos tokens {list(ids)}; braze.generate stops on at most "
                            f"{MAX_EOS}")
    return ids or None


def _is_eos(token: torch.Tensor, eos: tuple) -> torch.Tensor:
    hit = token == eos[0]
    for e in eos[1:]:
        hit |= token == e
    return hit


def _pad(model, pad_token_id, eos) -> int:
    """What finished rows are filled with, as Hugging Face's generate fills them: the
    argument, else the generation config's pad token, else eos, else 0."""
    if pad_token_id is not None:
        return int(pad_token_id)
    cfg = getattr(model, "generation_config", None) or model.config
    pad = getattr(cfg, "pad_token_id", None)
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    return int(pad) if pad is not None else (eos[0] if eos else 0)


def _state(model, options: dict) -> _ModelState:
    opts = Options.from_dict(options)
    per_model = _STATES.setdefault(model, {})
    key = repr(sorted(options.items()))
    st = per_model.get(key)
    if st is None:
        reports: list = []
        st = per_model[key] = _ModelState(torch.compile(model.forward, backend=make_backend(opts, reports)), reports)
    return st


def _pad_rows(x: torch.Tensor, rows: int, value: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x.to(torch.long)
    pad = torch.full((rows - x.shape[0],) + tuple(x.shape[1:]), value, dtype=torch.long, device=x.device)
    return torch.cat([x.to(torch.long), pad])


def _cache(model, batch: int, max_len: int, dtype: torch.dtype, device):
    """A static cache of (batch, max_len) rows whose layers all keep every position,
    allocated now.

    NOTE: allocated before the first compiled call, as HF generate does: a cache the
    prefill initialises lazily makes the first prefill's graph see ``is_initialized ==
    False`` and the next generate call's prefill recompile (a whole compile, once per
    step bucket).
    """
    import transformers

    cache = transformers.StaticCache(config=model.config, max_cache_len=max_len)
    for i, layer in enumerate(cache.layers):
        if layer.is_sliding:  # NOTE: the window is the mask's business (see the module docstring)
            cache.layers[i] = transformers.cache_utils.StaticLayer(max_cache_len=max_len)
    shape = _cache_init_shape(model)
    if shape is not None and hasattr(cache, "early_initialization"):
        cache.early_initialization(batch, shape[0], shape[1], dtype, torch.device(device))
    return cache


def _cache_init_shape(model):
    """(K/V heads, head dim) to allocate a static cache with, each an int or a list per
    layer; None where it cannot be allocated up front (then the prefill does it)."""
    ask = getattr(model, "_get_static_cache_init_shape", None)
    if callable(ask):   # transformers' own rule (per-layer shapes, MLA, several devices)
        return ask()
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    if len(set(getattr(model, "hf_device_map", {}).values())) > 1:
        return None
    if any(getattr(cfg, a, None) is not None for a in ("qk_head_dim", "v_head_dim", "kv_lora_rank")):
        return None     # MLA: keys and values of different widths
    if not getattr(cfg, "num_attention_heads", None):
        return None
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _weights_of(model_ref) -> list:
    """The parameters and buffers of the model a weak reference names (none once it is gone:
    a step must not keep its model alive, _STATES is keyed weakly by it)."""
    model = model_ref()
    return [] if model is None else [*model.parameters(), *model.buffers()]


def _forward_call(model, forward):
    """Calls ``forward`` with the cache under the keyword this transformers release names it."""
    sig = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in sig else "past_key_values"

    def call(input_ids, attention_mask, position_ids, cache, prefill: bool = False):
        kwargs = {cache_kw: cache, "use_cache": True}
        if prefill and "logits_to_keep" in sig:
            kwargs["logits_to_keep"] = 1
        out = forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        return out.logits

    return call


def _trim_finished(new: torch.Tensor, eos: tuple, pad: int) -> torch.Tensor:
    """Cut the columns after the step at which every row had produced eos (what HF returns)."""
    hit = _is_eos(new, eos)
    if not bool(hit.any(dim=1).all()):
        return new
    first = hit.float().argmax(dim=1)
    return new[:, : int(first.max()) + 1]
