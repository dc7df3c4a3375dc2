"""braze.compiler.codegen.triton_attention"""
