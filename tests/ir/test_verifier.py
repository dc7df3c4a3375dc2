"""The verifier rejects each kind of malformed graph with a message naming it."""
from dataclasses import replace

import pytest
import torch

from braze.ir import Builder, Graph, Node, TensorType, VerificationError, sym, verify


def _good():
    b = Builder()
    x = b.input("x", (4, 8))
    w = b.constant(torch.randn(8, 3), "w")
    y = b.call("mm", x, w)
    z = b.call("relu", y)
    return b.graph([z], name="g"), x, y, z


def test_good_graph_verifies():
    g, *_ = _good()
    assert verify(g, types=True) is g


def test_unknown_op():
    g, x, y, z = _good()
    bad = Node("frobnicate", (x,), types=(x.type,), name="bad")
    with pytest.raises(VerificationError, match="unknown op 'frobnicate'"):
        verify(g.with_nodes(g.nodes + (bad,)))


def test_dangling_value():
    g, x, y, z = _good()
    stray = Node("neg", (x,), types=(x.type,), name="stray")
    user = Node("relu", (stray.out(),), types=(x.type,), name="user")
    with pytest.raises(VerificationError, match="dangling"):
        verify(g.with_nodes(g.nodes + (user,), outputs=[user.out()]))


def test_use_before_definition_and_cycle():
    g, x, y, z = _good()
    nodes = list(g.nodes)
    nodes[-1], nodes[-2] = nodes[-2], nodes[-1]  # relu before mm
    with pytest.raises(VerificationError, match="used before it is defined"):
        verify(g.with_nodes(nodes))
    # a true cycle: a -> b -> a, built by patching the frozen nodes
    a = Node("neg", (x,), types=(x.type,), name="a")
    c = Node("neg", (a.out(),), types=(x.type,), name="c")
    object.__setattr__(a, "args", (c.out(),))
    with pytest.raises(VerificationError, match="used before it is defined|cycle"):
        verify(g.with_nodes(g.nodes + (a, c), outputs=[c.out()]))


def test_declared_type_disagrees_with_rule():
    g, x, y, z = _good()
    wrong = replace(z.node, types=(TensorType((4, 5), torch.float32),))
    with pytest.raises(VerificationError, match=r"declares shape \['4', '5'\]|declares shape"):
        verify(g.with_nodes(g.nodes[:-1] + (wrong,), outputs=[wrong.out()]), types=True)
    wrong_dtype = replace(z.node, types=(TensorType((4, 3), torch.float16),))
    with pytest.raises(VerificationError, match="dtype"):
        verify(g.with_nodes(g.nodes[:-1] + (wrong_dtype,), outputs=[wrong_dtype.out()]), types=True)


def test_operands_that_do_not_type_check():
    b = Builder()
    x = b.input("x", (4, 8))
    y = b.input("y", (5, 8))
    bad = b.append(Node("add", (x, y), types=(x.type,), overload="Tensor", name="add"))
    with pytest.raises(VerificationError, match="do not type-check"):
        verify(b.graph([bad.out()]), types=True)


def test_missing_and_mismatched_constant():
    g, *_ = _good()
    with pytest.raises(VerificationError, match="no tensor in graph.constants"):
        verify(replace(g, constants={}))
    with pytest.raises(VerificationError, match="is f32\\[2\\] but the node declares"):
        verify(replace(g, constants={"w": torch.randn(2)}))


def test_unbound_symbol():
    b = Builder()
    x = b.input("x", ("s0", 8))
    y = b.call("neg", x)
    g = b.graph([y])
    bad = Node("reshape", (y, (sym("s1"), 8)), types=(TensorType((sym("s1"), 8), torch.float32),), name="r")
    with pytest.raises(VerificationError, match=r"symbols \['s1'\] are bound by no input"):
        verify(g.with_nodes(g.nodes + (bad,), outputs=[bad.out()]))


def test_output_index_out_of_range_and_foreign_output():
    g, x, y, z = _good()
    with pytest.raises(VerificationError, match="has 1 outputs"):
        user = Node("neg", (replace(z, index=1),), types=(z.type,), name="u")
        verify(g.with_nodes(g.nodes + (user,), outputs=[user.out()]))
    foreign = Node("neg", (x,), types=(x.type,))
    with pytest.raises(VerificationError, match="outside the graph"):
        verify(g.with_nodes(g.nodes, outputs=[foreign.out()]))


def test_input_not_listed():
    g, *_ = _good()
    with pytest.raises(VerificationError, match="not in the input list"):
        verify(Graph(g.nodes, (), g.outputs, g.constants))
