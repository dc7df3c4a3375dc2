"""braze.compiler.codegen.tvm"""
