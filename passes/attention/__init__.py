"""Attention specialisation: attention however a model writes it, as one op.

The entry is :func:`specialize_attention` (``specialize.py``): it finds
``matmul(softmax(scale * q @ k^T + mask), v)`` chains and SDPA calls and
rewrites each into one ``attention`` op. The modules below it, in the order
they build on each other (no module imports a later one):

- ``layout.py``: operands through views (expand, reshape, GQA's repeat_kv)
- ``affine.py``: index expressions of masks, as affine forms
- ``masks.py``: masks as predicates (causal, window, padding)
- ``scores.py``: what feeds the softmax, read as a scaled q@k^T plus terms
- ``alibi.py``: ALiBi slopes among those terms
- ``specialize.py``: the rules, the pass
"""
from braze.passes.attention.specialize import find_attention, specialize_attention  # noqa: F401
