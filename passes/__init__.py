"""Graph passes. ``PIPELINE`` is the one ordered list the driver runs;
each entry is a named ``Graph -> Graph`` function (see ``passes/runner.py``).
"""
from braze.passes.runner import Pass, PassError, run_pipeline  # noqa: F401
from braze.passes.dce import dce
from braze.passes.cse import cse
from braze.passes.fold_constants import fold_constants
from braze.passes.normalize_views import normalize_views

PIPELINE: list[Pass] = [
    # canonicalize
    Pass("dce", dce),
    Pass("normalize_views", normalize_views),
    Pass("cse", cse),
    Pass("fold_constants", fold_constants),
    Pass("specialize_attention", __import__("braze.passes.specialize_attention", fromlist=["x"]).specialize_attention),
]
