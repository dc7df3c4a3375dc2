"""``@triton.jit`` helper functions that generated modules include when they use them.

Generated kernels use only core ``triton.language`` builtins and these
helpers, never the ``@jit`` functions of ``triton.language.standard``
(``tl.sum``, ``tl.sigmoid``, ``tl.cdiv`` ...): those are decorated when
Triton is imported, so they could not run under an interpreter switched on
later (tests), and core builtins are what both Triton 3.6 and 3.8 agree on.
"""
from __future__ import annotations

HELPERS: dict[str, str] = {
    "_add": '''
@triton.jit
def _add(a, b):
    return a + b
''',
    "_int8_as_float": '''
@triton.jit
def _int8_as_float(q):
    # int8 -> float32, exact, by its bits: 1.5 * 2**23 + q (no I2F: conversions issue at a
    # quarter of the FMA rate, below what a GEMV over int8 weights converts per cycle)
    return (q.to(tl.int32) + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
''',
    "_nibble": '''
@triton.jit
def _nibble(v):
    # v in [0, 15] (int32) -> float32, exact, by its bits: 2**23 + v (no I2F; see _int8_as_float)
    return (v | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
''',
    "_max": '''
@triton.jit
def _max(a, b):
    return tl.maximum(a, b)
''',
    "_min": '''
@triton.jit
def _min(a, b):
    return tl.minimum(a, b)
''',
    "_tanh": '''
@triton.jit
def _tanh(x):
    # tanh from exp, with a series near 0 (no libdevice: the interpreter has none)
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    t = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = x * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * -0.05396825396825397)))
    return tl.where(ax < 0.0625, small, tl.where(x < 0, -t, t))
''',
    "_welford_combine": '''
@triton.jit
def _welford_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    n = n_a + n_b
    delta = mean_b - mean_a
    w_b = tl.where(n == 0, 0.0, n_b / tl.where(n == 0, 1.0, n))
    return mean_a + delta * w_b, m2_a + m2_b + delta * delta * n_a * w_b, n
''',
    "_softmax_combine": '''
@triton.jit
def _softmax_combine(m_a, s_a, m_b, s_b):
    m = tl.maximum(m_a, m_b)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    return m, s_a * tl.exp(m_a - m_safe) + s_b * tl.exp(m_b - m_safe)
''',
}
