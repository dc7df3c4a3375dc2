"""The ATen op set braze lowers from, chosen on purpose.

make_fx already decomposes every CompositeImplicitAutograd op (``linear``,
``matmul``, ``layer_norm``, ``scaled_dot_product_attention``'s dispatcher)
into explicit ATen ops. On top of that braze decomposes only the ops whose
parts it fuses better than the whole: norms become their reductions and
pointwise ops, so that one generic reduction codegen covers LayerNorm,
RMSNorm, GroupNorm and their residual variants. Everything fusion
understands as a unit stays whole: ``_softmax`` (online softmax codegen),
``gelu``/``silu`` (one pointwise op each), GEMMs, the SDPA flavours (the
attention pass maps them to one op), embedding, indexing.
"""
from __future__ import annotations

import torch
from torch._decomp import get_decompositions

aten = torch.ops.aten

DECOMPOSED = [
    aten.native_layer_norm,
    aten.native_group_norm,
    aten.native_batch_norm,
    aten._native_batch_norm_legit_no_training,
    aten.rsub,
    aten.addcmul,
    aten.addcdiv,
    aten.std_mean,
    aten.diff,
    aten.logsumexp,
]

_FUSED_RMS = getattr(aten, "_fused_rms_norm", None)
if _FUSED_RMS is not None:
    DECOMPOSED.append(_FUSED_RMS)


def decomposition_table() -> dict:
    return get_decompositions(DECOMPOSED)
