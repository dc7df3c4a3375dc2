"""Horizontal fusion of parallel pointwise groups over adjacent head slices.

After Q/K/V become one GEMM, the rotary embedding runs twice: once on the
query heads and once on the key heads, both views of the same GEMM output:

    q = permute(reshape(slice(y, -1, 0, Nq), [B, S, Hq, D]), p)
    k = permute(reshape(slice(y, -1, Nq, Nq + Nk), [B, S, Hk, D]), p)
    rope(q, cos, sin), rope(k, cos, sin)

Two ``fused`` pointwise groups with the same ops, reading the same shared
operands (cos, sin) and, for the rest, such head views of adjacent slices
of one tensor, become one group over ``Hq + Hk`` heads

    qk = rope(permute(reshape(slice(y, -1, 0, Nq + Nk), [B, S, Hq + Hk, D]), p), cos, sin)
    q', k' = slice(qk, h, 0, Hq), slice(qk, h, Hq, Hq + Hk)

which is exact: splitting the last dimension into (heads, D) keeps the
first Hq heads from the first slice and the next Hk from the second, and
the group's ops act on each head alike (its other operands do not have a
head dimension: they broadcast over it). One launch instead of two.
"""
from __future__ import annotations

from typing import Optional

from braze.ir import Graph, Node, Value, rewrite, sym
from braze.ir.builder import Builder
from braze.ir.graph import map_values
from braze.ir.infer import infer_types
from braze.ir.types import TensorType, dim_mul, dims_equal


def _head_view(v: Value) -> Optional[tuple]:
    """(root, start, end, heads, head_dim_pos, chain) for
    ``[slice(d)] permute(reshape(slice(root, -1, a, b), [..., H, D]), p)`` views."""
    chain: list[Node] = []
    n = v.node
    while n.op in ("permute", "slice"):
        chain.append(n)
        n = n.args[0].node
    if n.op != "reshape":
        return None
    reshape = n
    src = reshape.args[0]
    if src.node.op != "slice":
        return None
    root_slice = src.node
    root, dim, a, b = root_slice.args[0], root_slice.args[1], root_slice.args[2], root_slice.args[3]
    rank = root.type.rank
    if dim % rank != rank - 1 or not isinstance(a, int) or not isinstance(b, int):
        return None
    shape = reshape.type.shape
    in_shape = src.type.shape
    # [lead..., N] -> [lead'..., H, D]: N = H * D, the leading dims only regrouped
    if len(shape) < 2 or not dims_equal(dim_mul(shape[-2], shape[-1]), in_shape[-1]):
        return None
    if not dims_equal(_prod(shape[:-2]), _prod(in_shape[:-1])):
        return None
    heads_pos = len(shape) - 2
    pos = heads_pos
    for c in reversed(chain):
        if c.op == "permute":
            pos = list(c.args[1]).index(pos)
        elif c.op == "slice" and c.args[1] % c.type.rank == pos:
            return None  # slicing across heads: not head-uniform
    return root, a, b, shape[heads_pos], pos, (reshape, list(reversed(chain)))


def _prod(dims):
    out = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def _same_chain(c1: list, c2: list) -> bool:
    if len(c1) != len(c2):
        return False
    for x, y in zip(c1, c2):
        if x.op != y.op or x.args[1:] != y.args[1:] or x.kwargs != y.kwargs:
            return False
    return True


def _pairable(f1: Node, f2: Node) -> Optional[list]:
    """Per operand: None when shared, else (view1, view2) — or None if not mergeable."""
    if f1.attr("kind") != "pointwise" or f2.attr("kind") != "pointwise":
        return None
    s1, s2 = f1.attr("graph"), f2.attr("graph")
    if [(n.op, n.args if not n.inputs else None) for n in s1.compute_nodes] != \
            [(n.op, n.args if not n.inputs else None) for n in s2.compute_nodes]:
        return None
    if len(f1.inputs) != len(f2.inputs) or len(f1.types) != len(f2.types):
        return None
    pairs: list = []
    hpos = None
    for v1, v2 in zip(f1.inputs, f2.inputs):
        if v1 == v2:
            pairs.append(None)
            continue
        h1, h2 = _head_view(v1), _head_view(v2)
        if h1 is None or h2 is None or h1[0] != h2[0] or h1[2] != h2[1] or h1[4] != h2[4]:
            return None
        if not _same_chain(h1[5][1], h2[5][1]):
            return None
        if hpos is not None and hpos != h1[4]:
            return None
        hpos = h1[4]
        pairs.append((h1, h2))
    if hpos is None:
        return None
    return [hpos] + pairs


