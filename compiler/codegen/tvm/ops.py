"""Which IR ops the TVM backend lowers, by role (no TVM import here).

The checker (``support.py``) reads these tables; the lowering
(``pointwise.py``, ``layout.py``, ``lower.py``) implements exactly them, and
a test checks that every name listed here has a lowering.
"""
from __future__ import annotations

import torch

# Elementwise ops: one output element from the elements at the same index.
POINTWISE = frozenset("""
abs acos acosh add asin asinh atan atan2 atanh bitwise_and bitwise_not bitwise_or bitwise_xor ceil clamp
clamp_min clamp_max copysign cos cosh div elu eq erf erfc exp exp2 expm1 fill floor floor_divide fmod frac
gelu ge gt hardsigmoid hardswish hardtanh isinf isnan isfinite le leaky_relu lerp log log10 log1p log2
logical_and logical_not logical_or logical_xor lt masked_fill maximum minimum mish mul nan_to_num ne neg pow
reciprocal relu relu6 remainder round rsqrt sigmoid sign signbit silu sin sinh softplus sqrt square sub tan
tanh threshold trunc where xlogy _to_copy prims::convert_element_type triu tril
""".split())

# Layout ops folded into index arithmetic (the canonical set after
# ``passes/normalize_views`` plus the spellings it rewrites, for robustness).
LAYOUT = frozenset("""
reshape view _unsafe_view unsqueeze squeeze flatten unflatten permute transpose t expand expand_as slice
select cat alias clone contiguous detach lift_fresh_copy split split_with_sizes
""".split())

# Row reductions over the last dimension.
REDUCTION = frozenset("sum mean amax amin var var_mean std _softmax _log_softmax".split())

GEMM = frozenset("mm addmm bmm".split())

DTYPES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def tvm_dtype(dtype: torch.dtype) -> str:
    """The TVM dtype name of a torch dtype (KeyError for unsupported ones)."""
    return DTYPES[dtype]


def compute_dtype(dtype: torch.dtype) -> str:
    """The dtype values are computed in: f16/bf16 compute in f32 (rounded at
    stores and explicit casts), everything else in itself."""
    if dtype in (torch.float16, torch.bfloat16):
        return "float32"
    return DTYPES[dtype]
