"""The expression table: each POINTWISE op as a Triton expression.

A handler gets the op's arguments bound by name (tensor operands already
evaluated to :class:`TV` register values at the right index, scalars as
Python values) and returns the result as a TV. Type promotion follows the
IR: arithmetic is done in the compute type of the node's output dtype
(``float16``/``bfloat16`` compute in ``float32``; the value is rounded only
at explicit casts and at the final store, like Inductor), comparisons in the
torch-promoted type of their operands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch

from braze.compiler.codegen.triton.indexing import Unsupported

HALF = (torch.float16, torch.bfloat16)
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

TL: dict[torch.dtype, str] = {
    torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16",
    torch.float64: "tl.float64", torch.int64: "tl.int64", torch.int32: "tl.int32", torch.int16: "tl.int16",
    torch.int8: "tl.int8", torch.uint8: "tl.uint8", torch.bool: "tl.int1",
}


def compute_dtype(dt: torch.dtype) -> torch.dtype:
    """The register dtype a value of IR dtype ``dt`` is computed in."""
    if dt not in TL:
        raise Unsupported(f"dtype {dt} has no Triton type here")
    return torch.float32 if dt in HALF else dt


@dataclass(frozen=True)
class TV:
    """A value in registers: code (a variable or literal), its register dtype,
    the IR dtype it stands for, the kernel axes it varies over, and whether it
    holds exactly a value of the IR dtype (False after fp32 math on a half value)."""

    code: str
    dtype: torch.dtype
    ir: torch.dtype
    axes: frozenset = frozenset()
    exact: bool = True


def literal(v: Any, dtype: Optional[torch.dtype] = None) -> str:
    """Code of a Python scalar (as a value of ``dtype`` when given)."""
    if isinstance(v, bool) or dtype == torch.bool:
        return "1" if v else "0"
    if dtype is not None and not dtype.is_floating_point:
        if isinstance(v, float) and not v.is_integer():
            raise Unsupported(f"non-integer scalar {v} in integer arithmetic")
        return str(int(v))
    if isinstance(v, int) and dtype is None:
        return str(v)
    f = float(v)
    if math.isnan(f):
        return 'float("nan")'
    if math.isinf(f):
        return 'float("inf")' if f > 0 else 'float("-inf")'
    return repr(f)


def promote(*xs) -> torch.dtype:
    """torch's result dtype of operands (TVs as tensors of their IR dtype, Python scalars)."""
    args = []
    for x in xs:
        if isinstance(x, TV):
            args.append(torch.empty((1,) if x.axes else (), dtype=x.ir, device="meta"))
        elif isinstance(x, (bool, int, float)):
            args.append(x)
    if not args:
        return torch.float32
    out = args[0] if isinstance(args[0], torch.Tensor) else torch.tensor(args[0]).to("meta")
    dt = out.dtype
    for a in args[1:]:
        dt = torch.result_type(torch.empty((1,) if out.dim() else (), dtype=dt, device="meta"), a)
    return dt


class Ctx:
    """What a handler may ask of the emitter (see ``emit.Emitter``)."""

    def tmp(self, code: str, dtype: torch.dtype, ir: torch.dtype, axes: frozenset, exact: bool = False) -> TV: ...

    def helper(self, name: str) -> str: ...


def cast(x, dtype: torch.dtype) -> str:
    """Code of ``x`` (TV or scalar) as a ``dtype`` register value."""
    if not isinstance(x, TV):
        return literal(x, dtype)
    if x.dtype == dtype:
        return x.code
    if dtype == torch.bool:
        return f"({x.code} != 0)"
    return f"{x.code}.to({TL[dtype]})"


def axes_of(*xs) -> frozenset:
    out: frozenset = frozenset()
    for x in xs:
        if isinstance(x, TV):
            out |= x.axes
    return out


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class OpSpec:
    params: tuple[str, ...]            # positional parameter names
    fn: Callable                       # fn(ctx, a: dict, out_dtype) -> TV
    defaults: Mapping[str, Any]
    check: Optional[Callable] = None   # check(node) -> reason or "" (static support check)


