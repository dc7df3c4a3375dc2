"""Development tools beside the product (not installed with braze): the demo,
the Hugging Face model builder used by the README, tests and benchmarks, and
export/debug helpers (TVM CUDA export, Triton AOT compilation for sm_90,
greedy TVM fusion). They import braze; braze never imports them.
"""
