import pytest
import torch

from braze.ir import Builder, Sym, TensorType, parse_graph, parse_type, print_graph, sym, verify
from braze.ir.types import dims_equal


def test_sym_canonical_and_eval():
    assert sym("s0*2") == sym("2*s0") == Sym("2*s0")
    assert sym("4") == 4 and isinstance(sym("4"), int)
    assert sym("s0//2").eval({"s0": 7}) == 3
    assert sym("Max(1, s0)").eval({"s0": 5}) == 5
    assert dims_equal(sym("s0*s1"), sym("s1*s0"))
    with pytest.raises(KeyError, match="s1"):
        sym("s0+s1").eval({"s0": 1})


def test_tensor_type_rejects_bad_dims():
    with pytest.raises(TypeError):
        TensorType((2, 3.0), torch.float32)
    with pytest.raises(TypeError):
        TensorType((2,), "float32")


@pytest.mark.parametrize("text", ["f32[2, s0]", "bf16[]", "i64[s0*s1, 4]@cuda:0", "b8[1]"])
def test_type_roundtrip(text):
    from braze.ir import format_type

    assert format_type(parse_type(text)) == text


def _sample_graph():
    b = Builder()
    x = b.input("x", ("s0", 8))
    m = b.input("mask", ("s0", 8), torch.bool)
    w = b.constant(torch.randn(8), "layer.weight")
    y = b.call("mul", x, w, overload="Tensor")
    v, mean = b.call("var_mean", y, (-1,), overload="correction", correction=0, keepdim=True)
    z = b.call("masked_fill", y, m, float("-inf"), overload="Scalar")
    r = b.call("reshape", z, (sym("2*s0"), 4))
    c = b.call("_to_copy", r, dtype=torch.bfloat16)
    s = b.call("slice", y, 1, 0, 4, overload="Tensor")
    return b.graph([c, v, mean, s], name="sample")


def test_printer_parser_roundtrip():
    g = _sample_graph()
    text = print_graph(g)
    g2 = parse_graph(text, g.constants)
    verify(g2, types=True)
    assert print_graph(g2) == text
    assert "%mask: b8[s0, 8]" in text and "float('-inf')" in text and "torch.bfloat16" in text


def test_roundtrip_of_nested_subgraph():
    g = _sample_graph()
    b = Builder(g.constants)
    x = b.input("x", ("s0", 8))
    m = b.input("mask", ("s0", 8), torch.bool)
    outs = b.call("fused", x, m, graph=g, kind="test")
    outer = b.graph(list(outs), name="outer")
    verify(outer, types=True)
    text = print_graph(outer)
    assert "graph=@sample" in text and "graph sample(" in text
    again = parse_graph(text, g.constants)
    assert print_graph(again) == text


def test_parse_errors_name_the_problem():
    from braze.ir import ParseError

    with pytest.raises(ParseError, match="used before it is defined"):
        parse_graph("graph g(%x: f32[2]) {\n  %y = neg.default(%z) : f32[2]\n  return %y\n}")
    with pytest.raises(ParseError, match="unknown dtype"):
        parse_type("q7[2]")
    with pytest.raises(ParseError, match="missing closing"):
        parse_graph("graph g(%x: f32[2]) {\n  return %x\n")


def test_dot_export_and_topological_order():
    from braze.ir import to_dot, topological_order

    g = _sample_graph()
    order = topological_order(g)
    pos = {n: i for i, n in enumerate(order)}
    for n in g.nodes:
        for v in n.inputs:
            assert pos[v.node] < pos[n]
    dot = to_dot(g)
    assert dot.startswith('digraph "sample"') and dot.count("->") == sum(len(n.inputs) for n in g.nodes)
