"""Quantized weights: the ``braze::dequantize`` op and ``quant_linear``.

Weight-only quantization stores a linear layer's weight ``[N, K]`` as

- int8, symmetric per output channel: ``qweight`` int8 ``[N, K]``, ``scales``
  ``[N]``; ``w = q * s``;
- int4, asymmetric per group of ``group_size`` input channels: ``qweight``
  uint8 ``[N, K / 2]``, two values a byte in chunks of ``INT4_CHUNK`` (32)
  input channels: byte ``16c + i`` of a row holds channel ``32c + i`` in its
  low nibble and channel ``32c + 16 + i`` in its high one (so a kernel
  reading 16 bytes meets two contiguous runs of 16 activations: vector
  loads, not a stride-2 gather); ``scales`` and ``zeros`` ``[N, K / g]``;
  ``w = (q - z) * s`` with ``q`` in [0, 15]. K is a multiple of 32 (every
  group size is).

``dequantize(qweight, scales, zeros, bits, group_size, dtype)`` rebuilds the
weight in ``dtype``; it is a torch custom op (``torch.ops.braze.dequantize``)
so a quantized model runs in eager PyTorch and is captured as one op. In the
IR it is opaque: never constant-folded (that would store the dequantized
weight), never fused generically. ``passes/fold_dequantize.py`` folds
``mm(x, dequantize(...)^T)`` into ``quant_linear(x, qweight, scales, zeros)``,
whose kernels dequantize in the GEMM's operand load: no dequantized weight
is ever written to memory.
"""
from __future__ import annotations

from typing import Optional

import torch

from braze.ir.registry import Category, OpDef, register
from braze.ir.types import TensorType

BITS = (4, 8)
INT4_CHUNK = 32   # input channels per packed chunk: low nibbles the first half, high nibbles the second


def check_layout(qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor], bits: int,
                 group_size: int) -> tuple[int, int]:
    """(N, K) of a quantized weight; raises ValueError naming what does not fit."""
    if bits not in BITS:
        raise ValueError(f"braze quantization: {bits} bits; supported: {BITS}")
    if qweight.dim() != 2:
        raise ValueError(f"braze quantization: qweight must be 2-d, got {tuple(qweight.shape)}")
    n = qweight.shape[0]
    if bits == 8:
        if qweight.dtype != torch.int8 or scales.shape != (n,):
            raise ValueError(f"braze int8 weight: qweight int8 [N, K] and scales [N], got {qweight.dtype} "
                             f"{tuple(qweight.shape)} and {tuple(scales.shape)}")
        return n, qweight.shape[1]
    k = qweight.shape[1] * 2
    if qweight.dtype != torch.uint8 or group_size <= 0 or k % group_size or k % INT4_CHUNK:
        raise ValueError(f"braze int4 weight: qweight uint8 [N, K/2] with K a multiple of the group size "
                         f"{group_size} and of {INT4_CHUNK}, got {qweight.dtype} {tuple(qweight.shape)}")
    g = k // group_size
    if scales.shape != (n, g) or zeros is None or zeros.shape != (n, g):
        raise ValueError(f"braze int4 weight: scales and zeros [N, K/group] = [{n}, {g}], got "
                         f"{tuple(scales.shape)} and {None if zeros is None else tuple(zeros.shape)}")
    return n, k


def unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, K/2]`` -> values in [0, 15] as uint8 ``[N, K]`` (chunks of ``INT4_CHUNK``)."""
    n, half = qweight.shape
    b = qweight.reshape(n, half * 2 // INT4_CHUNK, INT4_CHUNK // 2)
    return torch.cat([b & 0xF, b >> 4], dim=2).reshape(n, half * 2)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Values in [0, 15] ``[N, K]`` -> uint8 ``[N, K/2]``: per chunk of ``INT4_CHUNK`` input channels,
    the first half in the low nibbles and the second half in the high ones."""
    n, k = q.shape
    if k % INT4_CHUNK:
        raise ValueError(f"braze int4 packing: {k} input channels, not a multiple of {INT4_CHUNK}")
    c = q.to(torch.uint8).reshape(n, k // INT4_CHUNK, INT4_CHUNK)
    h = INT4_CHUNK // 2
    return (c[:, :, :h] | (c[:, :, h:] << 4)).reshape(n, k // 2).contiguous()


@torch.library.custom_op("braze::dequantize", mutates_args=())
def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor], bits: int,
               group_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The weight ``[N, K]`` in ``dtype`` (see the module docstring for the layouts)."""
    check_layout(qweight, scales, zeros, bits, group_size)
    if bits == 8:
        return (qweight.to(torch.float32) * scales.to(torch.float32)[:, None]).to(dtype)
    q = unpack_int4(qweight).to(torch.float32)
    s = scales.to(torch.float32).repeat_interleave(group_size, dim=1)
    z = zeros.to(torch.float32).repeat_interleave(group_size, dim=1)
    return ((q - z) * s).to(dtype)


@dequantize.register_fake
def _dequantize_fake(qweight, scales, zeros, bits, group_size, dtype):
    n, k = qweight.shape[0], qweight.shape[1] * (2 if bits == 4 else 1)
    return qweight.new_empty((n, k), dtype=dtype)


def quant_linear_reference(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                           zeros: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None, *,
                           bits: int, group_size: int = 0) -> torch.Tensor:
    """``x @ dequantize(qweight, ...)^T (+ bias)`` in x's dtype: x ``[M, K]``, out ``[M, N]``."""
    w = dequantize(qweight, scales, zeros, bits, group_size, x.dtype)
    return torch.nn.functional.linear(x, w, bias)


def _dequantize_infer(qweight, scales, zeros, bits, group_size, dtype):
    t = qweight.type
    k = t.shape[1] * 2 if bits == 4 else t.shape[1]
    return (TensorType((t.shape[0], k), dtype, t.device),)


def _quant_linear_infer(x, qweight, scales, zeros=None, bias=None, *, bits, group_size=0):
    xt, qt = x.type, qweight.type
    if xt.rank != 2:
        raise TypeError(f"quant_linear takes x [M, K], got {xt}")
    return (TensorType((xt.shape[0], qt.shape[0]), xt.dtype, xt.device),)


register(OpDef("braze::dequantize", Category.OPAQUE, torch.ops.braze.dequantize.default,
               infer=_dequantize_infer, packet=torch.ops.braze.dequantize,
               doc="a quantized weight rebuilt in a float dtype; see braze.ir.quant"))
register(OpDef("quant_linear", Category.OPAQUE, quant_linear_reference, infer=_quant_linear_infer,
               doc="x @ dequantize(weight)^T (+ bias), dequantized in the GEMM's operand load; see braze.ir.quant"))
