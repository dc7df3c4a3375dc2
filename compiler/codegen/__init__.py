"""braze.compiler.codegen"""
