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
from typing import Any, Callable, Mapping

import torch

from braze.autotune import contract
from braze.autotune.contract import (GENERATORS, Choice, Kernel, LibraryKernel, at_env, backend_allows,  # noqa: F401
                                     canonical_ir, node_graph, problem_of, register_generator,
                                     set_generator_loader, structural_key, target_device)
from braze.autotune.space import Config, DeviceInfo, device_info
from braze.compiler.report import GraphReport, KernelRecord
from braze.ir import Graph, Node
from braze.ir.decline import Decline
from braze.autotune.select import select
from braze.compiler.codegen import _load

log = logging.getLogger("braze.kernels")


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

    def problem_key(self, env: Mapping[str, int]) -> str:
        """The key of ``choices`` for the shape bucket of ``env``."""
        return repr(sorted(self.primary.problem(env).items()))

    def bind(self, env: Mapping[str, int]) -> Callable[..., Any]:
        problem = self.primary.problem(env)
        pkey = self.problem_key(env)
        choice = self.choices.get(pkey)
        if choice is None:
            choice = select(self, problem, env)
            self.choices[pkey] = choice
        try:
            return at_env(choice.kernel, self.runnable(choice.kernel, choice.config), env)
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


def _load_generators() -> None:
    # Importing a codegen package registers its generator; a backend whose
    # compiler is not installed (no triton, no tvm) simply registers nothing.

    _load()


set_generator_loader(lambda: _load_generators())  # NOTE: looked up per call (tests replace it)


def kernels_for(graph: Graph, options, report: GraphReport) -> dict[Node, Launcher]:
    """A Launcher for each node some generator accepts."""
    launchers: dict[Node, Launcher] = {}
    if options.backend == "torch":
        return launchers
    _load_generators()
    dev = device_info(target_device(graph))
    for n in graph.compute_nodes:
        cands: list = []
        for name, gen in contract.GENERATORS:  # NOTE: looked up per call (tests swap the registry)
            if not backend_allows(options.backend, name):
                continue
            got = gen(n, graph, options, dev)
            if isinstance(got, Decline):  # a template that does not apply says why (braze.explain shows it)
                report.notes.append(f"{name} declines {n.name or n.op}: {got.reason}")
                continue
            cands.extend(got or ())
        if not cands:
            continue
        cands.append(LibraryKernel(n))
        launchers[n] = Launcher(n, cands, options, dev)
    return launchers


def torch_device(device: DeviceInfo) -> torch.device:
    return torch.device("cuda" if device.kind == "cuda" else "cpu")


__all__ = ["Kernel", "LibraryKernel", "Launcher", "Choice", "GENERATORS", "register_generator", "kernels_for",
           "structural_key", "problem_of"]
