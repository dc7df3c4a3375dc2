"""ATen's weight-only integer GEMMs for ``quant_linear`` on the CPU.

The op's reference (the library candidate every node gets) dequantizes the
whole weight on every call and then multiplies: on two cores a 4096 x 2048
int8 weight took longer to dequantize than to multiply in float. ATen has
CPU kernels that read the integer weight directly:

- int8 (braze's layout as it is: int8 ``[N, K]``, one scale per output
  channel): ``aten._weight_int8pack_mm(x, qweight, scales)``;
- int4 (braze's asymmetric groups): ``aten._weight_int4pack_mm_for_cpu`` over
  the weight repacked once (``_convert_weight_to_int4pack_for_cpu``) with
  scales and zero points as ``[K / g, N, 2]``. ATen's int4 value is
  ``(q - 8) * s + z'``; braze's ``(q - z) * s`` is that with ``z' = (8 - z) * s``.

Registered as the generator "library_quant": candidates the selection times
beside the reference on each shape bucket, so they run only where they are
the faster (they are not at every shape: ATen's int8 kernel is a GEMV, slower
than dequantize-then-GEMM on a 128-row float32 prefill on the machine it was
written on). Memory: an int4 weight it serves is held twice (braze's packing
and ATen's, each a quarter of bf16's bytes); int8 reads braze's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from braze.autotune.contract import register_generator
from braze.autotune.space import Config
from braze.compiler.codegen.library_form import FormKernel
from braze.compiler.codegen.packed_weights import PackedWeights
from braze.compiler.codegen.tvm.kernel import constant_data
from braze.ir import Graph, Node
from braze.ir.quant import unpack_int4

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PACKED = PackedWeights()


@dataclass(frozen=True)
class QuantForm:
    bits: int
    group: int
    has_zeros: bool
    has_bias: bool


def available(bits: int) -> bool:
    ops = torch.ops.aten
    if bits == 8:
        return hasattr(ops, "_weight_int8pack_mm")
    return hasattr(ops, "_weight_int4pack_mm_for_cpu") and hasattr(ops, "_convert_weight_to_int4pack_for_cpu")


def int4_operands(q: torch.Tensor, s: torch.Tensor, z: torch.Tensor, dtype: torch.dtype):
    """ATen's packed int4 weight and ``[K / g, N, 2]`` scales-and-zeros for braze's
    ``(qweight, scales, zeros)`` (packed once per weight, see packed_weights.py)."""
    def make():
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(q).to(torch.int32).contiguous(), 1)
        sf, zf = s.to(torch.float32), z.to(torch.float32)
        sz = torch.stack([sf, (8.0 - zf) * sf], dim=-1).transpose(0, 1).contiguous().to(dtype)
        return packed, sz

    return _PACKED.get((q, s, z), ("int4", dtype), make)


@dataclass
class QuantLinearATen(FormKernel):
    """``quant_linear`` through ATen's integer-weight CPU kernels."""

    name: str = "library_quant_linear"

    def __post_init__(self):
        f = self.form
        self.name = f"library_quant_linear_int{f.bits}" + (f"_g{f.group}" if f.bits == 4 else "")

    def compile(self, config: Config) -> Callable[..., Any]:
        f = self.form

        def run(x, q, s, *rest):
            z = rest[0] if f.has_zeros else None
            bias = rest[-1] if f.has_bias else None
            x = x.contiguous()
            if x.shape[0] == 0 or x.shape[1] == 0:
                out = x.new_zeros((x.shape[0], q.shape[0]))
            elif f.bits == 8:
                out = torch.ops.aten._weight_int8pack_mm(x, q, s.to(x.dtype))
            else:
                packed, sz = int4_operands(q, s, z, x.dtype)
                out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, f.group, sz)
            return out if bias is None else out.add_(bias.to(out.dtype))

        run.__name__ = self.name
        return run


def _form(node: Node) -> Optional[QuantForm]:
    x, q, s, z, bias = node.args
    bits, group = int(node.attr("bits")), int(node.attr("group_size") or 0)
    if x.type.dtype not in DTYPES or x.type.rank != 2 or q.type.rank != 2 or not available(bits):
        return None
    if bits == 4 and (z is None or group < 32 or group % 32 or s.type.rank != 2):
        return None
    if bits == 8 and s.type.rank != 1:
        return None
    return QuantForm(bits, group, z is not None, bias is not None)


def generate(node: Node, graph: Graph, options, device) -> list:
    """The generator: a :class:`QuantLinearATen` for a CPU ``quant_linear`` whose weight is
    a constant (int4 packs it once; an activation would be packed on every call)."""
    if node.op != "quant_linear" or device.kind != "cpu":
        return []
    form = _form(node)
    if form is None or not all(constant_data(v) for v in node.args[1:4] if v is not None):
        return []
    return [QuantLinearATen(node, form)]


register_generator("library_quant", generate)
