"""The kernel contract: what code generators, the selector and the tuner share.

- ``Kernel``: one candidate implementation of a node (name, backend, search
  space, source; ``key()``, ``problem(env)``, ``compile(config)``);
- ``LibraryKernel``: the library call, the node's ops through torch (cuBLAS,
  MKL, SDPA as ATen runs them), the last candidate of every node;
- ``Choice``: the candidate and config picked for a shape bucket, and why;
- the generator registry: ``register_generator(name, fn)``, where
  ``fn(node, graph, options, device) -> [Kernel]`` declines with ``[]``, or
  with a ``Decline`` (``ir/decline.py``) that says why (shown in the report);
- ``structural_key`` / ``node_graph`` / ``canonical_ir``: the identity of a
  kernel in the tuning database, the same across processes and layers.

NOTE: this module imports the IR and the search-space data only. Code
generators (``compiler/codegen``), the selector and the tuner (``autotune``)
import it; it imports none of them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from braze.autotune.space import EMPTY, Config, Space, pow2_bucket
from braze.ir import Graph, Node, Value, get_op, print_graph
from braze.ir.graph import has_syms, map_values
from braze.ir.interpreter import MAX_VIEW_CHAIN, interpret, is_strided_view
from braze.ir.registry import REGISTRY
from braze.ir.types import DTYPE_NAMES


class Kernel(Protocol):
    """One candidate implementation of a node.

    name:    readable, after what it fuses ("triton_reduction_add_rmsnorm")
    backend: "triton" | "tvm" | "library"
    space:   the tunable knobs (``EMPTY`` when there are none)
    source:  generated source text ("" for the library candidate)
    """

    name: str
    backend: str
    space: Space
    source: str

    def key(self) -> str:
        """Structural hash identifying the kernel (not its config) in the tuning database."""

    def problem(self, env: Mapping[str, int]) -> dict:
        """The shape bucket and dtypes for one binding of the symbols."""

    def compile(self, config: Config) -> Callable[..., Any]:
        """A callable ``(*operand tensors) -> tensor | tuple`` for this config, any shape."""

    # Optional: ``bind_env(fn, env) -> callable``, the compiled ``fn`` given what one
    # binding of the symbols says and the operands cannot (e.g. a bound on packed
    # sequence lengths); see ``at_env``.


def at_env(kernel, fn: Callable[..., Any], env: Mapping[str, int]) -> Callable[..., Any]:
    """``fn`` (compiled from ``kernel``) for the symbol values ``env``."""
    hook = getattr(kernel, "bind_env", None)
    return fn if hook is None else hook(fn, env)


def node_graph(node: Node, name: str = "kernel", views: bool = False) -> Graph:
    """A graph whose only compute node is ``node``, its operands as inputs.

    ``views``: an operand that is a view of another value (``is_strided_view``, up to
    MAX_VIEW_CHAIN deep: a weight's ``permute``, a slice of a GEMM's output) comes with
    its views, their first operand an input: a process rebuilding the node from this
    graph (a tuning worker) draws operands with the strides they have at run time."""
    env: dict[Value, Value] = {}
    inputs: list[Node] = []
    body: list[Node] = []

    def operand(v: Value, i: int, depth: int = 0) -> Value:
        if v in env:
            return env[v]
        n = v.node
        if views and depth < MAX_VIEW_CHAIN and is_strided_view(n):
            base = operand(n.args[0], i, depth + 1)
            view = Node(n.op, (base,) + tuple(n.args[1:]), n.kwargs, n.types, n.overload, n.name)
            body.append(view)
            env[v] = view.out()
        else:
            name = f"a{i}" if depth == 0 else f"a{i}_{depth}"
            inp = Node("input", (name,), types=(v.type,), name=name)
            inputs.append(inp)
            env[v] = inp.out()
        return env[v]

    for i, v in enumerate(node.inputs):
        operand(v, i)
    n2 = Node(node.op, map_values(node.args, env.__getitem__), map_values(node.kwargs, env.__getitem__), node.types,
              node.overload, node.name)
    return Graph(tuple(inputs) + tuple(body) + (n2,), tuple(inputs), n2.outputs, {}, (), name)


def canonical_ir(text: str) -> str:
    """IR text with value and graph names replaced by their order of first
    appearance (%v0, %v1, @g0 ...): two nodes that differ only in names
    (layer 3's ``mm_11`` and layer 4's ``mm_14``) get the same text."""
    names: dict[str, str] = {}

    def sub(m):
        sigil, name = m.group(1), m.group(2)
        key = sigil + name
        if key not in names:
            names[key] = f"{sigil}{'v' if sigil == '%' else 'g'}{sum(k[0] == sigil for k in names)}"
        return names[key]
    text = re.sub(r"^graph\s+(\w+)", lambda m: "graph @" + m.group(1), text, flags=re.M)
    text = re.sub(r"([%@])(\w+)", sub, text)
    return re.sub(r"name='[^']*'", "name=''", text)


def structural_key(node: Node, extra: str = "") -> str:
    """Hash of a node's op, attributes and (for fused groups) subgraph text."""
    sub = node.attr("graph")
    # NOTE: printed IR with names canonicalised: the same across processes
    # (never repr() of args, which holds object ids) and across layers
    # (names like mm_11 / mm_14 do not count), so one tuning serves all.
    text = canonical_ir(print_graph(sub if isinstance(sub, Graph) else node_graph(node)))
    sig = ",".join(str(v.type) for v in node.inputs)
    return hashlib.sha256(f"{text}|{sig}|{extra}".encode()).hexdigest()[:20]


