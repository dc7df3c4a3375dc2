"""Compile here, run there: TVM CUDA kernels built on a machine without a GPU,
exported with a manifest, loadable where only tvm_ffi and the runtime
libraries exist. The CPU tests check the build, the export and the loader's
independence; the GPU test loads an export and checks it against torch."""
import ast
import json
import os
import shutil

import pytest
import torch

from tools import tvm_cuda_export as cuda_export  # imports TVM only when it builds

LOADER = os.path.join(os.path.dirname(cuda_export.__file__), "..", "compiler", "codegen", "tvm", "runtime_loader.py")


def _small_entries():
    bf16, f32 = torch.bfloat16, torch.float32
    pw = cuda_export.fused_node(cuda_export.silu_mul, "pointwise", (((64, 96), bf16), ((64, 96), bf16)))
    red = cuda_export.fused_node(cuda_export.softmax_rows, "reduction", ((("s0", 256), f32),))
    return [("silu_mul_small", pw, {"threads": 128, "vec": 4, "unroll": 1}),
            ("softmax_sym", red, {"threads": 128, "vec": 2, "stage": True})]


def test_export_writes_libraries_manifest_and_runtime(tmp_path):
    pytest.importorskip("tvm")
    out = str(tmp_path / "export")
    m = cuda_export.export(_small_entries(), out, "sm_90")
    assert [k["name"] for k in m["kernels"]] == ["silu_mul_small", "softmax_sym"]
    for k in m["kernels"]:
        assert os.path.getsize(os.path.join(out, k["file"])) > 1000
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == m
    sym = m["kernels"][1]
    assert sym["syms"] == ["s0"] and sym["sym_sources"] == {"s0": [0, 0]}
    assert sym["operands"] == [{"shape": ["s0", 256], "dtype": "float32"}]
    assert sym["outputs"][0]["alloc"] == ["s0", 256]
    for lib in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        assert os.path.getsize(os.path.join(out, "lib", lib)) > 100_000


def test_runtime_loader_needs_neither_braze_nor_tvm():
    tree = ast.parse(open(LOADER).read())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert "braze" not in mods and "tvm" not in mods, mods
    assert "tvm_ffi" in mods


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_source_compiles_to_a_cubin():
    """The CUDA source a library carries compiles for sm_90 (nvcc here; NVRTC on the GPU machine)."""
    import importlib.util
    import sys

    tvm = pytest.importorskip("tvm")

    from braze.compiler.codegen.tvm import build as B
    from braze.compiler.codegen.tvm.kernel import TVMKernel

    spec = importlib.util.spec_from_file_location("braze_tvm_runtime_loader_test", LOADER)
    rl = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = rl
    spec.loader.exec_module(rl)
    name, node, cfg = _small_entries()[1]
    k = TVMKernel(node, "reduction", "cuda")
    ex = tvm.compile(k.scheduled(cfg), target=B.cuda_target("sm_90"))
    src = ex.mod.imports[0].inspect_source()
    assert "__global__" in src
    cubin = rl.compile_cuda(src, "sm_90")
    assert cubin[:4] == b"\x7fELF"


@pytest.mark.gpu
def test_exported_kernels_on_the_gpu():
    """Set BRAZE_TVMCUDA_DIR to an export (cuda_export --out DIR) to run this on the GPU machine."""
    import importlib.util
    import sys

    folder = os.environ.get("BRAZE_TVMCUDA_DIR")
    if not folder:
        pytest.skip("BRAZE_TVMCUDA_DIR is not set")
    spec = importlib.util.spec_from_file_location("braze_tvm_runtime_loader_gpu", LOADER)
    rl = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = rl
    spec.loader.exec_module(rl)
    from braze.ir import parse_graph
    from braze.ir.interpreter import interpret

    for name, k in rl.load_kernels(folder).items():
        env = {s: 300 for s in k.entry["syms"]}
        ops = [torch.randn([d if isinstance(d, int) else env[d] for d in o["shape"]], device="cuda")
               .to(getattr(torch, o["dtype"])) for o in k.entry["operands"]]
        got = k(*ops)
        got = got if isinstance(got, tuple) else (got,)
        ref = interpret(parse_graph(k.entry["ir"]), *ops)
        for g, r in zip(got, ref):
            err = float((g.double() - r.double()).abs().max() / r.double().abs().max())
            assert err < 2e-2, f"{name}: {err}"
