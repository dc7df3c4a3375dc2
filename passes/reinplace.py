"""Write scatters in place: a KV-cache update touches only its new rows.

Capture functionalises every in-place op, so the pipeline sees a functional
graph and ``Graph.writes`` lists the inputs the caller expects changed. This
last pass turns a scatter (``index_copy``, ``index_put``, ``slice_scatter``,
``select_scatter``) into its in-place form (``ir/inplace_ops.py``) where
nothing can tell the difference:

- ``scatter(input, ...)`` where the caller's input is written back and the
  scatter is its only reader: the update writes the caller's buffer, only
  the rows it names (the functional form copies the whole cache first);
- ``scatter(fresh, ...)`` where ``fresh`` comes from a creation op (the zeros
  of a cache built inside a prefill graph) or from an earlier in-place write,
  and nothing else reads it nor returns it;
- ``add/sub/mul/div(input, y)`` written back to that input and read by no
  one else, once every other reader of the input has run and none keeps a
  view of it (HF's cache step counter: ``cache_position = arange + n``
  first, then ``n += 1``, as the program's last node).

Every other scatter stays functional: a copy, never a wrong read.
"""
from __future__ import annotations

from braze.ir import Category, Graph, get_op, rewrite
from braze.ir.inplace_ops import INPLACE_OF, POINTWISE_INPLACE_OF


def reinplace(graph: Graph, ctx=None) -> Graph:
    written = {graph.inputs[i].out() for i, _ in graph.writes}
    write_back = {graph.outputs[j]: graph.inputs[i].out() for i, j in graph.writes}
    users = graph.value_users()
    order = {n: k for k, n in enumerate(graph.nodes)}
    outputs = set(graph.outputs)
    reinplaced: set = set()

    def fresh(v) -> bool:
        op = get_op(v.node.op)
        return op.category == Category.CREATION or v.node in reinplaced

    def read_before(base, node) -> bool:
        """Every other reader of ``base`` runs before ``node`` and keeps no alias of it."""
        return all(u is node or (order[u] < order[node] and get_op(u.op).category != Category.VIEW
                                 and get_op(u.op).writes is None) for u in users.get(base, ()))

    def rule(n, b):
        orig = b.current
        target = INPLACE_OF.get(n.op)
        if target is None:
            # NOTE: a step counter (cl = cl + 1, written back) is updated in place once every
            # earlier reader (cache_position = arange + cl) has run: no copy at the end.
            target = POINTWISE_INPLACE_OF.get(n.op)
            if target is None or write_back.get(orig.out()) != orig.args[0]:
                return None
            if orig.types[0] != orig.args[0].type or users.get(orig.out()) or not read_before(orig.args[0], orig):
                return None
            node = b.append(n.__class__(target, n.args, n.kwargs, n.types, overload=n.overload, name=n.name))
            reinplaced.add(orig)
            return node.outputs
        base = orig.args[0]
        if len(users.get(base, ())) != 1 or base in outputs:
            return None
        if base not in written and not fresh(base):
            return None
        node = b.append(n.__class__(target, n.args, n.kwargs, n.types, overload=_overload(target, n.overload),
                                    name=n.name))
        reinplaced.add(orig)
        return node.outputs

    out = rewrite(graph, rule)
    # NOTE: a counter written in place moves to the end of the program: a step that
    # fails midway (a full cache) then leaves it as it was, like every other write-back.
    last = [n for n in out.nodes if n.op in POINTWISE_INPLACE_OF.values()]
    if not last:
        return out
    return out.with_nodes([n for n in out.nodes if n not in set(last)] + last)


def _overload(target: str, overload: str) -> str:
    # index_put_ has no "default" overload of its functional form's name in every release.
    packet = get_op(target).packet
    if packet is None:
        return ""
    return overload if overload in packet.overloads() else packet.overloads()[0]
