"""Kernels for the nodes of an optimised graph.

A code generator looks at one node (usually a ``fused`` group) and returns
candidate :class:`Kernel` objects, or nothing when it declines. Every node
that has candidates also gets the library candidate (its ops run through
torch, e.g. cuBLAS and a separate epilogue), so the choice between
generated code and the library is made by measurement, never assumed.

A Kernel is generated once per node and is shape-generic; per shape bucket
(a *problem*, see ``autotune/space.py``) a config is chosen (tuning database,
search, or the template default) and the kernel compiled for it. The
:class:`Launcher` holds the candidates of one node and makes that choice
when the runtime binds a shape (``bind(env)``).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch

from braze.autotune.space import EMPTY, Config, DeviceInfo, Space
from braze.compiler.report import GraphReport, KernelRecord
from braze.ir import Graph, Node, Value, print_graph

log = logging.getLogger("braze.kernels")


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


def structural_key(node: Node, extra: str = "") -> str:
    """Hash of a node's op, attributes and (for fused groups) subgraph text."""
    from braze.autotune.recipe import canonical_ir, node_graph

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

    def key(self) -> str:
        return structural_key(self.node, "library")

    def problem(self, env: Mapping[str, int]) -> dict:
        return problem_of(self.node, env)

    def compile(self, config: Config) -> Callable[..., Any]:
        from braze.ir.interpreter import interpret

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
    from braze.ir import get_op
    from braze.ir.graph import map_values

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
    from braze.ir.graph import has_syms

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
    from braze.autotune.space import pow2_bucket
    from braze.ir.types import DTYPE_NAMES

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


@dataclass
class Launcher:
    """The candidates of one node and the choice among them per shape bucket."""

    node: Node
    candidates: list
    options: Any
    device: DeviceInfo
    choices: dict = field(default_factory=dict)      # problem key -> Choice
    compiled: dict = field(default_factory=dict)     # (kernel name, config items) -> callable

    @property
    def primary(self):
        return self.candidates[0]

    def bind(self, env: Mapping[str, int]) -> Callable[..., Any]:
        from braze.autotune.select import select

        problem = self.primary.problem(env)
        pkey = repr(sorted(problem.items()))
        choice = self.choices.get(pkey)
        if choice is None:
            choice = select(self, problem, env)
            self.choices[pkey] = choice
        try:
            return self.runnable(choice.kernel, choice.config)
        except Exception as e:  # noqa: BLE001 - a candidate that cannot build: the library call runs
            lib = self.candidates[-1]
            if choice.kernel is lib:
                raise
            log.info("braze: %s of %s cannot build (%s); the library call runs", choice.kernel.name,
                     self.node.name or self.node.op, e)
            self.choices[pkey] = Choice(lib, {}, "fallback")
            return self.runnable(lib, {})

    def runnable(self, kernel, config: Config) -> Callable[..., Any]:
        ck = (kernel.name, tuple(sorted(config.items())))
        fn = self.compiled.get(ck)
        if fn is None:
            fn = kernel.compile(config)
            self.compiled[ck] = fn
        return fn

    def record(self) -> KernelRecord:
        choice = next(iter(self.choices.values()), None)
        k = choice.kernel if choice else self.primary
        cfg = choice.config if choice else {}
        src = choice.source if choice else "default"
        ops = _fused_ops(self.node)
        digest = hashlib.sha256(k.source.encode()).hexdigest()[:12] if k.source else ""
        return KernelRecord(k.name, ops, k.backend, dict(cfg), src, digest)


def _fused_ops(node: Node) -> list[str]:
    sub = node.attr("graph")
    if isinstance(sub, Graph):
        return [n.op for n in sub.compute_nodes]
    return [node.op]


# Code generators, tried in order: name -> fn(node, graph, options, device) -> list of Kernels.
GENERATORS: list[tuple[str, Callable]] = []


def register_generator(name: str, fn: Callable, first: bool = False) -> None:
    entry = (name, fn)
    if first:
        GENERATORS.insert(0, entry)
    else:
        GENERATORS.append(entry)


def _load_generators() -> None:
    # Importing a codegen package registers its generator; a backend whose
    # compiler is not installed (no triton, no tvm) simply registers nothing.
    from braze.compiler.codegen import _load

    _load()


def backend_allows(backend: str, name: str) -> bool:
    """``backend="triton"`` admits the generators "triton" and "triton_*"."""
    return backend == "auto" or name == backend or name.startswith(backend + "_")


def target_device(graph: Graph) -> str:
    for n in graph.nodes:
        for t in n.types:
            if t.device.startswith("cuda"):
                return t.device
    return "cpu"


def kernels_for(graph: Graph, options, report: GraphReport) -> dict[Node, Launcher]:
    """A Launcher for each node some generator accepts."""
    from braze.autotune.space import device_info

    launchers: dict[Node, Launcher] = {}
    if options.backend == "torch":
        return launchers
    _load_generators()
    dev = device_info(target_device(graph))
    for n in graph.compute_nodes:
        cands: list = []
        for name, gen in GENERATORS:
            if not backend_allows(options.backend, name):
                continue
            cands.extend(gen(n, graph, options, dev) or ())
        if not cands:
            continue
        cands.append(LibraryKernel(n))
        launchers[n] = Launcher(n, cands, options, dev)
    return launchers


def torch_device(device: DeviceInfo) -> torch.device:
    return torch.device("cuda" if device.kind == "cuda" else "cpu")


__all__ = ["Kernel", "LibraryKernel", "Launcher", "Choice", "GENERATORS", "register_generator", "kernels_for",
           "structural_key", "problem_of"]
