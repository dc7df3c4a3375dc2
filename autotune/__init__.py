"""braze.autotune"""
