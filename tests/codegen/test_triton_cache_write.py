"""The rotary group + KV cache write as one node (``passes/fuse_cache_write.py``,
``ir/cache_write.py``) and its Triton kernel, under ``TRITON_INTERPRET=1`` against
the node's torch reference (``BRAZE_TEST_DEVICE=cuda``: compiled on a GPU)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from braze.autotune.space import device_info
from braze.ir import Builder, get_op, interpret, parse_graph, print_graph, verify
from braze.ir.fused import fuse_groups
from braze.passes.context import PassContext
from braze.passes.fuse_cache_write import fuse_cache_write

BIG = 9223372036854775807


def _layer(B, Hq, Hk, S, L, D, dtype, q_read_early=False):
    """rotate_half rotary over q and k heads in one pointwise group, then the K/V write."""
    b = Builder()
    x = b.input("x", (B, Hq + Hk, S, D), dtype)
    cos = b.input("cos", (1, 1, S, D), dtype)
    sin = b.input("sin", (1, 1, S, D), dtype)
    kc = b.input("kc", (B, Hk, L, D), dtype)
    vc = b.input("vc", (B, Hk, L, D), dtype)
    idx = b.input("idx", (S,), torch.int64)
    v = b.input("v", (B, Hk, S, D), dtype)
    half = D // 2
    hi, lo = b.call("slice", x, 3, half, BIG, overload="Tensor"), b.call("slice", x, 3, 0, half, overload="Tensor")
    rot = b.call("cat", [b.call("neg", hi), lo], -1)
    y = b.call("add", b.call("mul", x, cos, overload="Tensor"), b.call("mul", rot, sin, overload="Tensor"),
               overload="Tensor")
    q = b.call("slice", y, 1, 0, Hq, overload="Tensor")
    k = b.call("slice", y, 1, Hq, BIG, overload="Tensor")
    early = b.call("mul", q, 2.0, overload="Tensor") if q_read_early else None
    kc2, vc2 = b.call("index_copy_many_", (kc, vc), 2, idx, (k, v))
    late = b.call("mul", q, 3.0, overload="Tensor")
    g = b.graph([kc2, vc2, late] + ([early] if early is not None else []))
    rope = [n for n in g.compute_nodes if n.op in ("neg", "cat", "mul", "add") and n.types[0].shape[1] == Hq + Hk]
    return fuse_groups(g, [(rope, "pointwise")])


def _feed(g, B, Hq, Hk, S, L, D, dtype, rows):
    t = {"x": torch.randn(B, S, Hq + Hk, D).to(dtype).transpose(1, 2),      # a permuted view, as after the GEMM
         "cos": torch.randn(1, 1, S, D).to(dtype), "sin": torch.randn(1, 1, S, D).to(dtype),
         "kc": torch.randn(B, Hk, L, D).to(dtype), "vc": torch.randn(B, Hk, L, D).to(dtype),
         "idx": torch.tensor(rows), "v": torch.randn(B, S, Hk, D).to(dtype).transpose(1, 2)}
    return [t[n.args[0]] for n in g.inputs]


ALL = PassContext(supports=lambda kind, sub: True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,S,rows", [(1, 1, [7]), (2, 3, [0, 9, 4])], ids=["decode", "prefill-ragged-rows"])
def test_one_node_one_kernel_equals_the_unfused_graph(dtype, B, S, rows, device):
    from braze.compiler.codegen.triton import generate

    Hq, Hk, L, D = 4, 2, 12, 16
    g = _layer(B, Hq, Hk, S, L, D, dtype)
    fg = fuse_cache_write(g, ALL)
    verify(fg, types=True)
    (node,) = [n for n in fg.compute_nodes if n.op == "cache_write_heads_"]
    assert not [n for n in fg.compute_nodes if n.op in ("index_copy_many_", "fused")]
    assert parse_graph(print_graph(fg)) is not None             # the report's IR reads back
    xs = _feed(g, B, Hq, Hk, S, L, D, dtype, rows)
    want = interpret(g, *[x.clone() for x in xs])
    got = interpret(fg, *[x.clone() for x in xs])
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w)
    # the Triton kernel of the node against its torch reference
    (kern,) = generate(node, fg, None, torch.device(device))
    cfg = kern.space.default_config(kern.problem({}), device_info(device))
    # the node's operands as the graph computes them (views of the inputs included)
    operands = [x.clone().to(device) for x in interpret(replace(fg, outputs=node.inputs), *xs)]
    ref = get_op("cache_write_heads_").ref(*_args(node, [x.clone().cpu() for x in operands]), heads=node.attr("heads"))
    out = kern.compile(cfg)(*operands)
    assert out[0] is operands[0] and out[1] is operands[1]     # the caches, written in place
    assert torch.equal(out[1].cpu(), ref[1])                     # the value rows: copied
    # the rotated rows and query heads: computed in fp32, rounded once (the reference rounds each op)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    for o, r in ((out[0], ref[0]), (out[2], ref[2])):
        torch.testing.assert_close(o.cpu().float(), r.float(), rtol=tol, atol=tol)
    untouched = [i for i in range(L) if i not in rows]
    assert torch.equal(out[0].cpu()[:, :, untouched], ref[0][:, :, untouched])


def _args(node, xs):
    """The node's positional arguments with its operand Values replaced by ``xs`` (in order)."""
    from braze.ir.graph import map_values

    it = iter(xs)
    return map_values(node.args, lambda v: next(it))


def test_declined_where_the_query_heads_are_read_before_the_write():
    g = _layer(1, 4, 2, 1, 8, 16, torch.float32, q_read_early=True)
    assert "cache_write_heads_" not in print_graph(fuse_cache_write(g, ALL))


def test_declined_when_no_generator_takes_it():
    g = _layer(1, 4, 2, 1, 8, 16, torch.float32)
    ctx = PassContext(supports=lambda kind, sub: kind != "cache_write")
    assert "cache_write_heads_" not in print_graph(fuse_cache_write(g, ctx))
    assert any(d.pass_name == "fuse_cache_write" for d in ctx.decisions)