TABLE: dict[str, OpSpec] = {}


def op(names: str, params: tuple[str, ...] = ("self",), check=None, **defaults):
    """Register ``fn`` for the ops in ``names``; scalar parameters with defaults
    follow ``self`` positionally unless ``params`` says otherwise."""
    if params == ("self",) and defaults:
        params = ("self",) + tuple(defaults)

    def deco(fn):
        for n in names.split():
            TABLE[n] = OpSpec(params, fn, defaults, check)
        return fn
    return deco


def _res(ctx: Ctx, code: str, out: torch.dtype, *xs, ir: Optional[torch.dtype] = None) -> TV:
    return ctx.tmp(code, compute_dtype(out), ir or out, axes_of(*xs))


def _float_out(out: torch.dtype) -> torch.dtype:
    if not out.is_floating_point:
        raise Unsupported(f"expected a floating-point result, got {out}")
    return compute_dtype(out)


def unary(names: str, template: str, float_only: bool = True):
    """An op ``f(x)`` computed as ``template.format(x=...)`` in the output's compute type."""
    @op(names)
    def fn(ctx, a, out):
        ct = _float_out(out) if float_only else compute_dtype(out)
        x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"])) if isinstance(a["self"], TV) else a["self"]
        code = template.format(x=x.code if isinstance(x, TV) else literal(x, ct))
        if "_tanh(" in code:
            ctx.helper("_tanh")
        return _res(ctx, code, out, a["self"])
    return fn


unary("exp", "tl.exp({x})")
unary("exp2", "tl.exp2({x})")
unary("expm1", "tl.where(tl.abs({x}) < 1e-5, {x} + 0.5 * {x} * {x}, tl.exp({x}) - 1.0)")
unary("log", "tl.log({x})")
unary("log2", "tl.log2({x})")
unary("log10", "(tl.log({x}) * 0.4342944819032518)")
unary("log1p", "tl.where(tl.abs({x}) < 1e-4, {x} * (1.0 - 0.5 * {x}), tl.log(1.0 + {x}))")
unary("sqrt", "tl.sqrt({x})")
unary("rsqrt", "tl.rsqrt({x})")
unary("sin", "tl.sin({x})")
unary("cos", "tl.cos({x})")
unary("tan", "(tl.sin({x}) / tl.cos({x}))")
unary("tanh", "_tanh({x})")
unary("sinh", "(0.5 * (tl.exp({x}) - tl.exp(-{x})))")
unary("cosh", "(0.5 * (tl.exp({x}) + tl.exp(-{x})))")
unary("atanh", "(0.5 * tl.log((1.0 + {x}) / (1.0 - {x})))")
unary("asinh", "tl.where({x} < 0, -tl.log(-{x} + tl.sqrt({x} * {x} + 1.0)), tl.log({x} + tl.sqrt({x} * {x} + 1.0)))")
unary("acosh", "tl.log({x} + tl.sqrt({x} * {x} - 1.0))")
unary("sigmoid", "(1.0 / (1.0 + tl.exp(-{x})))")
unary("silu", "({x} / (1.0 + tl.exp(-{x})))")
unary("mish", "({x} * _tanh(tl.where({x} > 20.0, {x}, tl.log(1.0 + tl.exp({x})))))")
unary("erf", "tl.erf({x})")
unary("erfc", "(1.0 - tl.erf({x}))")
unary("reciprocal", "(1.0 / {x})")
unary("floor", "tl.floor({x})")
unary("ceil", "tl.ceil({x})")
unary("trunc", "tl.where({x} < 0, tl.ceil({x}), tl.floor({x}))")
unary("frac", "({x} - tl.where({x} < 0, tl.ceil({x}), tl.floor({x})))")
unary("relu6", "tl.minimum(tl.maximum({x}, 0.0), 6.0)")
unary("hardsigmoid", "(tl.minimum(tl.maximum({x} + 3.0, 0.0), 6.0) / 6.0)")
unary("hardswish", "({x} * tl.minimum(tl.maximum({x} + 3.0, 0.0), 6.0) / 6.0)")
unary("square", "({x} * {x})", float_only=False)
unary("neg", "(-{x})", float_only=False)


