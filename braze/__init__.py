"""braze: a kernel-fusion and autotuning compiler for Transformer inference.

    import braze
    fast = braze.jit(model)                       # or @braze.jit on a function
    fast = torch.compile(model, backend="braze")  # the same, through torch.compile
    print(braze.explain(model, *inputs))          # what braze did, pass by pass
"""
from braze.config import Options  # noqa: F401
from braze.api import explain, jit  # noqa: F401

__version__ = "0.1.0"
__all__ = ["jit", "explain", "Options", "__version__"]