def _merged_view(b: Builder, h1, h2) -> Value:
    root, a, _, H1, _, (reshape, chain) = h1
    _, _, end, H2, _, _ = h2
    sl = b.call("slice", root, -1, a, end, overload="Tensor")
    heads = sym(f"({H1}) + ({H2})") if not (isinstance(H1, int) and isinstance(H2, int)) else H1 + H2
    # NOTE: edit the reshape's own shape argument (it may hold -1 for a run-time
    # dim such as the packed token count), never rebuild it from the type.
    arg = list(reshape.args[1])
    arg[len(arg) - 2] = heads
    shape = list(reshape.type.shape)
    shape[-2] = heads
    v = b.append(Node("reshape", (sl, tuple(arg)), (), (reshape.type.with_shape(shape),), "default",
                      reshape.name)).out()
    for c in chain:
        v = b.call(c.op, v, *c.args[1:], overload=c.overload, **dict(c.kwargs))
    return v


def _retype(sub: Graph, new_inputs: list[TensorType]) -> Optional[Graph]:
    """The subgraph with new input types, its node types re-derived."""
    env: dict[Value, Value] = {}
    nodes: list[Node] = []
    ins: list[Node] = []
    for p, t in zip(sub.inputs, new_inputs):
        n = Node("input", p.args, types=(t,), name=p.name)
        ins.append(n)
        nodes.append(n)
        env[p.out()] = n.out()
    for m in sub.compute_nodes:
        args = map_values(m.args, env.__getitem__)
        kwargs = map_values(m.kwargs, env.__getitem__)
        types = infer_types(m.op, args, kwargs, m.overload)
        n = Node(m.op, args, kwargs, types, m.overload, m.name)
        nodes.append(n)
        for i in range(len(types)):
            env[m.out(i)] = n.out(i)
    return Graph(tuple(nodes), tuple(ins), tuple(env[v] for v in sub.outputs), {}, (), sub.name)


def _depends(later: Node, earlier: Node) -> bool:
    """Whether ``later`` reads, directly or not, an output of ``earlier``."""
    stack, seen = [v.node for v in later.inputs], set()
    while stack:
        n = stack.pop()
        if n is earlier:
            return True
        if n in seen:
            continue
        seen.add(n)
        stack.extend(v.node for v in n.inputs)
    return False


def merge_parallel_groups(graph: Graph, ctx=None) -> Graph:
    fused = [n for n in graph.compute_nodes if n.op == "fused" and n.attr("kind") == "pointwise"]
    plans: dict[Node, tuple] = {}
    taken: set = set()
    for i, f1 in enumerate(fused):
        if f1 in taken:
            continue
        for f2 in fused[i + 1:]:
            if f2 in taken:
                continue
            p = _pairable(f1, f2)
            if p is not None and not _depends(f2, f1):
                plans[f1] = (f2, p)
                taken |= {f1, f2}
                break
    if not plans:
        return graph
    done: dict[Node, tuple] = {}

    def rule(n: Node, b: Builder):
        orig = b.current
        if orig in done:
            return done[orig]
        if orig not in plans:
            return None
        f2, (hpos, *pairs) = plans[orig]
        # NOTE: re-read the head views from the remapped operands: the root
        # tensor may have been rebuilt upstream by this very rewrite.
        operands = [v if p is None else _merged_view(b, _head_view(v), p[1]) for v, p in zip(n.inputs, pairs)]
        sub = _retype(orig.attr("graph"), [v.type for v in operands])
        node = b.append(Node("fused", tuple(operands), (("graph", sub), ("kind", "pointwise"),
                                                         ("name", sub.name + "_x2")),
                             tuple(v.type for v in sub.outputs), name=sub.name + "_x2"))
        outs1, outs2 = [], []
        for i, (t1, t2) in enumerate(zip(orig.types, f2.types)):
            h1, h2 = t1.shape[hpos], t2.shape[hpos]
            if not dims_equal(node.types[i].shape[hpos], sym(f"({h1}) + ({h2})") if not (
                    isinstance(h1, int) and isinstance(h2, int)) else h1 + h2):
                raise ValueError("merged group's outputs are not head-concatenated")
            out = node.out(i)
            outs1.append(b.call("slice", out, hpos, 0, h1, overload="Tensor"))
            outs2.append(b.call("slice", out, hpos, h1, sym(f"({h1}) + ({h2})") if not (
                isinstance(h1, int) and isinstance(h2, int)) else h1 + h2, overload="Tensor"))
        done[f2] = tuple(outs2)
        return tuple(outs1)

    return rewrite(graph, rule)