@dataclass
class LibraryKernel:
    """The node's ops run through torch: cuBLAS/MKL GEMMs, ATen pointwise ops."""

    node: Node
    name: str = ""
    backend: str = "library"
    space: Space = EMPTY
    source: str = ""

    def __post_init__(self):
        self.name = self.name or f"library_{self.node.name or self.node.op}"

    @property
    def syncs_host(self) -> bool:
        """Whether the torch reference reads device data on the host (``OpDef.syncs_host``)."""
        sub = self.node.attr("graph")
        nodes = sub.nodes if isinstance(sub, Graph) else (self.node,)
        return any(getattr(REGISTRY.get(n.op), "syncs_host", False) for n in nodes)

    def key(self) -> str:
        return structural_key(self.node, "library")

    def problem(self, env: Mapping[str, int]) -> dict:
        return problem_of(self.node, env)

    def compile(self, config: Config) -> Callable[..., Any]:
        sub = self.node.attr("graph")
        if isinstance(sub, Graph):
            direct = _direct_call(sub)
            if direct is not None:
                return direct

            def run(*xs):
                outs = interpret(sub, *xs)
                return outs if len(outs) > 1 else outs[0]
            return run
        return _op_call(self.node, {v: i for i, v in enumerate(self.node.inputs)})


def _op_call(node: Node, slots: Mapping) -> Callable[..., Any]:
    """``node``'s op called on the tensors ``xs[slots[v]]`` of its operands ``v``."""
    fn = get_op(node.op).resolve(node.overload)
    if not node.kwargs and all(isinstance(a, (Value, int, float, bool, type(None))) for a in node.args):
        picks = [(slots[a], None) if isinstance(a, Value) else (None, a) for a in node.args]

        def run_flat(*xs):  # flat positional operands (mm(x, w), addmm(b, x, w)): no structure to map
            return fn(*[a if i is None else xs[i] for i, a in picks])
        return run_flat

    def run(*xs):
        def put(v):
            return xs[slots[v]]
        return fn(*map_values(node.args, put), **{k: map_values(a, put) for k, a in node.kwargs})
    return run


def _direct_call(sub: Graph):
    """A group of one op on the group's inputs with no symbolic argument (a GEMM
    alone, say) as a direct call of that op, or None. The interpreter's work per
    call (binding symbols, walking the graph: ~10 us on the CPU) would be a
    launch overhead the op never had when it ran unfused."""
    nodes = sub.compute_nodes
    if len(nodes) != 1 or sub.outputs != (nodes[0].out(),) or len(nodes[0].types) != 1:
        return None
    n = nodes[0]
    slots = {inp.out(): i for i, inp in enumerate(sub.inputs)}
    if has_syms((n.args, n.kwargs)) or any(v not in slots for v in n.inputs):
        return None
    return _op_call(n, slots)


def problem_of(node: Node, env: Mapping[str, int]) -> dict:
    """Default problem description: concrete operand shapes and dtypes, bucketed."""
    shapes = []
    for v in node.inputs:
        shape = v.type.concrete_shape(env)
        shapes.append("x".join(str(pow2_bucket(d) if not isinstance(d0, int) else d)
                               for d, d0 in zip(shape, v.type.shape)))
    return {"shapes": ";".join(shapes), "dtypes": ",".join(DTYPE_NAMES[v.type.dtype] for v in node.inputs)}


@dataclass
class Choice:
    kernel: Any
    config: Config
    source: str  # "database" | "search" | "default"


# Code generators, tried in order: name -> fn(node, graph, options, device) -> list of Kernels.
GENERATORS: list[tuple[str, Callable]] = []


def register_generator(name: str, fn: Callable, first: bool = False) -> None:
    entry = (name, fn)
    if first:
        GENERATORS.insert(0, entry)
    else:
        GENERATORS.append(entry)


_LOADER: list = [None]


def set_generator_loader(fn: Callable[[], None]) -> None:
    """The driver's function that imports the code generators (registering them)."""
    _LOADER[0] = fn


def load_generators() -> None:
    """Import every code generator there is (each registers itself on import)."""
    if _LOADER[0] is not None:
        _LOADER[0]()


def backend_allows(backend: str, name: str) -> bool:
    """``backend="triton"`` admits the generators "triton" and "triton_*"."""
    return backend == "auto" or name == backend or name.startswith(backend + "_")


def target_device(graph: Graph) -> str:
    for n in graph.nodes:
        for t in n.types:
            if t.device.startswith("cuda"):
                return t.device
    return "cpu"
