"""The ``torch.compile(backend="braze")`` entry point.

Dynamo hands braze an FX graph and its example inputs; braze captures it to
ATen, lowers it, compiles it and returns a callable with the same calling
convention. Parameters and buffers are compiled in as constants; each call
checks, by identity and version counter, that they are still the tensors
compiled in, and recompiles if the module's weights were replaced or
changed in place. A graph braze cannot compile runs eagerly, with the
reason logged and kept in its report (unless ``strict``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import torch

from braze.autotune.options import Options
from braze.compiler.capture import capture_dynamo
from braze.compiler.driver import compile_graph
from braze.compiler.lower import CallSpec, LoweringError, lower
from braze.compiler.report import GraphReport
from braze.compiler.codegen.calls import version_of
from braze.passes import check_disable
from braze.ir import bind_symbols

log = logging.getLogger("braze")

_graph_counter = [0]


def braze_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: Any = None, **_):
    """Dynamo backend; ``options`` is a dict of :class:`braze.Options` fields."""
    opts = options if isinstance(options, Options) else Options.from_dict(options)
    return make_backend(opts)(gm, example_inputs)


def make_backend(options: Options, reports: Optional[list] = None, every_pass_ir: bool = False) -> Callable:
    check_disable(options)
    def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]):
        _graph_counter[0] += 1
        report = GraphReport(f"graph{_graph_counter[0]}", every_pass_ir=every_pass_ir)
        if reports is not None:
            reports.append(report)
        try:
            return _compile(gm, example_inputs, options, report)
        except Exception as e:  # noqa: BLE001
            if options.strict:
                raise
            report.fallback = f"{type(e).__name__}: {e}"
            log.warning("braze runs %s eagerly: %s", report.name, report.fallback)
            return gm.forward

    return backend


def _compile(gm, example_inputs, options: Options, report: GraphReport):
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs):
        raise LoweringError("braze compiles inference only; call the model under torch.no_grad() "
                            "or torch.inference_mode()")
    try:
        cap = capture_dynamo(gm, example_inputs)
        lowered = lower(cap.gm, cap.placeholders, name=report.name)
    except Exception as e:  # noqa: BLE001 - retried per shape below, or raised
        if not _symbolic(example_inputs):
            raise
        # NOTE: some torch releases cannot trace an op on symbolic shapes (torch 2.11's
        # CUDA SDPA: "SymIntArrayRef expected to contain only concrete integers"), and
        # a symbolic trace may hold what braze cannot type (a SymFloat from .item());
        # the graph is then compiled for each concrete shape it is called with.
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        report.notes.append(f"symbolic capture failed ({reason}); compiled per input shape")
        log.info("braze: capturing %s with symbolic shapes failed (%s); compiling it per input shape",
                 report.name, reason)
        return PerShapeEntry(gm, options, report)
    return _entry(lowered, example_inputs, options, report)


def _entry(lowered, example_inputs, options: Options, report: GraphReport) -> "DynamoEntry":
    graph, spec = lowered
    program = compile_graph(graph, options, report)
    return DynamoEntry(program, spec, example_inputs, graph,
                       lambda consts: compile_graph(_with_constants(graph, consts), options, GraphReport(report.name)))


def _symbolic(example_inputs) -> bool:
    return any(isinstance(x, torch.SymInt) or isinstance(x, torch.Tensor) and any(
        isinstance(d, torch.SymInt) for d in (*x.shape, *x.stride())) for x in example_inputs)


class PerShapeEntry:
    """A Dynamo graph with symbolic shapes that could not be captured as such:
    compiled (and cached) for each concrete argument signature it is called
    with: shapes, strides, dtypes, devices and integer values. Past
    ``MAX_SHAPES`` signatures, new ones run eagerly (said once)."""

    MAX_SHAPES = 64

    def __init__(self, gm: torch.fx.GraphModule, options: Options, report: GraphReport):
        self.gm, self.options, self.report = gm, options, report
        self.entries: dict = {}

    def __call__(self, *args):
        key = tuple((tuple(a.shape), a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else
                    (type(a), a) for a in args)
        entry = self.entries.get(key)
        if entry is None and len(self.entries) >= self.MAX_SHAPES:
            if self.report.fallback is None:
                self.report.fallback = f"more than {self.MAX_SHAPES} input shapes compiled one by one"
                log.warning("braze runs new shapes of %s eagerly: %s", self.report.name, self.report.fallback)
            return self.gm.forward(*args)
        if entry is None:
            self.report.passes.clear()        # the report shows the latest shape's compilation
            self.report.entries.clear()
            try:
                cap = capture_dynamo(self.gm, args, static=True)
                entry = _entry(lower(cap.gm, cap.placeholders, name=self.report.name), args, self.options,
                               self.report)
            except Exception as e:  # noqa: BLE001 - e.g. a float argument read with .item() in the graph
                if self.options.strict:
                    raise
                self.report.fallback = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.warning("braze runs %s eagerly for these arguments: %s", self.report.name, self.report.fallback)
                entry = self.gm.forward
            self.entries[key] = entry
        return entry(*args)


def _with_constants(graph, consts):
    from dataclasses import replace

    return replace(graph, constants={**graph.constants, **consts})


def _state(t) -> tuple:
    """What a parameter's value is as of now: its version and its storage address."""
    return version_of(t), t.data_ptr()


