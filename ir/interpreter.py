"""Run a Graph with the torch reference of each op.

This is the reference semantics of the IR, and the fallback runtime for
anything braze does not generate code for.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

from braze.ir.graph import Graph, Value, map_syms, map_values
from braze.ir.registry import get_op
from braze.ir.types import Sym, TensorType


class BindError(ValueError):
    """An argument does not match the graph's input types."""


def bind_symbols(graph: Graph, inputs: Sequence[torch.Tensor], sym_values: Sequence[int] = (),
                 check: bool = True) -> dict[str, int]:
    """Symbol values from the input shapes (and ``sym_inputs`` integers).

    With ``check``, every input's rank, static dims, dtype and compound
    symbolic dims are checked; a mismatch raises BindError naming the input,
    the expected and the actual type.
    """
    if len(inputs) != len(graph.inputs):
        raise BindError(f"{graph.name} takes {len(graph.inputs)} tensor inputs, got {len(inputs)}")
    env: dict[str, int] = dict(zip(graph.sym_inputs, (int(s) for s in sym_values)))
    for n, x in zip(graph.inputs, inputs):
        t = n.type
        if not isinstance(x, torch.Tensor):
            raise BindError(f"input {n.args[0]!r}: expected a tensor {t}, got {type(x).__name__}")
        if x.dim() != t.rank:
            raise BindError(f"input {n.args[0]!r}: expected rank {t.rank} ({t}), got shape {tuple(x.shape)}")
        for d, s in zip(t.shape, x.shape):
            if isinstance(d, Sym) and len(d.symbols) == 1 and d.expr in d.symbols:
                prev = env.setdefault(d.expr, int(s))
                if check and prev != s:
                    raise BindError(f"input {n.args[0]!r}: dimension {d} is {s} here but {prev} elsewhere")
    if check:
        for n, x in zip(graph.inputs, inputs):
            t = n.type
            if x.dtype != t.dtype:
                raise BindError(f"input {n.args[0]!r}: expected dtype {t.dtype}, got {x.dtype}")
            if x.device.type != torch.device(t.device).type:
                raise BindError(f"input {n.args[0]!r}: expected device {t.device}, got {x.device}")
            try:
                want = t.concrete_shape(env)
            except KeyError as e:
                raise BindError(f"input {n.args[0]!r}: {e.args[0]}") from None
            if tuple(x.shape) != want:
                raise BindError(f"input {n.args[0]!r}: expected shape [{', '.join(map(str, t.shape))}] = {list(want)}, "
                                f"got {list(x.shape)}")
    return env


def concretize(obj, env: Mapping[str, int]):
    """Replace symbolic dimensions in an argument structure by their values."""
    return map_syms(obj, lambda s: s.eval(env))


def interpret(graph: Graph, *inputs: torch.Tensor, sym_values: Sequence[int] = (),
              env: Optional[dict[str, int]] = None) -> tuple[torch.Tensor, ...]:
    """Outputs of ``graph`` on ``inputs``, computed op by op with torch."""
    if env is None:
        env = bind_symbols(graph, inputs, sym_values, check=False)
    vals: dict[Value, torch.Tensor] = {}
    for n, x in zip(graph.inputs, inputs):
        vals[n.out()] = x
    for n in graph.nodes:
        if n.op == "input":
            continue
        if n.op == "constant":
            vals[n.out()] = graph.constants[n.args[0]]
            continue
        fn = get_op(n.op).resolve(n.overload)
        args = concretize(map_values(n.args, vals.__getitem__), env)
        kwargs = {k: concretize(map_values(v, vals.__getitem__), env) for k, v in n.kwargs}
        out = fn(*args, **kwargs)
        if len(n.types) == 1:
            vals[n.out()] = out[0] if isinstance(out, (tuple, list)) else out
        else:
            for i in range(len(n.types)):
                vals[Value(n, i)] = out[i]
    return tuple(vals[v] for v in graph.outputs)


def random_inputs(graph: Graph, env: Mapping[str, int], device: Optional[str] = None,
                  generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
    """Fresh random tensors matching the graph's inputs (for tests and tuning)."""
    return [random_tensor(n.type, env, device, generator) for n in graph.inputs]


# Views replayed on a random base by :func:`random_operand`, so that an operand has the
# strides it has at run time.
STRIDED_VIEWS = frozenset({"permute", "t", "transpose", "slice", "select", "expand", "unsqueeze", "squeeze", "reshape",
                           "view", "_unsafe_view", "alias", "diagonal", "narrow", "movedim"})
MAX_VIEW_CHAIN = 6


def random_operand(v: Value, env: Mapping[str, int], device: Optional[str] = None,
                   generator: Optional[torch.Generator] = None, _depth: int = 0, values: bool = True) -> torch.Tensor:
    """A random tensor for value ``v`` with the layout ``v`` has when the graph runs:
    where ``v`` is a view (a chain of up to MAX_VIEW_CHAIN views) of another value, a
    random tensor of that value's type seen through the same views. A weight read
    through ``permute`` is then K-major as at run time, not a contiguous [K, N] tensor
    (which a kernel tiling K along the fast axis reads at another speed).

    ``values=False``: floating-point tensors are left uninitialised (a compile needs their
    shapes, strides and alignment only; drawing a 128k x 2k LM-head weight on the host
    takes seconds); integer and bool ones, which launchers may read, stay random."""
    n = v.node
    if _depth < MAX_VIEW_CHAIN and is_strided_view(n):
        try:
            base = random_operand(n.args[0], env, device, generator, _depth + 1, values)
            out = get_op(n.op).resolve(n.overload)(base, *concretize(n.args[1:], env),
                                                   **{k: concretize(a, env) for k, a in n.kwargs})
        except Exception:  # noqa: BLE001 - a base of a symbol env does not bind, a view torch
            out = None     # refuses: a plain random tensor
        if isinstance(out, torch.Tensor) and out.dtype == v.type.dtype \
                and tuple(out.shape) == v.type.concrete_shape(env):
            return out
    if not values and v.type.dtype.is_floating_point:
        return torch.empty(v.type.concrete_shape(env), dtype=v.type.dtype, device=device or v.type.device)
    return random_tensor(v.type, env, device, generator)


def is_strided_view(n) -> bool:
    """``n`` is a view (STRIDED_VIEWS) of its first operand, every other argument a constant."""
    return (n.op in STRIDED_VIEWS and len(n.types) == 1 and bool(n.args) and isinstance(n.args[0], Value)
            and not _holds_value((n.args[1:], n.kwargs)))


def _holds_value(obj) -> bool:
    if isinstance(obj, Value):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_holds_value(o) for o in obj)
    return False


def random_tensor(t: TensorType, env: Mapping[str, int], device: Optional[str] = None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    shape = t.concrete_shape(env)
    dev = device or t.device
    if t.dtype.is_floating_point and torch.device(dev).type == "cuda":
        # NOTE: drawn on the device (a 128k x 2k LM-head weight took seconds on the host):
        # a device generator seeded from the caller's, so operands stay distinct and repeatable.
        g = torch.Generator(device=dev)
        if generator is not None:
            g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator).item()))
        else:
            g.seed()
        return torch.randn(shape, generator=g, dtype=torch.float32, device=dev).to(t.dtype)
    if t.dtype.is_floating_point:
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(t.dtype)
    elif t.dtype == torch.bool:
        x = torch.rand(shape, generator=generator) > 0.5
    else:
        x = torch.randint(0, 16, shape, generator=generator).to(t.dtype)
    return x.to(dev)