@op("abs")
def _abs(ctx, a, out):
    ct = compute_dtype(out)
    x = a["self"]
    if ct == torch.bool:
        return _res(ctx, x.code, out, x)
    return _res(ctx, f"tl.abs({cast(x, ct)})", out, x)


@op("relu")
def _relu(ctx, a, out):
    ct = compute_dtype(out)
    return _res(ctx, f"tl.maximum({cast(a['self'], ct)}, {literal(0, ct)})", out, a["self"])


@op("sign")
def _sign(ctx, a, out):
    ct = compute_dtype(out)
    x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    one, zero = literal(1, ct), literal(0, ct)
    return _res(ctx, f"tl.where({x.code} > {zero}, {one}, tl.where({x.code} < {zero}, -{one}, {zero}))", out, x)


@op("gelu", approximate="none")
def _gelu(ctx, a, out):
    ct = _float_out(out)
    x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    if a["approximate"] == "tanh":
        ctx.helper("_tanh")
        inner = f"0.7978845608028654 * ({x.code} + 0.044715 * {x.code} * {x.code} * {x.code})"
        return _res(ctx, f"0.5 * {x.code} * (1.0 + _tanh({inner}))", out, x)
    if a["approximate"] != "none":
        raise Unsupported(f"gelu approximate={a['approximate']!r}")
    return _res(ctx, f"0.5 * {x.code} * (1.0 + tl.erf({x.code} * 0.7071067811865476))", out, x)


@op("leaky_relu", negative_slope=0.01)
def _leaky(ctx, a, out):
    ct = _float_out(out)
    x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    return _res(ctx, f"tl.where({x.code} > 0, {x.code}, {x.code} * {literal(a['negative_slope'], ct)})", out, x)


@op("elu", alpha=1.0, scale=1.0, input_scale=1.0)
def _elu(ctx, a, out):
    ct = _float_out(out)
    x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    al, sc, isc = (literal(a[k], ct) for k in ("alpha", "scale", "input_scale"))
    return _res(ctx, f"{sc} * tl.where({x.code} > 0, {x.code}, {al} * (tl.exp({x.code} * {isc}) - 1.0))", out, x)


@op("softplus", beta=1.0, threshold=20.0)
def _softplus(ctx, a, out):
    ct = _float_out(out)
    x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    b, t = literal(a["beta"], ct), literal(a["threshold"], ct)
    return _res(ctx, f"tl.where({x.code} * {b} > {t}, {x.code}, tl.log(1.0 + tl.exp({x.code} * {b})) / {b})", out, x)


@op("hardtanh", min_val=-1.0, max_val=1.0)
def _hardtanh(ctx, a, out):
    ct = compute_dtype(out)
    return _res(ctx, f"tl.minimum(tl.maximum({cast(a['self'], ct)}, {literal(a['min_val'], ct)}), "
                     f"{literal(a['max_val'], ct)})", out, a["self"])


@op("isnan")
def _isnan(ctx, a, out):
    x = a["self"]
    return _res(ctx, f"({x.code} != {x.code})", out, x) if x.dtype.is_floating_point else _res(ctx, "0", out)


@op("isinf")
def _isinf(ctx, a, out):
    x = a["self"]
    return _res(ctx, f"(tl.abs({x.code}) == float(\"inf\"))", out, x) if x.dtype.is_floating_point else _res(ctx, "0", out)


@op("isfinite")
def _isfinite(ctx, a, out):
    x = a["self"]
    if not x.dtype.is_floating_point:
        return _res(ctx, "1", out)
    return _res(ctx, f"(({x.code} == {x.code}) & (tl.abs({x.code}) != float(\"inf\")))", out, x)


