"""``braze.quantize``: post-training weight-only quantization of a model's linear layers.

``quantize(model, "int8")`` replaces every ``nn.Linear`` (except the LM head and
embeddings, and the names in ``skip``) by a :class:`QuantLinear` holding
packed integer weights and scales (``ir/quant.py`` gives the layouts):

- ``"int8"``: symmetric per output channel, ``s = max|w_row| / 127``;
- ``"int4"``: asymmetric per group of ``group_size`` input channels (32, 64 or
  128; default 128), ``s = (max - min) / 15``, ``z = round(-min / s)``, values
  clamped to [0, 15], packed two a byte.

The quantized model runs in eager PyTorch (its forward dequantizes through
``torch.ops.braze.dequantize``: that is the reference) and under braze, where
``passes/fold_dequantize.py`` turns each such linear into one ``quant_linear``
whose kernels never write the dequantized weight.

``lm_head=True`` quantizes the LM head too; a bias-free head tied to a plain
``nn.Embedding`` (what ``get_input_embeddings`` returns) also replaces that
embedding by a :class:`QuantEmbedding` reading the head's integer rows.
"""
from __future__ import annotations

import copy
import fnmatch
from typing import Iterable, Optional

import torch

from braze.ir.quant import check_layout, dequantize, pack_int4

FORMATS = {"int8": 8, "int4": 4}
GROUP_SIZES = (32, 64, 128)


class QuantizeError(ValueError):
    """A layer or an argument ``braze.quantize`` cannot handle; the message names it."""


class QuantLinear(torch.nn.Module):
    """A linear layer with a weight-only quantized weight (``bits`` 8 or 4)."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                 bias: Optional[torch.Tensor], bits: int, group_size: int, in_features: int, out_features: int):
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("zeros", zeros)
        self.bias = torch.nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.scales.dtype

    def weight(self) -> torch.Tensor:
        """The dequantized weight ``[out, in]`` (what the reference multiplies by)."""
        return dequantize(self.qweight, self.scales, self.zeros, self.bits, self.group_size, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.ops.braze.dequantize(self.qweight, self.scales, self.zeros, self.bits, self.group_size, x.dtype)
        return torch.nn.functional.linear(x, w, self.bias)

    def _apply(self, fn, recurse=True):
        # NOTE: .to(dtype) must not cast the integer weights (nn.Module casts floating tensors only)
        # but a dtype the kernels cannot compute in is refused here, naming it.
        out = super()._apply(fn, recurse)
        if self.scales.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise QuantizeError(f"a quantized layer cannot run in {self.scales.dtype}: float32, float16 or "
                                "bfloat16 only")
        return out

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int{self.bits}{g}"


class QuantEmbedding(torch.nn.Module):
    """The input embedding of a model whose tied LM head was quantized: a lookup of the
    head's integer rows, dequantized (only the rows looked up). It holds no tensor of its
    own but reads the head's (``head.qweight`` and scales), so moving or casting the model
    moves them once and the two stay one table in memory. The table belongs to the module
    that holds the head (the whole model): move or cast that one, not a part without the
    head (``model.model.half()`` would leave the table as it was). ``weight`` rebuilds the
    whole dequantized table on each read; ``device`` and ``dtype`` are cheap."""

    def __init__(self, head: QuantLinear, padding_idx: Optional[int] = None):
        super().__init__()
        object.__setattr__(self, "head", head)    # not a submodule: the model owns it once, as its head
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.padding_idx = padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.head
        flat = ids.reshape(-1)
        zeros = h.zeros.index_select(0, flat) if h.zeros is not None else None
        rows = torch.ops.braze.dequantize(h.qweight.index_select(0, flat), h.scales.index_select(0, flat), zeros,
                                          h.bits, h.group_size, h.scales.dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (for code that reads ``embedding.weight``; not stored)."""
        return self.head.weight()

    @property
    def device(self) -> torch.device:
        return self.head.qweight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.scales.dtype

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rows of the quantized LM head"


