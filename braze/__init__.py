"""braze: a kernel-fusion and autotuning compiler for Transformer inference."""
