"""Load TVM CUDA kernels exported by ``cuda_export`` on a machine without TVM.

Needs only: torch (with CUDA), the ``apache-tvm-ffi`` package, the two TVM
runtime libraries ``libtvm_runtime.so`` and ``libtvm_runtime_cuda.so``
(copied by the export into ``<folder>/lib``), and NVRTC from
``cuda.bindings`` (or ``nvcc`` on the PATH) to turn the CUDA source held in
each exported library into machine code when it is loaded.

This module imports nothing from braze or TVM, so a script can load it by
file path on such a machine::

    spec = importlib.util.spec_from_file_location("rl", "compiler/codegen/tvm/runtime_loader.py")

Order matters (seen on an H100 machine, see shared GPU.md): import torch
first (it loads ``libcudart``), then ``tvm_ffi``, then the runtime
libraries with ``RTLD_GLOBAL``, then the kernel libraries.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

MANIFEST = "manifest.json"
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_runtime_cuda.so")
_state: dict = {"runtime": None, "arch": None}


def cuda_arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def _cuda_include_dirs() -> list[str]:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    out = []
    for r in roots:
        if r and os.path.isdir(os.path.join(r, "include")):
            out.append(os.path.join(r, "include"))
            # NOTE: CUDA 13 keeps cuda/std/* under include/cccl
            if os.path.isdir(os.path.join(r, "include", "cccl")):
                out.append(os.path.join(r, "include", "cccl"))
            break
    return out


def compile_cuda(code: str, arch: Optional[str] = None) -> bytes:
    """CUDA C++ source to a cubin for this GPU: NVRTC, else nvcc."""
    arch = arch or _state["arch"] or cuda_arch()
    code = re.sub(r"^\s*#include <cuda\.h>\s*$", "", code, flags=re.M)
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        nvrtc = None
    if nvrtc is not None:
        err, prog = nvrtc.nvrtcCreateProgram(code.encode(), b"braze_kernel.cu", 0, [], [])
        opts = [f"--gpu-architecture={arch}".encode(), b"-default-device", b"--std=c++17"]
        opts += [f"-I{d}".encode() for d in _cuda_include_dirs()]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC could not compile a braze TVM kernel for {arch}:\n{log.decode(errors='replace')}")
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * size
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        nvrtc.nvrtcDestroyProgram(prog)
        return bytes(cubin)
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.cu"), os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(code)
        r = subprocess.run(["nvcc", "-cubin", "-O3", f"-arch={arch}", "-std=c++17", "-o", out, src],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"nvcc could not compile a braze TVM kernel:\n{r.stderr}")
        with open(out, "rb") as f:
            return f.read()


def load_runtime(lib_dir: Optional[str] = None) -> None:
    """Load the TVM runtime libraries once and register the CUDA compile callback."""
    if _state["runtime"] is not None:
        return
    import torch  # noqa: F401  (first: loads libcudart)
    import tvm_ffi

    lib_dir = lib_dir or os.environ.get("BRAZE_TVM_RUNTIME_DIR")
    handles = []
    for name in RUNTIME_LIBS:
        path = os.path.join(lib_dir, name) if lib_dir else name
        if lib_dir and not os.path.exists(path):
            raise FileNotFoundError(f"TVM runtime library {path} is missing (carry it with the exported kernels)")
        handles.append(ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL))

    def _callback(code, *_):
        return bytearray(compile_cuda(str(code)))

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", _callback, override=True)
    _state["runtime"] = handles


def _eval_dim(d, env: dict) -> int:
    if isinstance(d, int):
        return d
    return int(eval(d, {"__builtins__": {}, "floor": math.floor, "ceiling": math.ceil, "Max": max, "Min": min,
                        "Mod": lambda a, b: a % b}, env))  # noqa: S307 - expressions written by cuda_export


@dataclass
class LoadedKernel:
    """One exported kernel: ``(*operands) -> output(s)``, outputs allocated by torch."""

    name: str
    entry: dict
    fn: Any

    def __call__(self, *xs):
        import torch

        e = self.entry
        if len(xs) != len(e["operands"]):
            raise TypeError(f"{self.name} takes {len(e['operands'])} operands, got {len(xs)}")
        for i, (x, spec) in enumerate(zip(xs, e["operands"])):
            if str(x.dtype).replace("torch.", "") != spec["dtype"]:
                raise TypeError(f"{self.name}: operand {i} has dtype {x.dtype}, expected {spec['dtype']}")
            if not x.is_contiguous():
                raise ValueError(f"{self.name}: operand {i} is not contiguous; exported kernels take contiguous tensors")
        env = {s: int(xs[pos].shape[d]) for s, (pos, d) in e["sym_sources"].items()}
        outs, views = [], []
        for o in e["outputs"]:
            outs.append(torch.empty([_eval_dim(d, env) for d in o["alloc"]], dtype=getattr(torch, o["dtype"]),
                                    device=xs[0].device))
            views.append([_eval_dim(d, env) for d in o["view"]])
        self.fn(*xs, *outs, *[env[s] for s in e["syms"]])
        res = [o.view(v) for o, v in zip(outs, views)]
        return res[0] if len(res) == 1 else tuple(res)


def load_kernels(folder: str, lib_dir: Optional[str] = None) -> dict[str, LoadedKernel]:
    """All kernels of an export folder, by name."""
    import tvm_ffi

    with open(os.path.join(folder, MANIFEST)) as f:
        manifest = json.load(f)
    load_runtime(lib_dir or os.path.join(folder, "lib"))
    _state["arch"] = manifest.get("arch")
    out = {}
    for e in manifest["kernels"]:
        mod = tvm_ffi.load_module(os.path.join(folder, e["file"]))
        out[e["name"]] = LoadedKernel(e["name"], e, mod[e.get("function", "main")])
    return out


def manifest(folder: str) -> dict:
    with open(os.path.join(folder, MANIFEST)) as f:
        return json.load(f)


__all__ = ["load_runtime", "load_kernels", "compile_cuda", "LoadedKernel", "manifest"]
