"""The ATen ops braze knows, by category.

Each becomes an :class:`~braze.ir.registry.OpDef` whose reference is the
ATen packet itself, so the interpreter and the fallback run exactly what
eager PyTorch runs. The set covers the forward passes of the common
Hugging Face Transformer families after braze's decompositions
(``compiler/decompositions.py``); anything else lowers to an opaque node.
"""
from __future__ import annotations

import torch

from braze.ir.registry import Category, OpDef, register

aten = torch.ops.aten

POINTWISE = """
abs acos acosh add addcdiv addcmul asin asinh atan atan2 atanh bitwise_and bitwise_not bitwise_or
bitwise_xor bitwise_left_shift bitwise_right_shift ceil clamp clamp_min clamp_max copysign cos cosh
div elu eq erf erfc erfinv exp exp2 expm1 fill floor floor_divide fmod frac gelu ge gt hardsigmoid
hardswish hardtanh isinf isnan isfinite le leaky_relu lerp lgamma log log10 log1p log2 logical_and
logical_not logical_or logical_xor logit lt masked_fill maximum minimum mish mul nan_to_num ne neg
pow reciprocal relu relu6 remainder round rsqrt sigmoid sign signbit silu sin sinh softplus sqrt
square sub tan tanh threshold trunc where xlogy _to_copy triu tril
"""

REDUCTION = """
sum mean amax amin max min var var_mean std std_mean prod any all argmax argmin _softmax
_log_softmax logsumexp linalg_vector_norm norm native_layer_norm native_group_norm
native_batch_norm _native_batch_norm_legit_no_training _fused_rms_norm
"""

SCAN = "cumsum cumprod logcumsumexp"

GEMM = "mm addmm bmm baddbmm mv addmv dot matmul linear"

ATTENTION = """
scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu
_scaled_dot_product_efficient_attention _scaled_dot_product_flash_attention
_scaled_dot_product_cudnn_attention _scaled_dot_product_attention_math
"""

VIEW = """
view _unsafe_view reshape permute transpose t expand unsqueeze squeeze slice select alias clone
contiguous cat stack split split_with_sizes unbind chunk narrow as_strided flip repeat roll
diagonal lift_fresh_copy detach constant_pad_nd movedim unflatten flatten view_as_real
view_as_complex expand_as _reshape_alias
"""

GATHER = """
embedding index index_select gather scatter scatter_add scatter_reduce index_put index_copy
index_add masked_scatter take repeat_interleave slice_scatter select_scatter copy
"""

CREATION = """
arange full zeros ones empty empty_strided scalar_tensor full_like zeros_like ones_like
empty_like new_zeros new_ones new_full new_empty linspace eye
"""

# Known, but nothing braze can fuse or specialise: they run as they are.
OPAQUE = """
sort topk nonzero unique_consecutive _unique2 bernoulli rand randn rand_like randn_like randint
native_dropout convolution _local_scalar_dense item searchsorted bucketize histc multinomial
masked_select
"""

TABLE = {
    Category.POINTWISE: POINTWISE,
    Category.REDUCTION: REDUCTION,
    Category.SCAN: SCAN,
    Category.GEMM: GEMM,
    Category.ATTENTION: ATTENTION,
    Category.VIEW: VIEW,
    Category.GATHER: GATHER,
    Category.CREATION: CREATION,
    Category.OPAQUE: OPAQUE,
}

PRIMS = {"convert_element_type": Category.POINTWISE}


def _register_all() -> None:
    for cat, names in TABLE.items():
        for name in names.split():
            packet = getattr(aten, name, None)
            if packet is None:  # not in this torch version
                continue
            register(OpDef(name, cat, packet, packet=packet))
    for name, cat in PRIMS.items():
        packet = getattr(torch.ops.prims, name)
        register(OpDef(f"prims::{name}", cat, packet, packet=packet))


_register_all()
