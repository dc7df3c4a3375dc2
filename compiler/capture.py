"""Capture: from a Dynamo FX graph or a torch.export program to an FX graph
of braze's ATen op set (``compiler/decompositions.py``), with each
placeholder classified as a tensor input, a constant (parameter or buffer),
a symbol or a fixed value, ready for ``compiler/lower.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.fx as fx

from braze.compiler.decompositions import decomposition_table
from braze.compiler.lower import LoweringError, Placeholder


@dataclass
class Captured:
    gm: fx.GraphModule            # ATen-level graph
    placeholders: list[Placeholder]


def trace_aten(gm: torch.nn.Module, fake_args: Sequence[Any]) -> fx.GraphModule:
    """Re-trace ``gm`` on fake inputs into braze's ATen op set."""
    from torch.fx.experimental.proxy_tensor import make_fx

    # NOTE: the mode of the fake inputs themselves, not the tracing context's.
    fake_mode = next((a.fake_mode for a in fake_args if hasattr(a, "fake_mode")), None)
    if fake_mode is None:
        raise LoweringError("no fake inputs to trace with")
    with fake_mode, torch.no_grad():
        traced = make_fx(gm, decomposition_table=decomposition_table(), tracing_mode="real")(*fake_args)
        if not _mutates(traced):
            return traced
        # NOTE: functionalised, every in-place op becomes its functional form and
        # each mutated input gets one trailing copy_(input, final value);
        # lower() turns those into Graph.writes and passes/reinplace.py writes a
        # KV cache in place again. Views stay views (remove="mutations").
        return make_fx(torch.func.functionalize(gm, remove="mutations"), decomposition_table=decomposition_table(),
                       tracing_mode="real")(*fake_args)


def _mutates(gm: fx.GraphModule) -> bool:
    return any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
               and n.target._schema.is_mutable for n in gm.graph.nodes)


def _source_key(name: str) -> str:
    # L['self'].model.layers[0].mlp.up_proj.weight -> model.layers.0.mlp.up_proj.weight
    s = re.sub(r"^L\['self'\]\.?|^L\['(\w+)'\]", lambda m: m.group(1) or "", name)
    s = re.sub(r"\._(?:modules|parameters|buffers)\['([^']+)'\]", r".\1", s)
    s = re.sub(r"\[['\"]?([^'\"\]]+)['\"]?\]", r".\1", s)
    s = re.sub(r"^(?:args\.0|self)\.(?=.)", "", s.strip("."))
    return s or name


def _source_name(source, default: str) -> str:
    if source is None:
        return default
    name = source.name() if callable(getattr(source, "name", None)) else getattr(source, "name", default)
    return _source_key(str(name))


def capture_dynamo(gm: fx.GraphModule, example_inputs: Sequence[Any], static: bool = False) -> Captured:
    """Classify Dynamo's placeholders and trace ``gm`` to ATen.

    ``static``: ``example_inputs`` are a call's real arguments; the graph is
    traced for exactly their shapes and integer values (its symbols
    specialised), for ``compiler/backend.py``'s per-shape fallback."""
    from torch._dynamo.source import is_from_unspecialized_param_buffer_source

    placeholders: list[Placeholder] = []
    fake_args: list[Any] = []
    mode = None
    if static:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode()
    for n, real in zip((n for n in gm.graph.nodes if n.op == "placeholder"), example_inputs):
        ev = n.meta.get("example_value")
        ga = n.meta.get("grapharg")
        source = getattr(ga, "source", None)
        if static:
            ev = mode.from_tensor(real) if isinstance(real, torch.Tensor) else real
        fake_args.append(ev)
        if static and not isinstance(real, torch.Tensor):
            placeholders.append(Placeholder("value", n.name, value=real))
        elif isinstance(ev, torch.SymInt) or isinstance(real, (int, torch.SymInt)) and not isinstance(real, bool):
            placeholders.append(Placeholder("sym", n.name))
        elif not isinstance(ev, torch.Tensor):
            placeholders.append(Placeholder("value", n.name, value=real))
        elif source is not None and is_from_unspecialized_param_buffer_source(source) or isinstance(
                real, torch.nn.Parameter):
            placeholders.append(Placeholder("constant", _source_name(source, n.name), tensor=real))
        else:
            placeholders.append(Placeholder("input", _source_name(source, n.name)))
    return Captured(trace_aten(gm, fake_args), placeholders)


def capture_export(model: torch.nn.Module, args: tuple, kwargs: Optional[dict] = None,
                   dynamic_shapes: Any = None, strict: bool = False) -> tuple[Captured, Any]:
    """torch.export the model, then trace its graph module to ATen.

    Returns the capture and the ExportedProgram (its call spec gives the
    pytree structure of inputs and outputs).
    """
    from torch.export.graph_signature import InputKind

    with torch.no_grad():
        ep = torch.export.export(model, args, kwargs or {}, dynamic_shapes=dynamic_shapes, strict=strict)
    sig = ep.graph_signature
    placeholders: list[Placeholder] = []
    fake_args: list[Any] = []
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    for spec, n in zip(sig.input_specs, (n for n in ep.graph.nodes if n.op == "placeholder")):
        val = n.meta.get("val")
        fake_args.append(val)
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            placeholders.append(Placeholder("constant", spec.target, tensor=state[spec.target]))
        elif isinstance(val, torch.SymInt):
            placeholders.append(Placeholder("sym", n.name))
        elif isinstance(val, torch.Tensor):
            placeholders.append(Placeholder("input", spec.arg.name))
        else:
            placeholders.append(Placeholder("value", n.name, value=val))
    return Captured(trace_aten(ep.graph_module, fake_args), placeholders), ep
