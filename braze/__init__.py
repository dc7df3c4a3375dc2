"""braze: a kernel-fusion and autotuning compiler for Transformer inference.

    import braze
    fast = braze.jit(model)                       # or @braze.jit on a function
    fast = torch.compile(model, backend="braze")  # the same, through torch.compile
    print(braze.explain(model, *inputs))          # what braze did, pass by pass
    art = braze.compile(model, args, kwargs, output="model.braze")   # ahead of time
    art = braze.load("model.braze")               # run it later, no tuning
"""
from braze.config import Options  # noqa: F401
from braze.api import compile, explain, jit, load  # noqa: F401,A004

__version__ = "0.1.0"
__all__ = ["jit", "explain", "compile", "load", "Options", "__version__"]
