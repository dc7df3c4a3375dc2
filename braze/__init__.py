"""braze: a kernel-fusion and autotuning compiler for Transformer inference.

    import braze
    fast = braze.jit(model)                       # or @braze.jit on a function
    fast = torch.compile(model, backend="braze")  # the same, through torch.compile
    print(braze.explain(model, *inputs))          # what braze did, pass by pass
    out = braze.generate(model, input_ids, max_new_tokens=64)   # prefill + compiled decode steps
    art = braze.compile(model, args, kwargs, output="model.braze")   # ahead of time
    art = braze.load("model.braze")               # run it later, no tuning
"""
import os as _os
import sys as _sys

# NOTE: OpenMP threads that spin-wait after each torch op starve TVM's CPU
# workers (10-30x slower TVM kernels measured on 2 cores). The policy is read
# when torch loads OpenMP, so it can only be chosen here, when braze is
# imported before torch (the CLI, the demo); otherwise a warning says it.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# NOTE: a source checkout that is not installed (the GPU machine) maps the
# top-level folders onto the namespace like pyproject.toml does: braze.ir -> ir/.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "ir", "__init__.py")) and _root not in __path__:
    __path__.append(_root)

from braze.config import Options  # noqa: E402,F401
from braze.api import compile, explain, explain_generate, generate, jit, load, quantize  # noqa: E402,F401,A004

from braze.version import __version__  # noqa: E402
__all__ = ["jit", "explain", "explain_generate", "generate", "quantize", "compile", "load", "Options", "__version__"]
