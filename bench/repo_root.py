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