def quantize_weight(w: torch.Tensor, bits: int, group_size: int = 128, name: str = "weight"):
    """(qweight, scales, zeros) of a float weight ``[N, K]`` (zeros is None for int8)."""
    n, k = w.shape
    wf = w.detach().to(torch.float32)
    if bits == 8:
        s = wf.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        q = torch.clamp(torch.round(wf / s[:, None]), -127, 127).to(torch.int8)
        return q.contiguous(), s.to(w.dtype), None
    if k % group_size:
        raise QuantizeError(f"{name}: weight {tuple(w.shape)} has {k} input features, not a multiple of the int4 "
                            f"group size {group_size}")
    g = wf.reshape(n, k // group_size, group_size)
    lo, hi = g.amin(dim=2), g.amax(dim=2)
    s = ((hi - lo) / 15.0).clamp_min(1e-12)
    z = torch.clamp(torch.round(-lo / s), 0, 15)
    q = torch.clamp(torch.round(g / s[..., None]) + z[..., None], 0, 15).reshape(n, k)
    return pack_int4(q), s.to(w.dtype), z.to(w.dtype)


def _default_skip(model: torch.nn.Module) -> set[str]:
    """The LM head (and anything tied to the input embeddings) stays in floating point."""
    out = set()
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, mod in model.named_modules():
        if mod is head or (emb is not None and isinstance(mod, torch.nn.Linear) and mod.weight is emb.weight):
            out.add(name)
        elif name.split(".")[-1] in ("lm_head", "embed_out", "output"):
            out.add(name)
    return out


def quantize(model: torch.nn.Module, fmt: str = "int8", *, group_size: int = 128,
             modules: Optional[Iterable[str]] = None, skip: Iterable[str] = (), inplace: bool = True,
             lm_head: bool = False) -> torch.nn.Module:
    """See ``braze.quantize``."""
    if fmt not in FORMATS:
        raise QuantizeError(f"unknown format {fmt!r}; braze quantizes weights to {', '.join(FORMATS)}")
    bits = FORMATS[fmt]
    if bits == 4 and group_size not in GROUP_SIZES:
        raise QuantizeError(f"int4 group_size={group_size}: expected one of {GROUP_SIZES}")
    if not inplace:
        model = copy.deepcopy(model)
    skip = set(skip)
    names = {n for n, _ in model.named_modules()}
    unknown = sorted(skip - names)
    if unknown:
        raise QuantizeError(f"skip={unknown}: no module of that name in {type(model).__name__} (names as "
                            "model.named_modules() gives them, e.g. 'model.layers.0.mlp.down_proj')")
    skip = skip | (set() if lm_head else _default_skip(model))
    patterns = list(modules) if modules is not None else None
    targets = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or name in skip:
            continue
        if patterns is not None and not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        if not mod.weight.is_floating_point():
            raise QuantizeError(f"{name}: weight of dtype {mod.weight.dtype} is not a float weight")
        if bits == 4 and mod.in_features % group_size:
            raise QuantizeError(f"{name}: weight [{mod.out_features}, {mod.in_features}] has {mod.in_features} "
                                f"input features, not a multiple of the int4 group size {group_size}")
        targets.append((name, mod))
    if not targets:
        other = sorted({type(m).__name__ for m in model.modules() if type(m).__name__ == "Conv1D"})
        why = (f"; its projections are {', '.join(other)} layers (GPT-2's transposed linear), which braze does "
               "not quantize" if other else "")
        raise QuantizeError("no nn.Linear layer to quantize (after skipping the LM head, embeddings and "
                            f"{sorted(skip) or 'nothing'}){why}")
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    emb_name = next((n for n, m in model.named_modules() if m is emb), None) if emb is not None else None
    for name, mod in targets:
        q, s, z = quantize_weight(mod.weight, bits, group_size, name)
        check_layout(q, s, z, bits, group_size)
        ql = QuantLinear(q, s, z, mod.bias.detach() if mod.bias is not None else None, bits,
                         group_size if bits == 4 else 0, mod.in_features, mod.out_features).to(mod.weight.device)
        _replace(model, name, ql)
        # NOTE: a head tied to the input embeddings: the lookup reads the head's integer table too,
        # so the float table is gone (rows come back dequantized: the embedding is quantized with it).
        # Only a plain lookup: an embedding whose forward does more (Gemma's scaled one multiplies
        # by sqrt(hidden)) or renormalises rows (max_norm) keeps its float table.
        if emb_name and mod.weight is emb.weight and mod.bias is None and _plain_lookup(emb):
            _replace(model, emb_name, QuantEmbedding(ql, emb.padding_idx))
    return model


def _plain_lookup(emb: torch.nn.Module) -> bool:
    return (isinstance(emb, torch.nn.Embedding) and type(emb).forward is torch.nn.Embedding.forward
            and emb.max_norm is None)


def _replace(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (tied tensors once): the model's weight memory."""
    seen, n = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.numel())
        if key not in seen:
            seen.add(key)
            n += t.numel() * t.element_size()
    return n
