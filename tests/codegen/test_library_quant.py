"""ATen's integer-weight CPU GEMMs as ``quant_linear`` candidates
(``codegen/library_quant.py``): each format and dtype against the float64
reference, the int4 packing made once per weight (and again after an in-place
write), what the generator declines. A quantized model compiled with them:
tests/compiler/test_quantize.py."""
from __future__ import annotations

import pytest
import torch

import braze
from braze.autotune.space import DeviceInfo
from braze.compiler.codegen import library_quant as lq
from braze.compiler.quantize import quantize_weight
from braze.ir import Builder
from braze.ir.quant import quant_linear_reference

CPU = DeviceInfo("cpu", "test cpu", (0, 0), 2)
H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448, 65536, 50 * 2 ** 20)
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def _node(bits, n, k, group=0, bias=False, dtype=torch.float32, weight=None, const=True):
    q, s, z = weight if weight is not None else quantize_weight(torch.randn(n, k), bits, group or 128)
    s = s.to(dtype)
    z = z.to(dtype) if z is not None else None
    b = Builder()
    x = b.input("x", ("m", k), dtype)
    make = b.constant if const else (lambda t, name: b.input(name, tuple(t.shape), t.dtype))
    ops = [make(q, "q"), make(s, "s"), make(z, "z") if z is not None else None,
           b.input("bias", (n,), dtype) if bias else None]
    out = b.call("quant_linear", x, *ops, bits=bits, group_size=group)
    g = b.graph([out], name="ql")
    return g.compute_nodes[-1], g, (q, s, z)


def _rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bits,group", [(8, 0), (4, 32), (4, 64)])
@pytest.mark.parametrize("m,bias", [(1, False), (5, True), (33, False)])
def test_candidate_matches_the_reference(bits, group, dtype, m, bias):
    n, k = 48, 128
    node, g, (q, s, z) = _node(bits, n, k, group, bias, dtype)
    cands = lq.generate(node, g, braze.Options(), CPU)
    if not lq.available(bits):     # a torch without ATen's kernel for the format: the reference runs
        assert cands == []
        return
    (cand,) = cands
    x = torch.randn(m, k, dtype=dtype)
    bvec = torch.randn(n, dtype=dtype) if bias else None
    ref = quant_linear_reference(x.double(), q, s.double(), z.double() if z is not None else None,
                                 bvec.double() if bias else None, bits=bits, group_size=group)
    out = cand.compile({})(x, q, s, *([z] if z is not None else []), *([bvec] if bias else []))
    assert out.dtype == dtype and out.shape == (m, n)
    assert _rel(out, ref) < TOL[dtype], _rel(out, ref)


def test_int4_is_packed_once_and_again_after_an_in_place_write():
    node, g, (q, s, z) = _node(4, 32, 64, 32)
    cands = lq.generate(node, g, braze.Options(), CPU)
    if not lq.available(4):        # nothing to pack: the reference runs
        assert cands == []
        return
    fn = cands[0].compile({})
    x = torch.randn(3, 64)
    before = len(lq._PACKED)
    first = fn(x, q, s, z)
    torch.testing.assert_close(fn(x, q, s, z), first)
    assert len(lq._PACKED) == before + 1
    with torch.no_grad():
        s.mul_(2)                      # a scale written in place: the packing reads it again
    torch.testing.assert_close(fn(x, q, s, z), 2 * first, rtol=1e-5, atol=1e-5)
    assert len(lq._PACKED) == before + 2


def test_declines_what_it_cannot_run():
    node, g, _ = _node(8, 16, 64)
    assert lq.generate(node, g, braze.Options(), H100) == []          # the GPU has the Triton kernels
    node, g, _ = _node(4, 16, 64, 32, const=False)
    assert lq.generate(node, g, braze.Options(), CPU) == []           # an activation weight: packed every call
    node, g, _ = _node(8, 16, 64, dtype=torch.float64)
    assert lq.generate(node, g, braze.Options(), CPU) == []           # ATen's kernels take 16/32-bit floats