# --------------------------------------------------------------------------- binary arithmetic
def _binary(ctx, a, out, template: str, b_key="other"):
    ct = compute_dtype(out)
    x, y = a["self"], a[b_key]
    return _res(ctx, template.format(x=cast(x, ct), y=cast(y, ct)), out, x, y)


def _scaled(ctx, y, alpha, ct):
    if alpha == 1:
        return cast(y, ct)
    return f"({cast(y, ct)} * {literal(alpha, ct)})"


@op("add", ("self", "other"), alpha=1)
def _add(ctx, a, out):
    ct = compute_dtype(out)
    if ct == torch.bool:
        return _res(ctx, f"({cast(a['self'], ct)} | {cast(a['other'], ct)})", out, a["self"], a["other"])
    return _res(ctx, f"({cast(a['self'], ct)} + {_scaled(ctx, a['other'], a['alpha'], ct)})", out, a["self"], a["other"])


@op("sub", ("self", "other"), alpha=1)
def _sub(ctx, a, out):
    ct = compute_dtype(out)
    return _res(ctx, f"({cast(a['self'], ct)} - {_scaled(ctx, a['other'], a['alpha'], ct)})", out, a["self"], a["other"])


@op("rsub", ("self", "other"), alpha=1)
def _rsub(ctx, a, out):
    ct = compute_dtype(out)
    return _res(ctx, f"({cast(a['other'], ct)} - {_scaled(ctx, a['self'], a['alpha'], ct)})", out, a["self"], a["other"])


@op("mul", ("self", "other"))
def _mul(ctx, a, out):
    ct = compute_dtype(out)
    if ct == torch.bool:
        return _binary(ctx, a, out, "({x} & {y})")
    return _binary(ctx, a, out, "({x} * {y})")


@op("div", ("self", "other"), rounding_mode=None)
def _div(ctx, a, out):
    ct = compute_dtype(out)
    mode = a["rounding_mode"]
    if not ct.is_floating_point:
        raise Unsupported("integer division")
    q = f"({cast(a['self'], ct)} / {cast(a['other'], ct)})"
    if mode == "floor":
        q = f"tl.floor({q})"
    elif mode == "trunc":
        q = f"tl.where({q} < 0, tl.ceil({q}), tl.floor({q}))"
    elif mode is not None:
        raise Unsupported(f"div rounding_mode={mode!r}")
    return _res(ctx, q, out, a["self"], a["other"])


@op("floor_divide", ("self", "other"))
def _floordiv(ctx, a, out):
    if not out.is_floating_point:
        raise Unsupported("integer floor_divide")
    return _binary(ctx, a, out, "tl.floor({x} / {y})")


@op("remainder", ("self", "other"))
def _remainder(ctx, a, out):
    if not out.is_floating_point:
        raise Unsupported("integer remainder")
    return _binary(ctx, a, out, "({x} - tl.floor({x} / {y}) * {y})")


@op("fmod", ("self", "other"))
def _fmod(ctx, a, out):
    if not out.is_floating_point:
        raise Unsupported("integer fmod")
    ct = compute_dtype(out)
    x = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    y = ctx.tmp(cast(a["other"], ct), ct, out, axes_of(a["other"]))
    q = f"({x.code} / {y.code})"
    return _res(ctx, f"({x.code} - tl.where({q} < 0, tl.ceil({q}), tl.floor({q})) * {y.code})", out, x, y)


@op("maximum", ("self", "other"))
def _maximum(ctx, a, out):
    return _binary(ctx, a, out, "tl.maximum({x}, {y})")


@op("minimum", ("self", "other"))
def _minimum(ctx, a, out):
    return _binary(ctx, a, out, "tl.minimum({x}, {y})")


def _pow_int(x: str, n: int) -> str:
    if n == 0:
        return "1.0"
    body = " * ".join([x] * abs(n))
    return f"({body})" if n > 0 else f"(1.0 / ({body}))"


