"""Graph passes; the pipeline is the ordered list PIPELINE."""
