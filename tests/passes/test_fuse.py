"""Structural tests of fusion: this block in, exactly these groups out."""
from __future__ import annotations

import pytest
import torch

from tools import hf_models
from braze.compiler.backend import capture_graphs
from braze.config import Options
from braze.ir import Builder, interpret, verify
from braze.passes import PIPELINE, run_pipeline
from braze.passes.fuse import FuseConfig, fuse_graph

ANY = FuseConfig(lambda kind, sub: True)
VIEWS = {"reshape", "permute", "slice", "expand", "select", "split"}


def _prepared(family, batch=2, seq=8, **kw):
    model = hf_models.build(family, **kw)
    inp = hf_models.inputs(batch, seq)
    call = (lambda **a: model(**a)) if family == "bert" else (lambda **a: model(**a, use_cache=False))
    (g,) = capture_graphs(call, **inp)
    before_fuse = [p for p in PIPELINE if p.name not in ("fuse", "merge_parallel_groups", "eliminate_padding")]
    return run_pipeline(g, before_fuse, Options(verify_types=False)), model, inp


def _groups(g):
    """(kind, ops) of each fused node and the op of every other non-view node, in order."""
    out = []
    for n in g.compute_nodes:
        if n.op == "fused":
            out.append((n.attr("kind"), tuple(m.op for m in n.attr("graph").compute_nodes if m.op not in VIEWS)))
        elif n.op not in VIEWS:
            out.append(n.op)
    return out


RMSNORM = ("reduction", ("pow", "mean", "add", "rsqrt", "mul", "mul"))
ROTARY = ("pointwise", ("mul", "neg", "cat", "mul", "add"))


def test_llama_block_groups():
    g, model, inp = _prepared("llama", num_hidden_layers=1)
    fg = fuse_graph(g, ANY)
    verify(fg, types=True)
    groups = _groups(fg)
    layer = groups[groups.index(RMSNORM):]
    assert layer == [
        RMSNORM,                                                 # input_layernorm
        ("gemm", ("mm",)),                                       # q/k/v in one GEMM (horizontal)
        ROTARY, ROTARY,                                          # rotary on q and on k
        "attention",                                             # causal, GQA, padding mask operand
        ("gemm", ("mm", "add")),                                 # o_proj + residual
        RMSNORM,                                                 # post_attention_layernorm
        ("gemm", ("mm", "silu", "mul")),                         # gate/up GEMM + SiLU(g) * u
        ("gemm", ("mm", "add")),                                 # down_proj + residual
        RMSNORM,                                                 # final norm
        ("gemm", ("mm",)),                                       # lm_head: a GEMM alone is a group too
    ]
    # numerics: the fused graph (groups run by the reference interpreter) equals the unfused one
    x = [inp["input_ids"], inp["attention_mask"]][: len(g.inputs)]
    for a, b in zip(interpret(g, *x), interpret(fg, *x)):
        torch.testing.assert_close(a, b)


def test_decode_rows_fold_each_norm_into_the_gemm_that_reads_it():
    """One token: input_layernorm into the QKV GEMM, post_attention_layernorm into
    gate/up, the final norm into the LM head (row-scale prologues); the norms
    keep their own groups from PROLOGUE_MAX_ROWS + 1 rows on."""
    g, model, inp = _prepared("llama", batch=1, seq=1, num_hidden_layers=1, dtype=torch.bfloat16)
    fg = fuse_graph(g, ANY)
    verify(fg, types=True)
    groups = _groups(fg)
    norm = ("_to_copy",) + RMSNORM[1][:-1] + ("_to_copy", "mul")
    assert not any(k == "reduction" for k, *_ in [x for x in groups if isinstance(x, tuple)])
    gemms = [ops for kind, ops in (x for x in groups if isinstance(x, tuple)) if kind == "gemm"]
    assert gemms == [norm + ("mm",), ("mm", "add"), norm + ("mm", "silu", "mul"), ("mm", "add"), norm + ("mm",)]
    x = [inp["input_ids"], inp["attention_mask"]][: len(g.inputs)]
    for a, b in zip(interpret(g, *x), interpret(fg, *x)):
        torch.testing.assert_close(a, b)
    g5, _, _ = _prepared("llama", batch=1, seq=5, num_hidden_layers=1, dtype=torch.bfloat16)
    assert sum(x == ("reduction", norm) for x in _groups(fuse_graph(g5, ANY))) == 3


def test_a_norm_read_elsewhere_stays_its_own_group():
    b = Builder()
    h = b.input("h", (1, 32), torch.float32)
    g = b.input("g", (32,), torch.float32)
    w = b.input("w", (16, 32), torch.float32)
    r = b.call("rsqrt", b.call("add", b.call("mean", b.call("mul", h, h, overload="Tensor"), [-1], True,
                                                        overload="dim"), 1e-6, overload="Tensor"))
    x = b.call("mul", g, b.call("mul", h, r, overload="Tensor"), overload="Tensor")
    y = b.call("mm", x, b.call("permute", w, (1, 0)))
    fg = fuse_graph(b.graph([y, x]), ANY)
    assert _groups(fg) == [("gemm", ("mm",)), ("reduction", ("mul", "mean", "add", "rsqrt", "mul", "mul"))] or \
        _groups(fg) == [("reduction", ("mul", "mean", "add", "rsqrt", "mul", "mul")), ("gemm", ("mm",))]