@op("pow", ("self", "exponent"))
def _pow(ctx, a, out):
    ct = _float_out(out) if out.is_floating_point else compute_dtype(out)
    base, e = a["self"], a["exponent"]
    if isinstance(base, TV) and not isinstance(e, TV):
        x = ctx.tmp(cast(base, ct), ct, out, axes_of(base))
        e = float(e)
        if e.is_integer() and abs(e) <= 8:
            if e < 0 and not ct.is_floating_point:
                raise Unsupported("integer pow with a negative exponent")
            return _res(ctx, _pow_int(x.code, int(e)), out, x)
        if not ct.is_floating_point:
            raise Unsupported("integer pow with a large exponent")
        if e == 0.5:
            return _res(ctx, f"tl.sqrt({x.code})", out, x)
        if e == -0.5:
            return _res(ctx, f"tl.rsqrt({x.code})", out, x)
        if e.is_integer():  # |x|^e with the sign of x for odd e
            mag = f"tl.exp2({literal(e, ct)} * tl.log2(tl.abs({x.code})))"
            return _res(ctx, f"tl.where({x.code} < 0, -{mag}, {mag})" if int(e) % 2 else mag, out, x)
        return _res(ctx, f"tl.exp2({literal(e, ct)} * tl.log2({x.code}))", out, x)
    if not isinstance(base, TV) and isinstance(e, TV):
        b = float(base)
        if b <= 0 or not ct.is_floating_point:
            raise Unsupported(f"pow with scalar base {base}")
        return _res(ctx, f"tl.exp2({cast(e, ct)} * {literal(math.log2(b), ct)})", out, e)
    raise Unsupported("pow with a tensor exponent")


@op("clamp", ("self", "min", "max"), min=None, max=None)
@op("clamp_min", ("self", "min"), min=None, max=None)
@op("clamp_max", ("self", "max"), min=None, max=None)
def _clamp(ctx, a, out):
    ct = compute_dtype(out)
    code = cast(a["self"], ct)
    if a.get("min") is not None:
        code = f"tl.maximum({code}, {cast(a['min'], ct)})"
    if a.get("max") is not None:
        code = f"tl.minimum({code}, {cast(a['max'], ct)})"
    return _res(ctx, code, out, a["self"], a.get("min"), a.get("max"))


@op("lerp", ("self", "end", "weight"))
def _lerp(ctx, a, out):
    ct = _float_out(out)
    s = ctx.tmp(cast(a["self"], ct), ct, out, axes_of(a["self"]))
    return _res(ctx, f"({s.code} + {cast(a['weight'], ct)} * ({cast(a['end'], ct)} - {s.code}))", out, s, a["end"],
                a["weight"])


# --------------------------------------------------------------------------- comparisons and logic
def _compare(sym: str):
    def fn(ctx, a, out):
        x, y = a["self"], a["other"]
        ct = compute_dtype(promote(x, y))
        return ctx.tmp(f"({cast(x, ct)} {sym} {cast(y, ct)})", torch.bool, torch.bool, axes_of(x, y))
    return fn


for _name, _sym in (("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")):
    op(_name, ("self", "other"))(_compare(_sym))


def _logic(sym: str):
    def fn(ctx, a, out):
        x, y = a["self"], a["other"]
        return ctx.tmp(f"({cast(x, torch.bool)} {sym} {cast(y, torch.bool)})", torch.bool, torch.bool, axes_of(x, y))
    return fn


op("logical_and", ("self", "other"))(_logic("&"))
op("logical_or", ("self", "other"))(_logic("|"))
op("logical_xor", ("self", "other"))(_logic("^"))


@op("logical_not")
def _not(ctx, a, out):
    x = a["self"]
    return ctx.tmp(f"({cast(x, torch.bool)} == 0)", torch.bool, torch.bool, axes_of(x))


