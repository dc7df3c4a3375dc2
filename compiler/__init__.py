"""braze.compiler"""
