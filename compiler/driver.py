"""The driver: run the pass pipeline on a lowered graph, generate kernels
for what was fused, and build the runtime program."""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from braze.compiler.report import GraphReport, KernelRecord
from braze.compiler.runtime import CompiledProgram, written_in_place
from braze.ir import Category, Graph, get_op, print_graph
from braze.autotune.contract import target_device
from braze.passes import PIPELINE, run_pipeline
from braze.passes.context import PassContext
from braze.compiler.codegen import supported
from braze.compiler.kernels import kernels_for
from braze.compiler.padded_program import PaddedProgram, PositionGuarded, guarded_positions, split_padding_prologue

log = logging.getLogger("braze")


def compile_graph(graph: Graph, options, report: GraphReport | None = None) -> CompiledProgram:
    """Optimise ``graph`` and return a program that runs it."""
    t0 = time.perf_counter()
    report = report or GraphReport(graph.name)
    report.input_ir = print_graph(graph)
    ctx = pass_context(graph, options)
    optimized = run_pipeline(graph, PIPELINE, ctx, report)
    report.notes.extend(str(d) for d in ctx.decisions)
    split = None
    if options.cuda_graphs and optimized.sym_bounds:
        split = split_padding_prologue(optimized)
    target = split.body if split is not None else optimized
    launchers = build_launchers(target, options, report)
    report.compile_ms = (time.perf_counter() - t0) * 1e3
    program = CompiledProgram(target, launchers, report, cuda_graphs=_cuda_graphs(options, target))
    if split is not None:
        program = PaddedProgram(optimized, split, program)
    if guarded_positions(optimized):
        return PositionGuarded(program, lambda: compile_graph(graph, replace(
            options, disable=tuple(options.disable) + ("eliminate_padding",))))
    return program


def pass_context(graph: Graph, options) -> PassContext:
    """What the passes may know of the target: the options, the device, and which
    groups a backend the options allow can generate (the code generators' checkers)."""
    device = target_device(graph)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return PassContext(options, device, lambda k, sub: supported(k, sub, kind, options.backend))


def _cuda_graphs(options, graph: Graph) -> bool:
    """Explicit ``options.cuda_graphs``, else on for a graph that writes a caller's
    buffer in place (a decode step: small kernels, launch-bound)."""
    if options.cuda_graphs is not None:
        return bool(options.cuda_graphs)

    return any(written_in_place(graph.outputs[j], graph.inputs[i].out()) and graph.inputs[i].type.rank >= 3
               for i, j in graph.writes)


def build_launchers(graph: Graph, options, report: GraphReport) -> dict:
    """Kernels for fused groups (codegen); every other node runs its ATen op."""
    launchers = kernels_for(graph, options, report)
    for n in graph.compute_nodes:
        if n in launchers:
            report.entries.append(launchers[n])
            continue
        cat = get_op(n.op).category
        if cat in (Category.VIEW,) and n.op not in ("cat", "stack", "repeat", "flip", "roll", "constant_pad_nd"):
            continue  # views launch nothing
        report.entries.append(KernelRecord(n.name or n.op, [n.op], "torch", {}, "n/a"))
    report.refresh()
    return launchers
