"""Vectorisable transcendental functions for the LLVM (CPU) target.

TVM lowers ``exp``, ``tanh``, ``erf`` and ``sigmoid`` on LLVM to scalar libm
calls, which break vectorisation (measured on this machine: ``te.exp`` over
1M floats 2.1 ms, 2.4x slower than torch). These versions use only
arithmetic, comparisons and bit casts, so a vectorised loop stays vectorised.

Accuracy (float32, checked in ``tests/codegen/test_tvm_fastmath.py`` against
torch over wide ranges): exp ~2 ulp; tanh and sigmoid ~1e-7 absolute;
erf ~2e-7 absolute. float64 values use the TVM intrinsics (exact libm).
On CUDA the intrinsics are used as they are (CUDA's expf & co. are fast).
"""
from __future__ import annotations

import math

from tvm import te, tirx


def dt(e) -> str:
    """The dtype name of a TIR expression."""
    return str(e.ty.dtype)


def _c(v: float, dtype: str = "float32"):
    return tirx.const(v, dtype)


def let(value, body, name: str = "t"):
    """``body(v)`` with ``v`` bound to ``value`` once (TIR Let), so a value used
    several times is computed once."""
    if isinstance(value, (tirx.Var, tirx.FloatImm, tirx.IntImm)):
        return body(value)
    v = tirx.Var(name, dt(value))
    return tirx.Let(v, value, body(v))


def bind(values, body, name: str = "v"):
    """``body(*vars)`` with each of ``values`` let-bound (see :func:`let`)."""
    values = list(values)

    def go(i, bound):
        if i == len(values):
            return body(*bound)
        return let(values[i], lambda v: go(i + 1, bound + [v]), f"{name}{i}")
    return go(0, [])


def _poly(x, coeffs):
    """Horner: coeffs from the highest degree down."""
    acc = _c(coeffs[0], dt(x))
    for c in coeffs[1:]:
        acc = acc * x + _c(c, dt(x))
    return acc


def exp(x):
    """e**x for float32: Cephes-style range reduction and degree-6 polynomial."""
    if dt(x) != "float32":
        return te.exp(x)
    return let(x, _exp, "ex")


def _exp(x):
    hi, lo = 88.72283905206835, -86.6

    def with_n(n):
        def with_r(r):
            p = _poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                          5.0000001201e-1])
            y = p * r * r + r + _c(1.0)
            # 2**n as float bits; (n + 126) keeps n = 128 finite, times 2 below.
            bits = (n.astype("int32") + tirx.const(126, "int32")) * tirx.const(1 << 23, "int32")
            y = y * tirx.reinterpret("float32", bits) * _c(2.0)
            y = tirx.Select(x > _c(hi), _c(math.inf), y)
            y = tirx.Select(x < _c(lo), _c(0.0), y)
            return tirx.Select(tirx.isnan(x), x, y)  # NaN stays NaN
        return let(xc - n * _c(0.693359375) - n * _c(-2.12194440e-4), with_r, "er")

    xc = tirx.max(tirx.min(x, _c(hi)), _c(lo))
    return let(tirx.floor(xc * _c(1.4426950408889634) + _c(0.5)), with_n, "en")


def sigmoid(x):
    if dt(x) != "float32":
        return te.sigmoid(x)
    return _c(1.0) / (_c(1.0) + exp(-x))


def tanh(x):
    """tanh via exp(-2|x|), with a Taylor polynomial near zero (no cancellation)."""
    if dt(x) != "float32":
        return te.tanh(x)
    return let(x, _tanh, "tx")


def _tanh(x):
    a = tirx.abs(x)

    def body(e):
        big = (_c(1.0) - e) / (_c(1.0) + e)
        small = x * _poly(x * x, [-17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0, 1.0])
        signed = tirx.Select(x < _c(0.0), -big, big)
        return tirx.Select(a < _c(0.0625), small, signed)
    return let(exp(a * _c(-2.0)), body, "te")


def erf(x):
    """Taylor series below 0.5, Abramowitz-Stegun 7.1.26 above (abs error < 2e-7)."""
    if dt(x) != "float32":
        return te.erf(x)
    return let(x, _erf, "fx")


def _erf(x):
    a = tirx.abs(x)
    x2 = x * x
    # 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360)
    small = x * _poly(x2, [1.0 / 9360.0, -1.0 / 1320.0, 1.0 / 216.0, -1.0 / 42.0, 1.0 / 10.0, -1.0 / 3.0, 1.0]) \
        * _c(2.0 / math.sqrt(math.pi))
    big = let(_c(1.0) / (_c(1.0) + _c(0.3275911) * a), lambda t: _c(1.0) - t * _poly(
        t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]) * exp(-x2), "et")
    signed = let(big, lambda b: tirx.Select(x < _c(0.0), -b, b), "eb")
    return tirx.Select(a < _c(0.5), small, signed)


def log(x):
    return te.log(x)


class Math:
    """The math functions of one target kind."""

    def __init__(self, target_kind: str):
        fast = target_kind == "llvm"
        self.exp = exp if fast else te.exp
        self.tanh = tanh if fast else te.tanh
        self.erf = erf if fast else te.erf
        self.sigmoid = sigmoid if fast else te.sigmoid
        self.log = te.log
