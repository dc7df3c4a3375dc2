"""What a pass may know of the world beyond its graph.

A pass is ``fn(graph, ctx) -> graph``. ``ctx`` is a :class:`PassContext`:

- ``options``: the compile options (``braze.Options`` fields: ``fuse``,
  ``backend``, ``strict``, ``disable``, ...);
- ``device``: the device the graph runs on ("cpu", "cuda:0");
- ``supports(kind, subgraph) -> bool``: whether some backend the options
  allow can generate a kernel for a group of that kind (the driver wires
  the code generators' checkers in here; passes never import a backend);
- ``decisions``: where a pass records a rule it declined and why
  (:class:`Decline`); the driver puts them in the report, and
  ``braze.explain`` shows them.

Passes are also called on their own (tests, tools) with ``None`` or an
options object: :meth:`PassContext.of` turns either into a context with
permissive defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from braze.ir import Graph
from braze.ir.decline import Decline


@dataclass
class _DefaultOptions:
    fuse: bool = True
    backend: str = "auto"
    strict: bool = False
    disable: tuple = ()


def _accept_all(kind: str, subgraph: Graph) -> bool:
    return True


@dataclass
class PassContext:
    options: Any = field(default_factory=_DefaultOptions)
    device: str = "cpu"
    supports: Callable[[str, Graph], bool] = _accept_all
    decisions: list[Decline] = field(default_factory=list)

    @staticmethod
    def of(ctx: Any = None) -> "PassContext":
        """``ctx`` itself, or a default context around an options object (or none)."""
        if isinstance(ctx, PassContext):
            return ctx
        return PassContext(options=ctx if ctx is not None else _DefaultOptions())

    def option(self, name: str, default: Any = None) -> Any:
        return getattr(self.options, name, default)

    def decline(self, pass_name: str, rule: str, reason: str, graph: Optional[Graph] = None) -> None:
        self.decisions.append(Decline(pass_name, rule, reason, graph.name if graph is not None else ""))
