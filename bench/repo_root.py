"""Imported first by the bench scripts that build Hugging Face models.

Run as a script, a bench script has this folder first on ``sys.path``, and
``bench/kernels.py`` would then shadow the ``kernels`` package that
transformers probes for. Importing this module puts the repository root in
that place instead (so ``import braze`` finds the source checkout too).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
    sys.path[0] = ROOT


def bench_module(name: str):
    """``bench/<name>.py`` as the module ``bench_<name>`` (this folder is no longer on
    ``sys.path``; the prefix keeps ``kernels`` and the like out of other packages' way)."""
    import importlib.util

    key = f"bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod
