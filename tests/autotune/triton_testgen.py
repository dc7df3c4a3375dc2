"""A small Triton matmul (+ relu) with tile/warp/stage knobs, and a wrong
variant (skips the last k block), for the GPU tests of the autotuner.
``gen`` has the code-generator signature and accepts fused gemm groups on CUDA."""
import torch
import triton
import triton.language as tl

from braze.autotune.space import Knob, Space
from braze.compiler.kernels import problem_of, structural_key


@triton.jit
def _mm(a, b, c, M, N, K, sam, sak, sbk, sbn, scm, scn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        RELU: tl.constexpr, BUG: tl.constexpr):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K - BUG * BK, BK):
        x = tl.load(a + rm[:, None] * sam + (k + rk)[None, :] * sak, mask=(rm[:, None] < M) & ((k + rk)[None, :] < K), other=0.)
        y = tl.load(b + (k + rk)[:, None] * sbk + rn[None, :] * sbn, mask=((k + rk)[:, None] < K) & (rn[None, :] < N), other=0.)
        acc += tl.dot(x, y)
    if RELU:
        acc = tl.maximum(acc, 0.)
    tl.store(c + rm[:, None] * scm + rn[None, :] * scn, acc.to(c.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


class TritonMM:
    backend = "triton"

    def __init__(self, node, bug=0):
        self.node, self.bug = node, bug
        self.name = "triton_test_mm" + ("_bug" if bug else "")
        self.source = f"triton mm bug={bug}"
        self.space = Space((Knob("BM", (32, 64, 128)), Knob("BN", (32, 64, 128)), Knob("BK", (32, 64)),
                            Knob("num_warps", (4, 8)), Knob("num_stages", (2, 3, 4))),
                           default=lambda p, d: {"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 3})

    def key(self):
        return structural_key(self.node, f"test-triton-mm{self.bug}")

    def problem(self, env):
        return problem_of(self.node, env)

    def compile(self, config):
        relu = any(n.op == "relu" for n in self.node.attr("graph").compute_nodes)

        def run(x, w):
            M, K = x.shape
            N = w.shape[1]
            out = torch.empty(M, N, device=x.device, dtype=x.dtype)
            grid = (triton.cdiv(M, config["BM"]), triton.cdiv(N, config["BN"]))
            _mm[grid](x, w, out, M, N, K, x.stride(0), x.stride(1), w.stride(0), w.stride(1), out.stride(0),
                      out.stride(1), BM=config["BM"], BN=config["BN"], BK=config["BK"], RELU=relu, BUG=self.bug,
                      num_warps=config["num_warps"], num_stages=config["num_stages"])
            return out
        return run


def gen(node, graph, options, device):
    if device.kind != "cuda" or node.op != "fused" or node.attr("kind") != "gemm":
        return []
    return [TritonMM(node), TritonMM(node, bug=1)]