class DynamoEntry:
    """Maps Dynamo's flat arguments to the program and its outputs back."""

    def __init__(self, program, spec: CallSpec, example_inputs, graph, recompile: Callable):
        self.program = program
        self.spec = spec
        self.graph = graph
        self.has_syms = any(kind == "sym" for kind, _ in spec.leaves)
        # NOTE: the outputs are the leaves in order (no literal, no symbol, no write-back output after them)
        self.direct = [x for _, x in spec.leaves] == list(range(len(spec.leaves))) and all(
            kind == "value" for kind, _ in spec.leaves) and len(graph.outputs) == len(spec.leaves)
        self._sym_envs: dict = {}
        self._bind([example_inputs[i] for i, _ in spec.constants])
        self.recompile = recompile

    def _bind(self, constants: list) -> None:
        """Remember the parameters compiled in: the tensors, their states, and aliases that keep
        their storages alive (after ``p.data = new`` the old address cannot come back for
        another tensor and pass for the old value)."""
        self.bound = constants
        self.versions = [_state(t) for t in constants]
        self._hold = [t.detach() if isinstance(t, torch.Tensor) else t for t in constants]

    def _check_constants(self, args) -> None:
        # NOTE: the storage address too: ``param.data = new`` keeps the object and its version
        stale = [i for (i, _), t, v in zip(self.spec.constants, self.bound, self.versions)
                 if args[i] is not t or _state(args[i]) != v]
        if stale:
            log.info("braze: %d parameters or buffers changed since compilation; recompiling", len(stale))
            self._bind([args[i] for i, _ in self.spec.constants])
            self.program = self.recompile({name: args[i] for i, name in self.spec.constants})

    def __call__(self, *args):
        spec = self.spec
        if spec.constants:
            self._check_constants(args)
        inputs = [args[i] for i in spec.inputs]
        sym_values = [args[i] for i in spec.syms] if spec.syms else ()
        run = getattr(self.program, "run", None)
        outs = run(inputs, sym_values) if run is not None else self.program(*inputs, sym_values=sym_values)
        if self.direct:  # the outputs are the leaves, in order
            return tuple(outs) if spec.is_tuple else outs[0]
        env = self._symbols(inputs, sym_values) if self.has_syms else None
        leaves = [outs[x] if kind == "value" else x.eval(env) if kind == "sym" else x for kind, x in spec.leaves]
        return tuple(leaves) if spec.is_tuple else leaves[0]

    def _symbols(self, inputs, sym_values) -> dict:
        """Symbol values of a call (for symbolic integers the graph returns)."""
        key = tuple(x.shape for x in inputs) + tuple(sym_values)
        env = self._sym_envs.get(key)
        if env is None:
            env = self._sym_envs[key] = bind_symbols(self.graph, inputs, sym_values, check=False)
        return env


def capture_graphs(fn: Callable, *args, **kwargs) -> list:
    """The braze graphs Dynamo captures from ``fn(*args, **kwargs)``, lowered
    but not optimised (for tests and tools); ``fn`` runs eagerly."""
    graphs: list = []

    def backend(gm, example_inputs):
        cap = capture_dynamo(gm, example_inputs)
        graphs.append(lower(cap.gm, cap.placeholders, name=f"graph{len(graphs) + 1}")[0])
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(fn, backend=backend)(*args, **kwargs)
    torch._dynamo.reset()
    return graphs
