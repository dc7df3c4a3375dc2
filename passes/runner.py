"""The thin runner around the pipeline: times each pass, verifies its
result, dumps the IR on request, and names the pass that failed."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from braze.ir import Graph, VerificationError, print_graph, verify
from braze.passes.context import PassContext

log = logging.getLogger("braze.passes")


@dataclass
class PassRecord:
    """One pass as it ran: time, node counts, the IR after it (the last pass's, or every
    pass's when ``options.dump`` is set)."""

    name: str
    ms: float
    nodes_before: int
    nodes_after: int
    ir: str = ""


@dataclass(frozen=True)
class Pass:
    """A named ``Graph -> Graph`` function; ``fn(graph, options)``."""

    name: str
    fn: Callable


class PassError(RuntimeError):
    def __init__(self, pass_name: str, message: str):
        super().__init__(f"pass {pass_name!r} failed: {message}")
        self.pass_name = pass_name


def run_pipeline(graph: Graph, pipeline: Sequence[Pass], ctx, report=None) -> Graph:
    """Run ``pipeline`` on ``graph``; ``ctx`` is a :class:`PassContext` (or the
    options, for a context with defaults). ``report.passes`` gets a record per pass."""
    ctx = PassContext.of(ctx)
    options = ctx.options
    dump = getattr(options, "dump", None)
    if dump:
        os.makedirs(dump, exist_ok=True)
        _dump(dump, graph, 0, "input")
    try:
        for i, p in enumerate(pipeline, 1):
            if p.name in getattr(options, "disable", ()):
                continue
            t0 = time.perf_counter()
            try:
                out = p.fn(graph, ctx)
            except PassError:
                raise
            except Exception as e:  # noqa: BLE001 - reported with the pass named
                raise PassError(p.name, f"{type(e).__name__}: {e}") from e
            if not isinstance(out, Graph):
                raise PassError(p.name, f"returned {type(out).__name__}, not a Graph")
            if getattr(options, "verify", True):
                try:
                    verify(out, types=getattr(options, "verify_types", False))
                except VerificationError as e:
                    raise PassError(p.name, f"its result does not verify: {e}") from e
            ms = (time.perf_counter() - t0) * 1e3
            # NOTE: the IR text of every pass only when dumping or explaining; otherwise a report
            # keeps the last one (``final_ir``), written after the loop: printing a 16-layer
            # decoder after each of ~16 passes took ~1 s of every compile.
            text = print_graph(out) if dump or getattr(report, "every_pass_ir", False) else ""
            if dump:
                _dump(dump, out, i, p.name, text)
            if report is not None:
                report.passes.append(PassRecord(p.name, ms, len(graph.compute_nodes), len(out.compute_nodes), text))
            log.debug("pass %s: %.1f ms, %d -> %d nodes", p.name, ms, len(graph.compute_nodes), len(out.compute_nodes))
            graph = out
    finally:
        # the last pass that ran keeps its IR as the report's final IR (also when a later
        # pass failed: the report then shows what the failing pass was given)
        if report is not None and report.passes and not report.passes[-1].ir:
            report.passes[-1].ir = print_graph(graph)
    return graph


def _dump(folder: str, graph: Graph, i: int, name: str, text: Optional[str] = None) -> None:
    path = os.path.join(folder, f"{graph.name}.{i:02d}.{name}.ir")
    with open(path, "w") as f:
        f.write(text if text is not None else print_graph(graph))