def _bitwise(sym: str):
    def fn(ctx, a, out):
        ct = compute_dtype(out)
        if ct.is_floating_point:
            raise Unsupported("bitwise op on floats")
        return _binary(ctx, a, out, "({x} %s {y})" % sym)
    return fn


op("bitwise_and", ("self", "other"))(_bitwise("&"))
op("bitwise_or", ("self", "other"))(_bitwise("|"))
op("bitwise_xor", ("self", "other"))(_bitwise("^"))


@op("bitwise_not")
def _bitwise_not(ctx, a, out):
    x = a["self"]
    if out == torch.bool:
        return ctx.tmp(f"({cast(x, torch.bool)} == 0)", torch.bool, torch.bool, axes_of(x))
    if out.is_floating_point:
        raise Unsupported("bitwise_not on floats")
    return _res(ctx, f"(~{cast(x, compute_dtype(out))})", out, x)


@op("where", ("condition", "self", "other"))
def _where(ctx, a, out):
    ct = compute_dtype(out)
    c = a["condition"]
    return _res(ctx, f"tl.where({cast(c, torch.bool)}, {cast(a['self'], ct)}, {cast(a['other'], ct)})", out, c,
                a["self"], a["other"])


@op("masked_fill", ("self", "mask", "value"))
def _masked_fill(ctx, a, out):
    ct = compute_dtype(out)
    m = a["mask"]
    return _res(ctx, f"tl.where({cast(m, torch.bool)}, {cast(a['value'], ct)}, {cast(a['self'], ct)})", out, m,
                a["self"], a["value"])


# --------------------------------------------------------------------------- casts
def _to_copy(ctx, a, out):
    """Round to the source's IR dtype if the register holds more precision, then to the target."""
    x = a["self"]
    if not isinstance(x, TV):
        raise Unsupported("cast of a scalar")
    code, dt = x.code, x.dtype
    if x.ir in HALF and not x.exact:
        code = f"{code}.to({TL[x.ir]}).to(tl.float32)"
    ct = compute_dtype(out)
    if out in HALF:
        if x.ir != out:
            code = f"{code}.to({TL[out]}).to(tl.float32)" if dt != out else f"{code}.to(tl.float32)"
        return ctx.tmp(code, ct, out, x.axes, exact=True)
    if out == torch.bool:
        return ctx.tmp(f"({code} != 0)", torch.bool, torch.bool, x.axes, exact=True)
    if dt != ct:
        code = f"{code}.to({TL[ct]})"
    return ctx.tmp(code, ct, out, x.axes, exact=True)


op("_to_copy prims::convert_element_type", ("self", "dtype"))(_to_copy)


def supported_op(node) -> str:
    """Empty string when the table can generate ``node``, else the reason."""
    spec = TABLE.get(node.op)
    if spec is None:
        return f"no Triton expression for op {node.op}"
    for t in node.types:
        if t.dtype not in TL:
            return f"{node.op} produces {t.dtype}"
    for v in node.inputs:
        if v.type.dtype not in TL:
            return f"{node.op} reads {v.type.dtype}"
    kw = dict(node.kwargs)
    if node.op == "_to_copy":
        extra = set(kw) - {"dtype", "layout", "device", "pin_memory", "non_blocking", "memory_format"}
        if extra:
            return f"_to_copy with {sorted(extra)}"
    if spec.check is not None:
        return spec.check(node) or ""
    return ""


def bind(node, values: list, kwvalues: Mapping[str, Any]) -> dict:
    """The op's arguments by name: ``values``/``kwvalues`` are the evaluated args."""
    spec = TABLE[node.op]
    out = dict(spec.defaults)
    for name, v in zip(spec.params, values):
        out[name] = v
    for k, v in kwvalues.items():
        if k in ("dtype", "layout", "device", "pin_memory", "non_blocking", "memory_format") and node.op == "_to_copy":
            continue
        out[k] = v
    if len(values) > len(spec.params):
        extra = values[len(spec.params):]
        raise Unsupported(f"{node.op}: unexpected extra arguments {extra!r}")
    return out
