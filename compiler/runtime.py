"""The compiled program: a launch list with shape, dtype and device guards.

For each distinct input signature (shapes, dtypes, devices, symbol values)
the program binds the symbols once, checks every input against the graph's
types (a mismatch raises a ``BindError`` naming the argument, the expected
and the actual type), and generates a straight-line Python function that
calls one launcher per node: a generated kernel for fused groups, the
op's ATen implementation otherwise. Intermediates are freed after their
last use.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from braze.autotune import cublas_workspace
from braze.compiler import cpu_threads, profile
from braze.compiler.codegen.calls import ACTIVE, CALLS
from braze.compiler.memory_plan import drops_after
from braze.compiler.precompile import precompile
from braze.ir import Graph, Node, Value, get_op
from braze.ir.graph import map_values
from braze.ir.inplace_ops import written_base
from braze.ir.interpreter import BindError, bind_symbols, concretize

log = logging.getLogger("braze.runtime")

MAX_PLANS = 64


class CompiledProgram:
    """Callable running ``graph``; ``launchers`` maps fused/special nodes to
    objects with ``bind(env) -> callable(*tensors)``."""

    def __init__(self, graph: Graph, launchers: Optional[Mapping[Node, Any]] = None, report=None,
                 cuda_graphs: bool = False):
        self.graph = graph
        self.launchers = dict(launchers or {})
        self.report = report
        # NOTE: run-time symbols (padding elimination's token count) need a
        # host synchronisation inside the plan, which a CUDA graph cannot hold.
        self.cuda_graphs = cuda_graphs and not graph.sym_bounds
        self._written = tuple(i for i, _ in graph.writes)
        self._plans: "OrderedDict[tuple, Callable]" = OrderedDict()
        # cpu_threads.ThreadRegime per input signature of a CPU program (timed per shape)
        self._regimes: dict = {}

    def __call__(self, *inputs: torch.Tensor, sym_values: Sequence[int] = ()) -> tuple[torch.Tensor, ...]:
        return self.run(inputs, sym_values)

    def run(self, inputs: Sequence[torch.Tensor], sym_values: Sequence[int] = ()) -> tuple[torch.Tensor, ...]:
        """The program on ``inputs`` (a sequence; ``__call__`` takes them as arguments)."""
        CALLS[0] += 1
        try:
            key = tuple([(x.shape, x.dtype, x.device) for x in inputs]) + tuple(sym_values)
            if self.cuda_graphs and self._written:
                # NOTE: a captured graph writes the buffers it was captured with: another
                # cache (a new generate call) gets its own capture, not a copy in and out.
                key += tuple(inputs[i].data_ptr() for i in self._written)
        except AttributeError:
            bind_symbols(self.graph, inputs, sym_values, check=True)  # raises a BindError naming the input
            raise
        plan = self._plans.get(key)
        fresh = plan is None
        if fresh:
            plan = self._plan(inputs, sym_values, key)
        if isinstance(plan, CudaGraphPlan) and torch.cuda.is_current_stream_capturing():
            plan = plan.plan  # captured whole by a caller (braze.generate's step): no graph in a graph
        regime = None if fresh else self._regimes.get(key)     # warm calls only: a fresh plan builds kernels
        if regime is None and not fresh:
            regime = self._regimes[key] = self._thread_regime(inputs)
        outer = ACTIVE[0]
        ACTIVE[0] = CALLS[0]
        try:
            if regime:
                return regime.run(plan, inputs)
            return plan(inputs)
        except Exception as e:  # noqa: BLE001
            if not isinstance(plan, CudaGraphPlan) or plan.graph is not None or not plan.warm:
                raise
            # Capture failed (a kernel that synchronises, a host copy): run uncaptured from now on.
            log.warning("braze: %s cannot be captured in a CUDA graph (%s: %s); running it uncaptured",
                        self.graph.name, type(e).__name__, e)
            torch.cuda.synchronize()
            self._plans[key] = plan.plan
            return plan.plan(inputs)
        finally:
            ACTIVE[0] = outer

    def _thread_regime(self, inputs):
        """A CPU program of generated kernels picks its thread regime by timing, per input
        signature (cpu_threads.py); the first few choices are noted in the report."""
        if not self.launchers or not cpu_threads.applies(inputs):
            return False
        notes = getattr(self.report, "notes", None)

        def note(msg: str) -> None:
            if notes is not None and sum(n.startswith("CPU threads:") for n in notes) < 4:
                notes.append(msg)

        return cpu_threads.ThreadRegime(self.graph.name, note)

    def _plan(self, inputs, sym_values, key) -> Callable:
        env = bind_symbols(self.graph, inputs, sym_values, check=True)
        for s, bound in self.graph.sym_bounds:  # run-time symbols: planned at their upper bound
            env[s] = bound if isinstance(bound, int) else bound.eval(env)
        plan = build_plan(self.graph, self.launchers, env)
        if self.cuda_graphs and all(x.is_cuda for x in inputs) and inputs and not profile.enabled() \
                and not torch.cuda.is_current_stream_capturing():
            plan = CudaGraphPlan(plan, inputs, written=self._written, constants=self.graph.constants.values())
        self._plans[key] = plan
        if len(self._plans) > MAX_PLANS:
            self._plans.popitem(last=False)
        if len(self._regimes) > MAX_PLANS:
            self._regimes.clear()
        log.debug("new plan for %s: %s", self.graph.name, env)
        return plan

    @property
    def num_plans(self) -> int:
        return len(self._plans)


class CudaGraphPlan:
    """A plan replayed as a CUDA graph: inputs are copied into the graph's static
    buffers, outputs cloned out of its own.

    The first call runs the plan for real (compiling and tuning its kernels; on a
    side stream, as capture wants); the second captures it and every call from
    then on replays. An input the graph writes (a KV cache) is captured as the
    caller's own tensor, so a replay writes it in place and nothing is written
    twice; the program keys its plans by those tensors' addresses, so another
    cache gets its own capture.
    """

    def __init__(self, plan: Callable, inputs: Sequence[torch.Tensor], written: Sequence[int] = (),
                 constants=()):
        self.plan = plan
        self.written = tuple(written)
        self.constants = tuple(constants)
        self.graph = None
        self.warm = False

    def _capture(self, inputs: Sequence[torch.Tensor]) -> None:
        # NOTE: the graph reads the constants' storage as it is now; a parameter whose
        # ``.data`` is swapped later (``shared_constants`` rebinding a weight onto its
        # concatenation for another graph, ``module.half()``) must not free it under us.
        self.storages = tuple(t.data for t in self.constants if isinstance(t, torch.Tensor))
        self.static_in = [x if i in self.written else x.clone() for i, x in enumerate(inputs)]
        graph = torch.cuda.CUDAGraph()
        with cublas_workspace.capture(), torch.cuda.graph(graph):
            self.static_out = self.plan(self.static_in)
        self.aliases = {k: i for k, o in enumerate(self.static_out) for i in self.written if o is self.static_in[i]}
        self.graph = graph

    def __call__(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if self.graph is None:
            if not self.warm:
                side = cublas_workspace.side_stream(inputs[0].device)
                main = torch.cuda.current_stream(side.device)
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    out = self.plan(inputs)
                main.wait_stream(side)
                self.warm = True
                return out
            self._capture(inputs)
        for dst, src in zip(self.static_in, inputs):
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src)
        self.graph.replay()
        for i in self.written:
            if self.static_in[i].data_ptr() != inputs[i].data_ptr():
                inputs[i].copy_(self.static_in[i])
        return tuple(inputs[self.aliases[k]] if k in self.aliases else o.clone()
                     for k, o in enumerate(self.static_out))


def build_plan(graph: Graph, launchers: Mapping[Node, Any], env: Mapping[str, int]) -> Callable:
    """Straight-line Python for one binding of the symbols."""
    names: dict[Value, str] = {}
    glb: dict[str, Any] = {}
    lines: list[str] = []
    for i, n in enumerate(graph.inputs):
        names[n.out()] = f"x{i}"
    drops = drops_after(graph)  # NOTE: intermediates go right after their last reader (memory_plan.py)
    profiling = profile.enabled()
    precompile(launchers, env)  # NOTE: GPU kernels built in parallel before selection runs them one by one

    def ref(obj):
        if isinstance(obj, Value):
            return names[obj]
        if isinstance(obj, (bool, int, float, str)) or obj is None:
            return repr(obj) if not (isinstance(obj, float) and (obj != obj or obj in (float("inf"), -float("inf")))) \
                else _glob(glb, obj)
        if isinstance(obj, tuple):
            return "(" + "".join(ref(o) + ", " for o in obj) + ")"
        return _glob(glb, obj)

    for i, n in enumerate(graph.nodes):
        if n.op == "input":
            continue
        if n.op == "constant":
            names[n.out()] = _glob(glb, graph.constants[n.args[0]])
            continue
        launcher = launchers.get(n)
        guard = _write_guard(graph, n, env)
        if guard is not None:
            fn, index, size, label = guard
            lines.append(f"{_glob(glb, fn)}({ref(index)}, {size}, {label!r})")
        if launcher is not None:
            fn = launcher.bind(env)
            if profiling:
                fn = profile.timed(_label(launcher, n), fn)
            call = f"{_glob(glb, fn)}({', '.join(ref(v) for v in n.inputs)})"
        else:
            fn = get_op(n.op).resolve(n.overload)
            if profiling:
                fn = profile.timed(f"aten.{n.op}", fn)
            args = concretize(n.args, env)
            kwargs = [(k, concretize(v, env)) for k, v in n.kwargs]
            parts = [ref(a) for a in args] + [f"{k}={ref(v)}" for k, v in kwargs]
            call = f"{_glob(glb, fn)}({', '.join(parts)})"
        outs = [f"v{i}_{j}" for j in range(len(n.types))]
        for j, o in enumerate(outs):
            names[Value(n, j)] = o
        if len(outs) == 1:
            lines.append(f"{outs[0]} = {call}")
            if launcher is None and _returns_sequence(n):
                lines.append(f"{outs[0]} = {outs[0]}[0]")
        else:
            lines.append(f"{', '.join(outs)} = {call}")
        dead = [names[v] for v in drops.get(i, ())]
        if dead:
            lines.append(f"del {', '.join(dead)}")
    # Side effects: an input the graph writes gets its final value (unless an
    # in-place op already wrote it) and is returned as itself where the
    # graph returns that value.
    returned_as: dict[Value, str] = {}
    for i, j in graph.writes:
        v = graph.outputs[j]
        if not written_in_place(v, graph.inputs[i].out()):
            lines.append(f"x{i}.copy_({names[v]})")
        returned_as[v] = f"x{i}"
    head = "def plan(inputs):\n"
    if graph.inputs:
        head += f"    {''.join(f'x{i}, ' for i in range(len(graph.inputs)))}= inputs\n"
    body = "".join(f"    {ln}\n" for ln in lines)
    ret = f"    return ({''.join(returned_as.get(v, names[v]) + ', ' for v in graph.outputs)})\n"
    src = head + body + ret
    code = compile(src, f"<braze plan {graph.name}>", "exec")
    exec(code, glb)  # noqa: S102 - generated from the graph, no user text
    plan = glb["plan"]
    plan.source = src
    return plan


def _write_guard(graph: Graph, n: Node, env):
    """A bounds check before an in-place write into a caller's buffer (a KV
    cache), so a full cache raises before anything is written."""
    w = get_op(n.op).writes
    many = n.op in ("index_copy_many_", "cache_write_heads_")
    if w is None or not (many or n.op in ("index_copy_", "index_put_")):
        return None
    base = n.args[0][0] if many else n.args[w]
    inputs = {x.out(): x for x in graph.inputs}
    while base not in inputs:
        base = written_base(base)
        if base is None:
            return None  # a fresh buffer of the graph's own
    shape = base.type.concrete_shape(env)
    name = inputs[base].args[0]
    if n.op == "index_copy_" or many:
        dim = n.args[1] % len(shape)
        return check_write_rows, n.args[2], shape[dim], f"{name} (dim {dim})"
    index = next((k for k, x in enumerate(n.args[1]) if isinstance(x, Value)), None)
    if index is None or len([x for x in n.args[1] if x is not None]) != 1:
        return None
    return check_write_rows, n.args[1][index], shape[index], f"{name} (dim {index})"


def check_write_rows(index: torch.Tensor, size: int, what: str) -> None:
    """Raise before writing rows ``index`` of a buffer with ``size`` rows if one is out of range.

    NOTE: only where reading the index costs no device synchronisation (CPU
    tensors); on a GPU, ``braze.generate`` checks the cache length on the host
    before it starts, and a CUDA graph replays no Python."""
    if index.device.type != "cpu" or not index.numel():
        return
    hi, lo = int(index.max()), int(index.min())
    if hi >= size:
        raise IndexError(f"braze: writing row {hi} of {what}, which has {size} rows: the cache is full "
                         f"(position {hi} >= max_cache_len {size}); nothing was written")
    if lo < -size:
        raise IndexError(f"braze: writing row {lo} of {what}, which has {size} rows; nothing was written")


def written_in_place(v: Value, base: Value) -> bool:
    """Whether ``v`` is ``base`` after a chain of in-place writes to it."""
    while v != base:
        v = written_base(v)
        if v is None:
            return False
    return True


def _label(launcher, n: Node) -> str:
    try:
        return launcher.record().name
    except Exception:  # noqa: BLE001 - a launcher without a record (a test double)
        return getattr(launcher, "name", n.op)


def _returns_sequence(n: Node) -> bool:
    # Single-output nodes lowered from multi-output ATen ops (e.g. split with one chunk).
    return n.op in ("split", "split_with_sizes", "unbind", "chunk")


def _glob(glb: dict, obj: Any) -> str:
    name = f"g{len(glb)}"
    glb[name] = obj
    return name


__all__ = ["CompiledProgram", "BindError", "build_plan", "map_values"]
