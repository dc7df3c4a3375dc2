"""The TVM backend: TensorIR kernels for fused groups, on the CPU (LLVM) and CUDA.

Importing this package registers the checker (``support.supports``, no TVM
import) and the generator (``generator.generate``, which imports TVM when it
first builds something). Nothing registers when TVM is not installed.
"""
from braze.compiler.codegen.tvm.support import supports, tvm_installed

if tvm_installed():
    from braze.compiler.codegen import register_checker
    from braze.autotune.contract import register_generator

    def _generate(node, graph, options, device):
        from braze.compiler.codegen.tvm.generator import generate  # lazy: imports tvm on first use

        return generate(node, graph, options, device)

    register_checker("tvm", supports)
    register_generator("tvm", _generate)

__all__ = ["supports"]
