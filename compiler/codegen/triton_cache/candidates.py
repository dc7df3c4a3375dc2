"""The ``index_copy_many_`` candidate: both writes of a layer's K/V cache in one Triton launch.

Taken for two 4-D buffers of one shape and dtype written along dim 2 (Hugging Face's
``[batch, heads, cache rows, head dim]``); anything else declines and the library
call (``index_copy_`` per buffer) runs. The library candidate competes by measurement
as for every kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from braze.autotune.contract import problem_of, structural_key
from braze.autotune.space import Config, Constraint, DeviceInfo, Knob, Space
from braze.compiler.codegen.kernel_modules import KernelModule, handwritten_candidates
from braze.compiler.codegen.triton_cache import kernels as _kernels_mod
from braze.ir import Graph, Node


_KERNELS = KernelModule(_kernels_mod, "index_copy_pair_kernel")


def _kernels():
    return _KERNELS.get()


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _default(p: Mapping, d: DeviceInfo) -> dict:
    bd = _pow2(int(p["D"]))
    return {"BLOCK_D": bd, "num_warps": 1 if bd <= 128 else 2}


SPACE = Space(
    knobs=(Knob("BLOCK_D", (16, 32, 64, 128, 256, 512)), Knob("num_warps", (1, 2, 4))),
    constraints=(Constraint("one block holds a row", lambda c, p, d: c["BLOCK_D"] >= int(p["D"])),),
    default=_default,
)


def why_not(node: Node) -> str:
    bases, dim, index, srcs = node.args
    if len(bases) != 2 or len(srcs) != 2:
        return f"{len(bases)} buffers (the kernel writes two)"
    (kb, vb), (ks, vs) = (b.type for b in bases), (s.type for s in srcs)
    if kb.rank != 4 or dim % 4 != 2:
        return f"writes along dim {dim} of a rank-{kb.rank} buffer (dim 2 of [B, H, S, D] is taken)"
    if kb.dtype != vb.dtype or ks.dtype != kb.dtype or vs.dtype != vb.dtype or str(kb.shape) != str(vb.shape):
        return "buffers of different shapes or dtypes"
    if str(ks.shape) != str(vs.shape) or index.type.rank != 1:
        return "new rows of different shapes"
    return ""


@dataclass
class TritonIndexCopyPair:
    node: Node
    name: str = "triton_kv_cache_write"
    backend: str = "triton"
    space: Space = field(default=SPACE, repr=False)
    source: str = field(default="", repr=False)

    def __post_init__(self):
        if not self.source:
            import inspect

            self.source = inspect.getsource(_kernels_mod)

    def key(self) -> str:
        return structural_key(self.node, "triton_cache")

    def problem(self, env: Mapping[str, int]) -> dict:
        src = self.node.args[3][0].type.concrete_shape(env)
        return {"D": int(src[3]), "rows": int(src[0] * src[1] * src[2]),
                **{k: v for k, v in problem_of(self.node, env).items() if k == "dtypes"}}

    def compile(self, config: Config) -> Callable[..., Any]:
        bd, warps = int(config["BLOCK_D"]), int(config["num_warps"])

        def run(kb: torch.Tensor, vb: torch.Tensor, index: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor):
            B, H, n, D = ks.shape
            if B * H * n and D:
                _kernels().index_copy_pair_kernel[(B * H * n,)](
                    kb, vb, index, ks, vs, H, n, D, *kb.stride(), *vb.stride(), *ks.stride(), *vs.stride(),
                    BLOCK_D=bd, num_warps=warps)
            return kb, vb

        run.__name__ = self.name
        return run


def generate(node: Node, graph: Graph, options, device) -> list:
    """Candidates for an ``index_copy_many_`` node (the generator registered as "triton_cache")."""
    return handwritten_candidates(node, device, "index_copy_many_", "KV cache write", "triton_cache",
                                  "the library call copies each buffer's rows", why_not, TritonIndexCopyPair)
