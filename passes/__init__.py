"""Graph passes. ``PIPELINE`` is the one ordered list the driver runs;
each entry is a named ``Graph -> Graph`` function (see ``passes/runner.py``).
"""
from braze.passes.runner import Pass, PassError, run_pipeline  # noqa: F401
from braze.passes.dce import dce
from braze.passes.cse import cse
from braze.passes.fold_constants import fold_constants
from braze.passes.fold_dequantize import fold_dequantize
from braze.passes.normalize_views import normalize_views
from braze.passes.attention import specialize_attention
from braze.passes.eliminate_padding import eliminate_padding
from braze.passes.index_as_view import index_as_view
from braze.passes.fuse_horizontal import fuse_horizontal
from braze.passes.fuse import fuse
from braze.passes.merge_parallel_groups import merge_parallel_groups
from braze.passes.merge_leaf_pointwise import merge_leaf_pointwise
from braze.passes.absorb_input_views import absorb_input_views
from braze.passes.reinplace import reinplace
from braze.passes.merge_counter_updates import merge_counter_updates
from braze.passes.merge_cache_writes import merge_cache_writes
from braze.passes.fuse_cache_write import fuse_cache_write

PIPELINE: list[Pass] = [
    # canonicalize
    Pass("dce", dce),
    Pass("normalize_views", normalize_views),
    Pass("cse", cse),
    Pass("fold_constants", fold_constants),
    # quantized weights: dequantization folded into the GEMM that reads it
    Pass("fold_dequantize", fold_dequantize),
    # attention specialization
    Pass("specialize_attention", specialize_attention),
    # padding elimination
    Pass("eliminate_padding", eliminate_padding),
    # a constant gather that names every element in order is a reshape (after the mask analyses)
    Pass("index_as_view", index_as_view),
    # fuse
    Pass("fuse_horizontal", fuse_horizontal),
    Pass("fuse", fuse),
    Pass("merge_parallel_groups", merge_parallel_groups),
    Pass("merge_leaf_pointwise", merge_leaf_pointwise),
    # side effects: scatters into the caller's buffers written in place
    Pass("reinplace", reinplace),
    Pass("merge_counter_updates", merge_counter_updates),
    Pass("merge_cache_writes", merge_cache_writes),
    # the rotary group and the KV cache write it feeds as one node (one kernel)
    Pass("fuse_cache_write", fuse_cache_write),
    # the views a group's operands go through run inside its kernel, not as host ops
    Pass("absorb_input_views", absorb_input_views),
]


def check_disable(options) -> None:
    """Raise ValueError naming each name in ``options.disable`` that is no pass of PIPELINE."""
    names = [p.name for p in PIPELINE]
    unknown = sorted(set(getattr(options, "disable", ())) - set(names))
    if unknown:
        raise ValueError(f"braze option disable={list(options.disable)!r}: no pass named {', '.join(unknown)} "
                         f"(the pipeline's passes: {', '.join(names)})")