def test_a_residual_gemm_writes_the_narrow_sum_and_the_norm_upcasts_it():
    """bf16 Llama: the norm's float32 upcast of the residual sum joins the norm's group;
    the GEMM + residual group would otherwise write (and the norm read) float32."""
    g, model, inp = _prepared("llama", num_hidden_layers=1, dtype=torch.bfloat16)
    fg = fuse_graph(g, ANY)
    verify(fg, types=True)
    groups = _groups(fg)
    upcast_norm = ("reduction", ("_to_copy",) + RMSNORM[1][:-1] + ("_to_copy", "mul"))
    assert groups.count(("gemm", ("mm", "add"))) == 2 and groups.count(upcast_norm) == 3
    for n in fg.compute_nodes:
        if n.op == "fused" and n.attr("kind") == "gemm":
            assert all(t.dtype == torch.bfloat16 for t in n.types), n
    x = [inp["input_ids"], inp["attention_mask"]][: len(g.inputs)]
    for a, b in zip(interpret(g, *x), interpret(fg, *x)):
        torch.testing.assert_close(a, b)


def test_rotary_on_q_and_k_becomes_one_group():
    from braze.passes.merge_parallel_groups import merge_parallel_groups

    g, model, inp = _prepared("llama", num_hidden_layers=1)
    fg = fuse_graph(g, ANY)
    mg = merge_parallel_groups(fg)
    verify(mg, types=True)
    groups = _groups(mg)
    assert groups.count(ROTARY) == 1 and _groups(fg).count(ROTARY) == 2
    fused = [n for n in mg.compute_nodes if n.op == "fused" and n.name.endswith("_x2")]
    assert fused and fused[0].type.shape[1] == 4 + 2  # query heads + key heads
    x = [inp["input_ids"], inp["attention_mask"]][: len(g.inputs)]
    for a, b in zip(interpret(g, *x), interpret(mg, *x)):
        torch.testing.assert_close(a, b)


def test_gpt2_block_groups():
    g, model, inp = _prepared("gpt2", n_layer=1)
    fg = fuse_graph(g, ANY)
    verify(fg, types=True)
    groups = _groups(fg)
    ln = ("reduction", ("var_mean", "add", "rsqrt", "sub", "mul", "mul", "add"))
    start = next(i for i, x in enumerate(groups) if isinstance(x, tuple) and x[0] == "reduction")
    assert groups[start:] == [
        ("reduction", ("add",) + ln[1]),                         # wte + wpe, ln_1
        ("gemm", ("addmm",)),                                    # c_attn (already one GEMM in GPT-2)
        "attention",
        ("gemm", ("addmm", "add")),                              # c_proj + residual
        ln,                                                      # ln_2
        ("gemm", ("addmm", "mul", "pow", "mul", "add", "mul", "tanh", "add", "mul")),  # c_fc + NewGELU
        ("gemm", ("addmm", "add")),                              # mlp c_proj + residual
        ln,                                                      # ln_f
        ("gemm", ("mm",)),                                       # lm_head
    ]


def test_declined_groups_are_not_formed():
    g, *_ = _prepared("llama", num_hidden_layers=1)
    fg = fuse_graph(g, FuseConfig(lambda kind, sub: kind != "gemm"))
    kinds = [n.attr("kind") for n in fg.compute_nodes if n.op == "fused"]
    assert "gemm" not in kinds and "reduction" in kinds
    # a checker that takes nothing leaves the graph as it was
    assert fuse_graph(g, FuseConfig(lambda kind, sub: False)) is g


def test_groups_never_create_cycles():
    # a -> r (reduction) ; a -> b ; r -> c(b, r): fusing {a, c} without r would be a cycle
    b = Builder()
    x = b.input("x", (4, 16))
    a = b.call("exp", x)
    r = b.call("sum", a, (-1,), True, overload="dim_IntList")
    s = b.call("sigmoid", a)
    c = b.call("mul", s, r, overload="Tensor")
    g = b.graph([c])
    fg = fuse_graph(g, ANY)
    verify(fg, types=True)
    xin = torch.randn(4, 16)
    torch.testing.assert_close(interpret(fg, xin)[0], interpret(g, xin)[0])
    assert sum(1 for n in fg.compute_nodes if n.op == "fused") == 1  # one reduction group takes all


def test_no_recompute_of_a_shared_intermediate():
    # e = exp(x) [64, 64] is read by two consumers of another domain: it stays materialised once
    b = Builder()
    x = b.input("x", (64, 64))
    e = b.call("exp", x)
    s1 = b.call("sum", e, (0,), overload="dim_IntList")   # not a last-dim reduction
    t = b.call("tanh", b.call("mul", e, 2.0, overload="Tensor"))
    g = b.graph([s1, t])
    fg = fuse_graph(g, ANY)
    fused = [n for n in fg.compute_nodes if n.op == "fused"]
    assert len(fused) == 1 and [m.op for m in fused[0].attr("graph").compute_nodes] == ["exp", "mul", "tanh"]
    assert len(fused[0].types) == 2  # exp's value is an output, not recomputed by sum's reader
