"""Typed values of the braze IR: symbolic dimensions and tensor types.

A dimension is either a Python ``int`` or a :class:`Sym`, an integer
expression over named symbols (``s0``, ``2*s81``), kept in canonical sympy
text so that two equal expressions compare equal.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Union

import sympy
import torch

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "b8",
    torch.complex64: "c64",
    torch.complex128: "c128",
    torch.float8_e4m3fn: "f8e4m3",
    torch.float8_e5m2: "f8e5m2",
}
DTYPES_BY_NAME: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.lru_cache(maxsize=65536)
def _canonical(expr: str) -> str:
    return str(_to_sympy(expr))


@functools.lru_cache(maxsize=65536)
def _to_sympy(expr: str) -> sympy.Expr:
    e = sympy.sympify(expr, locals=_SYMPY_LOCALS)
    # NOTE: symbols are positive integers; sizes are never zero or negative
    # once a dimension is symbolic (Dynamo specialises 0 and 1).
    subs = {s: sympy.Symbol(s.name, integer=True, positive=True) for s in e.free_symbols}
    return e.xreplace(subs)


_SYMPY_LOCALS = {
    "floor": sympy.floor,
    "ceiling": sympy.ceiling,
    "Max": sympy.Max,
    "Min": sympy.Min,
    "Mod": sympy.Mod,
    "FloorDiv": lambda a, b: sympy.floor(a / b),
    "CeilDiv": lambda a, b: sympy.ceiling(a / b),
    "PythonMod": sympy.Mod,
    "IntTrueDiv": lambda a, b: a / b,
}


@functools.lru_cache(maxsize=65536)
def _compiled(expr: str):
    e = _to_sympy(expr)
    names = sorted(s.name for s in e.free_symbols)
    code = sympy.pycode(e, fully_qualified_modules=False)
    fn = eval(f"lambda {', '.join(names)}: {code}", {"math": math, "floor": math.floor, "ceil": math.ceil,
                                                        "min": min, "max": max})
    return names, fn


@dataclass(frozen=True)
class Sym:
    """A symbolic integer dimension, e.g. ``Sym("2*s81")``.

    Build it with :func:`sym` (which folds constants to ``int``).
    """

    expr: str

    def __str__(self) -> str:
        return self.expr

    def __repr__(self) -> str:
        return f"Sym({self.expr!r})"

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s.name for s in _to_sympy(self.expr).free_symbols)

    def eval(self, env: Mapping[str, int]) -> int:
        names, fn = _compiled(self.expr)
        try:
            return int(fn(*(env[n] for n in names)))
        except KeyError as e:
            raise KeyError(f"symbol {e.args[0]} of dimension {self.expr} is not bound") from None

    @property
    def sympy(self) -> sympy.Expr:
        return _to_sympy(self.expr)


Dim = Union[int, Sym]


def sym(expr: Union[str, int, sympy.Expr, Sym]) -> Dim:
    """Canonical dimension from text, an int, a sympy or torch symbolic expression."""
    if isinstance(expr, Sym):
        return expr
    if isinstance(expr, int):
        return expr
    if isinstance(expr, torch.SymInt):
        node = expr.node
        if not node.expr.free_symbols:
            return int(node.expr)
        expr = str(node.expr)
    if isinstance(expr, sympy.Expr):
        expr = str(expr)
    e = _to_sympy(str(expr))
    if e.is_Integer:
        return int(e)
    if not e.free_symbols:
        raise ValueError(f"dimension {expr!r} is not an integer")
    return Sym(str(e))


def eval_dim(d: Dim, env: Mapping[str, int]) -> int:
    return d if isinstance(d, int) else d.eval(env)


def dim_symbols(d: Dim) -> frozenset[str]:
    return frozenset() if isinstance(d, int) else d.symbols


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return sym(_to_sympy(str(a)) * _to_sympy(str(b)))


def dims_equal(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return sympy.simplify(_to_sympy(str(a)) - _to_sympy(str(b))) == 0


@dataclass(frozen=True)
class TensorType:
    """Shape (ints and symbolic dims), dtype and device of a tensor value."""

    shape: tuple[Dim, ...]
    dtype: torch.dtype
    device: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.shape, tuple):
            object.__setattr__(self, "shape", tuple(self.shape))
        for d in self.shape:
            if not isinstance(d, (int, Sym)) or isinstance(d, bool):
                raise TypeError(f"dimension {d!r} of shape {self.shape} is neither int nor Sym")
        if not isinstance(self.dtype, torch.dtype):
            raise TypeError(f"dtype {self.dtype!r} is not a torch.dtype")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for d in self.shape:
            out |= dim_symbols(d)
        return out

    @property
    def numel(self) -> Dim:
        n: Dim = 1
        for d in self.shape:
            n = dim_mul(n, d)
        return n

    def concrete_shape(self, env: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(eval_dim(d, env) for d in self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype, self.device)

    def with_dtype(self, dtype: torch.dtype) -> "TensorType":
        return TensorType(self.shape, dtype, self.device)

    def __str__(self) -> str:
        return f"{DTYPE_NAMES.get(self.dtype, str(self.dtype))}[{', '.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(t: torch.Tensor) -> "TensorType":
        """Type of a real or fake tensor (symbolic sizes become Syms)."""
        return TensorType(tuple(sym(d) if not isinstance(d, int) else d for d in t.shape), t.dtype,
                          device_name(t.device))


def device_name(device: Union[torch.device, str]) -> str:
    d = torch.device(device)
    return d.type if d.index is None or d.type == "cpu" else f"{d.type}:{d.index}"
