"""Type rules: the output types of an op from the types of its operands.

An op may declare its own rule (``OpDef.infer``); every other op gets the
generic rule: run the op's own meta implementation on fake tensors whose
symbolic sizes come from a fresh ``ShapeEnv``, and read the symbolic sizes
of the result back as :class:`Sym`. Results are cached by the op and the
types of its operands, so repeated layers cost one evaluation.
"""
from __future__ import annotations

import functools
from typing import Any

import sympy
import torch

from braze.ir.graph import Value, map_syms, map_values
from braze.ir.registry import get_op
from braze.ir.types import Sym, TensorType, device_name, dims_equal, sym


class TypeInferenceError(TypeError):
    pass


def infer_types(op: str, args: tuple, kwargs: tuple = (), overload: str = "") -> tuple[TensorType, ...]:
    """Output types of ``op(*args, **kwargs)``; raises TypeInferenceError naming the op."""
    opdef = get_op(op)
    if opdef.infer is not None:
        return tuple(opdef.infer(*args, **dict(kwargs)))
    key_args = map_values(args, lambda v: v.type)
    key_kwargs = map_values(tuple(kwargs), lambda v: v.type)
    try:
        return _infer_cached(op, overload, key_args, key_kwargs)
    except TypeError as e:  # unhashable argument: infer without the cache
        if "unhashable" not in str(e):
            raise
        return _infer(op, overload, key_args, key_kwargs)


@functools.lru_cache(maxsize=16384)
def _infer_cached(op, overload, args, kwargs):
    return _infer(op, overload, args, kwargs)


def _infer(op: str, overload: str, args: tuple, kwargs: tuple) -> tuple[TensorType, ...]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    opdef = get_op(op)
    fn = opdef.resolve(overload)
    symbols = _collect_symbols((args, kwargs))
    shape_env, to_symint, back = _symbolic_env(symbols) if symbols else (None, {}, {})
    mode = FakeTensorMode(shape_env=shape_env, allow_non_fake_inputs=True)

    def dim(d):
        return to_symint[d.expr] if isinstance(d, Sym) and d.expr in to_symint else (
            _eval_sym(d, to_symint) if isinstance(d, Sym) else d)

    def make(x):
        if isinstance(x, TensorType):
            return torch.empty([dim(d) for d in x.shape], dtype=x.dtype, device=x.device)
        if isinstance(x, tuple):
            return [make(o) for o in x]
        if isinstance(x, Sym):
            return dim(x)
        return x

    try:
        with mode:
            fargs = [make(a) for a in args]
            fkwargs = {k: make(v) for k, v in kwargs}
            out = fn(*fargs, **fkwargs)
    except Exception as e:  # noqa: BLE001 - re-raised with the op named
        sig = ", ".join(str(a) for a in args)
        raise TypeInferenceError(f"{op}({sig}): {type(e).__name__}: {e}") from e
    outs = out if isinstance(out, (tuple, list)) else (out,)
    types = []
    for o in outs:
        if not isinstance(o, torch.Tensor):
            raise TypeInferenceError(f"{op} returned a non-tensor {type(o).__name__}")
        shape = tuple(_dim_back(d, back) for d in o.shape)
        types.append(TensorType(shape, o.dtype, device_name(o.device)))
    return tuple(types)


def _collect_symbols(obj: Any) -> set[str]:
    out: set[str] = set()

    def visit(x):
        if isinstance(x, TensorType):
            out.update(x.symbols)
        elif isinstance(x, Sym):
            out.update(x.symbols)
        elif isinstance(x, tuple):
            for o in x:
                visit(o)

    visit(obj)
    return out


# Distinct, largish hints so that no accidental equality or 0/1
# specialisation is guarded on.
_HINTS = [1031, 1033, 1039, 1049, 1051, 1061, 1063, 1069, 1087, 1091, 1093, 1097, 1103, 1109, 1117, 1123]


def _symbolic_env(symbols: set[str]):
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    env = ShapeEnv()
    to_symint: dict[str, torch.SymInt] = {}
    back: dict[sympy.Symbol, sympy.Symbol] = {}
    for i, name in enumerate(sorted(symbols)):
        hint = _HINTS[i % len(_HINTS)] + 1000 * (i // len(_HINTS))
        src = ConstantSource(f"braze_{name}")
        s = env.create_symbol(hint, src, dynamic_dim=DimDynamic.DYNAMIC)
        to_symint[name] = env.create_symintnode(s, hint=hint, source=src)
        back[s] = sympy.Symbol(name, integer=True, positive=True)
    return env, to_symint, back


def _eval_sym(d: Sym, to_symint: dict) -> Any:
    """A compound symbolic dimension as a SymInt expression of the base symbols."""
    expr = d.sympy
    return _sympy_to_symint(expr, to_symint)


def _sympy_to_symint(e, to_symint):
    if e.is_Symbol:
        return to_symint[e.name]
    if e.is_Integer:
        return int(e)
    args = [_sympy_to_symint(a, to_symint) for a in e.args]
    if e.is_Add:
        return functools.reduce(lambda a, b: a + b, args)
    if e.is_Mul:
        return functools.reduce(lambda a, b: a * b, args)
    if e.is_Pow and e.args[1].is_Integer and int(e.args[1]) > 0:
        return functools.reduce(lambda a, b: a * b, [args[0]] * int(e.args[1]))
    if isinstance(e, sympy.floor) and e.args[0].is_Mul:
        num, den = e.args[0].as_numer_denom()
        return _sympy_to_symint(num, to_symint) // _sympy_to_symint(den, to_symint)
    if isinstance(e, sympy.Max):
        return functools.reduce(lambda a, b: torch.sym_max(a, b), args)
    if isinstance(e, sympy.Min):
        return functools.reduce(lambda a, b: torch.sym_min(a, b), args)
    raise TypeInferenceError(f"cannot rebuild symbolic dimension {e}")


def _dim_back(d, back):
    if isinstance(d, int):
        return d
    expr = d.node.expr
    if not expr.free_symbols:
        return int(expr)
    return sym(expr.xreplace(back))


def check_types(op: str, args: tuple, kwargs: tuple, overload: str, declared: tuple[TensorType, ...]) -> str:
    """Empty string when ``declared`` matches the rule, else the mismatch."""
    inferred = infer_types(op, args, kwargs, overload)
    if len(inferred) != len(declared):
        return f"declares {len(declared)} outputs, its type rule gives {len(inferred)}"
    for i, (a, b) in enumerate(zip(declared, inferred)):
        if a.dtype != b.dtype:
            return f"output {i} declares dtype {a.dtype}, its type rule gives {b.dtype}"
        if len(a.shape) != len(b.shape):
            return f"output {i} declares shape {list(a.shape)}, its type rule gives {list(b.shape)}"

        if not all(dims_equal(x, y) for x, y in zip(a.shape, b.shape)):
            return f"output {i} declares shape {[str(d) for d in a.shape]}, its type rule gives {[str(d) for d in b.shape]}"
        if a.device.split(":")[0] != b.device.split(":")[0]:
            return f"output {i} declares device {a.device}, its type rule gives {b.device}"
    return ""


__all__ = ["infer_types", "check_types", "TypeInferenceError", "Value", "map_syms"]
