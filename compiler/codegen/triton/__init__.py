"""braze.compiler.codegen.triton"""
