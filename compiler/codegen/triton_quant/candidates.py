"""The ``quant_linear`` kernel candidate: launcher, search space, generator.

Two forms, chosen per shape bucket by the space's default and searched by the
tuner: the GEMV form for up to ``GEMV_MAX_M`` rows (decode), the tensor-core
GEMM form above. The library candidate (``kernels_for`` appends it) is the
op's reference: dequantize, then cuBLAS / MKL.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from braze.autotune.contract import problem_of, structural_key
from braze.autotune.space import Config, Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.kernel_modules import KernelModule, handwritten_candidates, interpreting
from braze.compiler.codegen.triton_quant import kernels as _kernels_mod
from braze.ir import Graph, Node

GEMV_MAX_M = 16
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


_KERNELS = KernelModule(_kernels_mod, "quant_gemv_kernel")


def _kernels():
    return _KERNELS.get()


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _pow2_floor(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def _default(p: Mapping, d: DeviceInfo) -> dict:
    m, n, k, group = int(p["M"]), int(p["N"]), int(p["K"]), int(p["group"])
    # int4: the largest power-of-two K block dividing the group (a group of 96 takes 32)
    bk_cap = min(128, group & -group) if p["bits"] == 4 else 256
    if d.kind != "cuda":  # the interpreter: small tiles
        bm = 16 if m > GEMV_MAX_M else _pow2(m)
        return {"BLOCK_M": bm, "BLOCK_N": 16 if m > 8 else 32, "BLOCK_K": 32, "SPLIT_K": 1,
                "num_warps": 4, "num_stages": 1}
    if m <= GEMV_MAX_M:
        # NOTE: bench/gemv_variants.py on an H100 (Llama-1B decode shapes, bf16 weights):
        # narrow column blocks and long K chunks read fastest. Here each thread keeps its
        # products (BLOCK_M x BLOCK_N x K block / threads fp32 registers, 16-64) and a K
        # block is 16-32 weight bytes a thread at one row: int8 512 channels x 8 rows,
        # int4 one group (128 channels, 64 bytes) x 32 rows.
        bm = _pow2(m)
        if p["bits"] == 4:
            bk = bk_cap
            bn = min(256, max(8, _pow2_floor(2048 // (bm * bk // 2))))
        else:
            bk = max(64, 512 // bm)
            bn = 8
        tiles = -(-n // bn)
        split = 1
        while tiles * split * 2 <= 2 * max(d.sm_count, 1) and k // (split * 2) >= 1024:
            split *= 2
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_M": 128 if m >= 128 else 64, "BLOCK_N": 128, "BLOCK_K": min(64, bk_cap), "SPLIT_K": 1,
            "num_warps": 8 if m >= 128 else 4, "num_stages": 3}


SPACE = Space(
    knobs=(
        Knob("BLOCK_M", (1, 2, 4, 8, 16, 32, 64, 128)),
        Knob("BLOCK_N", (8, 16, 32, 64, 128, 256)),
        Knob("BLOCK_K", (32, 64, 128, 256, 512, 1024)),
        Knob("SPLIT_K", (1, 2, 4, 8, 16)),
        Knob("num_warps", (2, 4, 8)),
        Knob("num_stages", (1, 2, 3, 4)),
    ),
    constraints=(
        Constraint("an int4 K block stays inside one quantization group",
                   lambda c, p, d: p["bits"] != 4 or p["group"] % c["BLOCK_K"] == 0),
        Constraint("GEMV rows cover M (one row block), GEMM tiles of at least 16 rows",
                   lambda c, p, d: c["BLOCK_M"] == _pow2(int(p["M"])) if int(p["M"]) <= GEMV_MAX_M
                   else c["BLOCK_M"] >= 16),
        Constraint("GEMM tiles of at least 16 columns (tl.dot)",
                   lambda c, p, d: int(p["M"]) <= GEMV_MAX_M or c["BLOCK_N"] >= 16),
        Constraint("split-K only in the GEMV form",
                   lambda c, p, d: c["SPLIT_K"] == 1 or int(p["M"]) <= GEMV_MAX_M),
        Constraint("GEMV registers: a BLOCK_M x BLOCK_N x K block (int4: bytes) accumulator, at most 64 a thread",
                   lambda c, p, d: int(p["M"]) > GEMV_MAX_M or
                   c["BLOCK_M"] * c["BLOCK_N"] * c["BLOCK_K"] // (2 if p["bits"] == 4 else 1)
                   <= 64 * 32 * c["num_warps"]),
    ),
    default=_default,
)


def _check(node: Node) -> str:
    """Why the Triton kernel cannot run ``node`` ("" when it can)."""
    x, q, s, z, bias = node.args
    bits, group = node.attr("bits"), node.attr("group_size")
    if x.type.dtype not in DTYPES:
        return f"activations of {x.type.dtype}"
    if bits == 4 and (not isinstance(group, int) or group < 32 or group % 32):
        return f"int4 group size {group} (a multiple of 32 is needed)"
    if x.type.rank != 2 or q.type.rank != 2:
        return "operands not 2-d"
    return ""


@dataclass
class TritonQuantLinear:
    node: Node
    name: str = "triton_quant_linear"
    backend: str = "triton"
    space: Space = field(default=SPACE, repr=False)
    source: str = field(default="", repr=False)

    def __post_init__(self):
        self.bits = int(self.node.attr("bits"))
        self.group = int(self.node.attr("group_size") or 0)
        self.has_zeros = self.node.args[3] is not None
        self.has_bias = self.node.args[4] is not None
        self.name = f"triton_quant_linear_int{self.bits}" + (f"_g{self.group}" if self.bits == 4 else "")
        if not self.source:
            import inspect

            self.source = f"# braze quant_linear int{self.bits} g{self.group}\n" + inspect.getsource(_kernels_mod)

    def key(self) -> str:
        return structural_key(self.node, "triton_quant")

    def problem(self, env: Mapping[str, int]) -> dict:
        x, q = self.node.args[0].type, self.node.args[1].type
        m = x.concrete_shape(env)[0]
        return {"M": _pow2(m), "N": int(q.concrete_shape(env)[0]), "K": int(x.concrete_shape(env)[1]),
                "bits": self.bits, "group": self.group, "dtype": str(x.dtype).replace("torch.", ""),
                **{k: v for k, v in problem_of(self.node, env).items() if k == "dtypes"}}

    def compile(self, config: Config) -> Callable[..., Any]:
        cfg = dict(config)
        bits, group, has_bias = self.bits, self.group, self.has_bias

        def run(x, q, s, *rest):
            z = rest[0] if self.has_zeros else None
            bias = rest[-1] if has_bias else None
            return quant_linear(x, q, s, z, bias, bits=bits, group_size=group, config=cfg)

        run.__name__ = self.name
        return run


def quant_linear(x, q, s, z, bias, *, bits: int, group_size: int, config: Mapping) -> torch.Tensor:
    """The Triton ``quant_linear``: x ``[M, K]`` -> ``[M, N]`` in x's dtype."""
    km = _kernels()
    M, K = x.shape
    N = q.shape[0]
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    if K == 0:
        return out.zero_() if bias is None else out.copy_(bias.expand(M, N))
    zz = z if z is not None else s
    bb = bias if bias is not None else s
    bm, bn, bk = int(config["BLOCK_M"]), int(config["BLOCK_N"]), int(config["BLOCK_K"])
    if bits == 4 and (group_size % bk or bk % 32):
        raise ValueError(f"int4 quant_linear: K block {bk} must divide the group size {group_size} "
                         "and be a multiple of 32")
    sz = (zz.stride(0), zz.stride(1)) if zz.dim() == 2 else (zz.stride(0), 0)
    ss = (s.stride(0), s.stride(1)) if s.dim() == 2 else (s.stride(0), 0)
    common = (M, N, K, x.stride(0), x.stride(1), q.stride(0), q.stride(1), *ss, *sz, out.stride(0), out.stride(1))
    if M <= GEMV_MAX_M:
        split = max(1, int(config.get("SPLIT_K", 1)))
        step = group_size if bits == 4 else bk
        k_per = -(-(-(-K // split)) // step) * step      # each split a whole number of groups / blocks
        split = -(-K // k_per)
        ws = torch.empty(split * M * N, dtype=torch.float32, device=x.device) if split > 1 else out
        km.quant_gemv_kernel[(-(-N // bn), split)](
            x, q, s, zz, bb, out, ws, *common, k_per, max(group_size, 1),
            BITS=bits, HAS_BIAS=bias is not None, SPLIT=split > 1, BLOCK_M=_pow2(M), BLOCK_N=bn, BLOCK_K=bk,
            EVEN_K=K % bk == 0 and k_per % bk == 0,
            num_warps=int(config["num_warps"]), num_stages=int(config["num_stages"]))
        if split > 1:
            block = 1024
            km.quant_splitk_epilogue[(-(-(M * N) // block),)](ws, bb, out, M, N, out.stride(0), out.stride(1), split,
                                                               HAS_BIAS=bias is not None, BLOCK=block)
        return out
    dot_f32 = interpreting() or x.dtype == torch.float32
    km.quant_gemm_kernel[(-(-M // bm), -(-N // bn))](
        x, q, s, zz, bb, out, *common, max(group_size, 1), BITS=bits, HAS_BIAS=bias is not None, DOT_F32=dot_f32,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=int(config["num_warps"]), num_stages=int(config["num_stages"]))
    return out


def generate(node: Node, graph: Graph, options, device) -> list:
    """Candidates for a ``quant_linear`` node (the generator registered as "triton_quant")."""
    return handwritten_candidates(node, device, "quant_linear", "quant_linear template", "triton_quant",
                                  "the torch reference dequantizes and multiplies", _check, TritonQuantLinear)
