"""Local rewrites as data: a table of named rules, each a guard-and-build
function that returns ``None`` when the match does not apply.

A rule's name states its algebra, e.g. ``"permute(permute(x, p), q) -> permute(x, p[q])"``.
A rule that does not apply says why with a :class:`~braze.passes.context.Decline`
(``None`` when its pattern is simply absent): one mechanism for every pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from braze.ir import Graph, Node, Value, rewrite
from braze.ir.builder import Builder
from braze.passes.context import Decline, PassContext


@dataclass(frozen=True)
class Rule:
    name: str
    ops: frozenset[str]
    fn: Callable[[Node, Builder], Optional[Sequence[Value]]]

    @staticmethod
    def of(name: str, ops: Iterable[str] | str, fn) -> "Rule":
        return Rule(name, frozenset([ops] if isinstance(ops, str) else ops), fn)


def apply_rules(graph: Graph, rules: Sequence[Rule], fired: Optional[dict[str, int]] = None,
                ctx: Optional[PassContext] = None, pass_name: str = "") -> Graph:
    """One topological sweep; the first rule that applies to a node wins.

    Operands are rewritten before their users, so chains collapse in one
    sweep (``reshape(reshape(x))`` sees the already rewritten inner node).
    A rule returns the replacement values, ``None`` when its pattern is not
    there, or a :class:`Decline` when the pattern is there but its guard
    says no (recorded in ``ctx``, shown by ``braze.explain``); the next rule
    is then tried.
    """
    by_op: dict[str, list[Rule]] = {}
    for r in rules:
        for op in r.ops:
            by_op.setdefault(op, []).append(r)

    def visit(n: Node, b: Builder):
        for r in by_op.get(n.op, ()):
            out = r.fn(n, b)
            if isinstance(out, Decline):
                if ctx is not None:
                    ctx.decline(pass_name or out.pass_name, f"{r.name} at {n.name or n.op}", out.reason, graph)
                continue
            if out is not None:
                if fired is not None:
                    fired[r.name] = fired.get(r.name, 0) + 1
                return out
        return None

    return rewrite(graph, visit)
