"""Compile generated kernels for a GPU target on a machine without a GPU.

``compile_for_target(kernel, config, inputs)`` runs the kernel's host
``launch`` on CPU tensors of the real shapes (so sizes, strides and Triton's
specialisation on them are the real ones), but every ``kernel[grid](...)``
compiles for the target (default sm_90) instead of launching. Triton ships
ptxas, so this checks on a CPU machine that the generated source compiles
for the GPU, and reports what the compiler made of it (PTX features such as
``wgmma``/``ld.global.v4``, shared memory, registers when cuobjdump is there).
Used by the tests and by developers; the runtime never needs it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from braze.autotune.compile_only import TargetDriver

FEATURES = ("wgmma", "mma.sync", "ld.global.v4", "ld.global.v2", "cp.async.bulk.tensor", "cp.async", "st.global.v4")


@dataclass
class Compiled:
    """One compiled kernel: its name, config, PTX, shared memory and resource usage."""

    name: str
    config: dict
    ptx: str
    shared: int
    resources: dict = field(default_factory=dict)   # REG, STACK, LOCAL ... (from cuobjdump)

    @property
    def features(self) -> dict[str, int]:
        return {f: self.ptx.count(f) for f in FEATURES if f in self.ptx}


class _Intercept:
    """Stands for a JITFunction in the generated module: ``[grid](...)`` compiles only."""

    def __init__(self, fn, out: list):
        self.fn, self.out = fn, out

    def __getitem__(self, grid):
        def call(*args, **kwargs):
            compiled = self.fn.run(*args, grid=grid, warmup=True, **kwargs)
            cfg = {k: v for k, v in kwargs.items() if not isinstance(v, (bool,)) or k.isupper()}
            self.out.append((self.fn.__name__, cfg, compiled))
        return call


@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update({k: v for k, v in kv.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fresh_module(kernel, tag: str):
    """The kernel's module imported anew (its own JITFunctions, compiled mode)."""
    kernel.module()  # writes the cached file
    from braze.compiler.codegen.triton.kernel import cache_dir

    import hashlib

    digest = hashlib.sha256(kernel.source.encode()).hexdigest()[:16]
    path = cache_dir() / f"{kernel.gen.name}_{digest}.py"
    spec = importlib.util.spec_from_file_location(f"braze_aot_{tag}_{kernel.gen.name}_{digest}", path)
    mod = importlib.util.module_from_spec(spec)
    with _env(TRITON_INTERPRET="0"):
        spec.loader.exec_module(mod)
    return mod


def resources(cubin: bytes) -> dict:
    """REG/STACK/SHARED/LOCAL of a cubin, read with cuobjdump when it is available."""
    tool = shutil.which("cuobjdump")
    if tool is None:
        import triton

        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        tool = str(cand) if cand.exists() else None
    if tool is None or not cubin:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                  timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL|CONSTANT\[\d+\]):(\d+)", text)}


@contextlib.contextmanager
def compiling_for(module, arch: int = 90, warp_size: int = 32):
    """Within the block, every public ``@triton.jit`` function of ``module`` compiles for
    ``cuda`` sm_``arch`` when launched (``fn[grid](...)``) instead of running; the list
    yielded collects one :class:`Compiled` per launch."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    raw: list = []
    saved = {name: obj for name, obj in vars(module).items()
             if isinstance(obj, JITFunction) and not name.startswith("_")}
    for name, obj in saved.items():
        setattr(module, name, _Intercept(obj, raw))
    # NOTE: restore the previous active driver as it was (possibly unset):
    # reset_active() would create the default driver, which fails without a GPU.
    prev = getattr(driver, "_active", None)
    driver.set_active(TargetDriver(GPUTarget("cuda", arch, warp_size)))
    result: list = []
    try:
        with _env(TRITON_INTERPRET="0", TRITON_CACHE_DIR=os.environ.get("TRITON_CACHE_DIR") or
                  str(Path(tempfile.gettempdir()) / "braze-aot-triton-cache")):
            yield result
    finally:
        driver._active = prev
        for name, obj in saved.items():
            setattr(module, name, obj)
        for name, cfg, ck in raw:
            asm = ck.asm
            result.append(Compiled(name, cfg, asm.get("ptx", ""), int(getattr(ck.metadata, "shared", 0)),
                                   resources(asm.get("cubin", b""))))


def compile_for_target(kernel, config: Mapping[str, Any], inputs: Sequence, arch: int = 90,
                       warp_size: int = 32) -> list[Compiled]:
    """Compile every launch of ``kernel.compile(config)(*inputs)`` for ``cuda`` sm_``arch``."""
    from braze.compiler.codegen import pdl

    mod = _fresh_module(kernel, f"sm{arch}")
    with compiling_for(mod, arch, warp_size) as out:
        mod._PDL = pdl.enabled()   # as load_module sets it, for this target
        mod.launch(*inputs, **kernel.launch_kwargs(config))
    return [dataclasses.replace(c, config=dict(config)) for c in out]


def compile_attention_for_target(q, k, v, mask=None, slopes=None, *, config: Mapping[str, Any], arch: int = 90,
                                 **attrs) -> list[Compiled]:
    """Compile the attention template's launches of ``attention_dense(q, k, v, ...)`` (CPU
    tensors of the real shapes and strides) for ``cuda`` sm_``arch``."""
    from braze.compiler.codegen import pdl
    from braze.compiler.codegen.triton_attention import launch

    with _env(TRITON_INTERPRET="0"):
        tpl = launch._template(interp=False)
        plan = launch._plan_dense(q, k, v, mask, slopes, attrs.pop("scale"), attrs.pop("causal", "none"),
                                  attrs.pop("window", None), attrs.pop("groups", 1), attrs.pop("mask_kind", "none"),
                                  dict(config))
    if attrs:
        raise TypeError(f"unknown attention attributes {sorted(attrs)}")
    with compiling_for(tpl, arch) as out:
        launch._run_dense(dataclasses.replace(plan, pdl=pdl.enabled()), q, k, v, mask, slopes)
    return out


def available() -> Optional[str]:
    """None when compiling for NVIDIA GPUs works here, else why not."""
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
        import triton

        ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        if not ptxas.exists() and shutil.which("ptxas") is None:
            return "no ptxas"
    except Exception as e:  # noqa: BLE001
        return f"no NVIDIA backend in triton: {e}"
    return None
