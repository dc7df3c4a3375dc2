"""The generated kernels compile for an H100 (sm_90) with the installed Triton, on a
machine without a GPU (Triton ships ptxas): what the interpreter cannot check."""
from __future__ import annotations

import pytest
import torch

from braze.ir import Builder
from tests.codegen.triton_helpers import fused_node, gate_up_node

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
BF16 = torch.bfloat16


@pytest.fixture(autouse=True)
def _needs_backend():
    from tools.triton_aot import available

    why = available()
    if why:
        pytest.skip(why)


def _compile(node, feed, config):
    from braze.compiler.codegen.triton import kernel_for
    from tools.triton_aot import compile_for_target

    k = kernel_for(node)
    xs = [feed[v.node.name] for v in node.inputs]
    return compile_for_target(k, config, xs, arch=90)


def test_memory_bound_kernels_compile_with_16_byte_loads():
    b = Builder()
    x = b.input("x", ("s0", 4096), BF16)
    res = b.input("res", ("s0", 4096), BF16)
    w = b.input("w", (4096,), BF16)
    h = b.call("add", x, res, overload="Tensor")
    hf = b.call("_to_copy", h, dtype=torch.float32)
    var = b.call("mean", b.call("pow", hf, 2, overload="Tensor_Scalar"), [-1], True, overload="dim")
    y = b.call("mul", hf, b.call("rsqrt", b.call("add", var, 1e-5, overload="Tensor")), overload="Tensor")
    out = b.call("mul", w, b.call("_to_copy", y, dtype=BF16), overload="Tensor")
    node = fused_node(b, [h, out], "reduction")
    feed = {"x": torch.empty(64, 4096, dtype=BF16), "res": torch.empty(64, 4096, dtype=BF16),
            "w": torch.empty(4096, dtype=BF16)}
    for cfg in ({"BLOCK_R": 1, "BLOCK_N": 4096, "num_warps": 8}, {"BLOCK_R": 1, "BLOCK_N": 1024, "num_warps": 4}):
        (c,) = _compile(node, feed, cfg)
        assert c.name.endswith("_single" if cfg["BLOCK_N"] == 4096 else "_looped")
        assert c.features.get("ld.global.v4", 0) >= 2, c.features
        assert c.resources.get("LOCAL", 0) == 0
    b = Builder()
    g = b.input("g", ("s0", 14336), BF16)
    u = b.input("u", ("s0", 14336), BF16)
    node = fused_node(b, [b.call("mul", b.call("silu", g), u, overload="Tensor")], "pointwise")
    feed = {"g": torch.empty(32, 14336, dtype=BF16), "u": torch.empty(32, 14336, dtype=BF16)}
    (c,) = _compile(node, feed, {"BLOCK_R": 2, "BLOCK_C": 1024, "num_warps": 4})
    assert c.features.get("ld.global.v4", 0) >= 2


def test_gemm_dual_epilogue_compiles_to_wgmma_and_split_k():
    node = gate_up_node()
    feed = {"x": torch.empty(256, 256, dtype=BF16), "w": torch.empty(512, 256, dtype=BF16)}
    cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 3,
           "SPLIT_K": 1, "TMA": 0, "PERSISTENT": 0, "GEMV": 0}
    (c,) = _compile(node, feed, cfg)
    assert c.features.get("wgmma", 0) > 0 and c.features.get("cp.async", 0) > 0, c.features
    assert c.resources.get("LOCAL", 0) == 0
    (p,) = _compile(node, feed, dict(cfg, PERSISTENT=1))   # the tile loop keeps the pipelined wgmma K loop
    assert p.features.get("wgmma", 0) > 0 and p.features.get("cp.async", 0) > 0, p.features
    assert p.resources.get("LOCAL", 0) == 0
    main, epi = _compile(node, feed, dict(cfg, BLOCK_M=16, SPLIT_K=2, num_stages=2))
    assert epi.name.endswith("_splitk_epilogue")


def test_scatter_stores_compile_for_hopper():
    """An LM head whose logits are unpacked (padding elimination): the GEMM stores rows at
    their destinations, and the kernel zeroing the padding rows compiles too."""
    b = Builder()
    x = b.input("x", ("t", 256), BF16)
    w = b.input("w", (512, 256), BF16)
    dst = b.input("dst", ("t",), torch.int64)
    y = b.call("mm", x, b.call("permute", w, (1, 0)))
    node = fused_node(b, [b.call("unpack", y, dst, batch=4, seq=64)], "gemm")
    feed = {"x": torch.empty(200, 256, dtype=BF16), "w": torch.empty(512, 256, dtype=BF16), "dst": torch.arange(200)}
    cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 3,
           "SPLIT_K": 1, "TMA": 0, "PERSISTENT": 0, "GEMV": 0}
    zero, main = _compile(node, feed, cfg)
    assert zero.name == "zero_padding_rows_kernel" and main.name.endswith("unpack")
    assert main.features.get("wgmma", 0) > 0 and main.resources.get("LOCAL", 0) == 0


def test_bmm_epilogue_with_views_compiles():
    b = Builder()
    q = b.input("q", (2, "s0", 4, 64), BF16)
    k = b.input("k", (2, "s0", 4, 64), BF16)
    s0 = q.type.shape[1]
    qv = b.call("reshape", b.call("permute", q, (0, 2, 1, 3)), (8, s0, 64))
    kv = b.call("reshape", b.call("permute", k, (0, 2, 3, 1)), (8, 64, s0))
    out = b.call("mul", b.call("reshape", b.call("bmm", qv, kv), (2, 4, s0, s0)), 0.125, overload="Tensor")
    node = fused_node(b, [b.call("_to_copy", out, dtype=torch.float32)], "gemm")
    feed = {"q": torch.empty(2, 128, 4, 64, dtype=BF16), "k": torch.empty(2, 128, 4, 64, dtype=BF16)}
    cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "num_warps": 4, "num_stages": 2,
           "SPLIT_K": 1, "TMA": 0, "PERSISTENT": 0, "GEMV": 0}
    (c,) = _compile(node, feed, cfg)
    assert c.features.get("wgmma", 0) > 0


@pytest.mark.parametrize("case", ["causal", "mask_skip", "gqa_packed", "decode_split_tma", "decode_fused_combine"])
def test_attention_template_compiles_for_hopper(case, monkeypatch):
    import math

    from tools.triton_aot import compile_attention_for_target

    B, Hq, Hkv, S, D, Sk = 2, 8, 2, 256, 128, 256
    cfg = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3, "PACK_GQA": False, "TMA": False,
           "SPLITS": 1}
    mask, attrs = None, dict(causal="bottom_right", mask_kind="none")
    if case == "mask_skip":
        mask = torch.full((S, S), torch.finfo(BF16).min, dtype=BF16).triu(1)[None, None].expand(B, 1, S, S)
        attrs = dict(causal="none", mask_kind="additive")
        cfg["MASK_SKIP"] = True
    elif case == "gqa_packed":
        D = 64
        cfg["PACK_GQA"] = True
    elif case.startswith("decode"):
        S, Sk = 1, 4096
        cfg.update(BLOCK_M=16, BLOCK_N=128, num_warps=4, PACK_GQA=True, TMA=True, SPLITS=8,
                   FUSE_COMBINE=case == "decode_fused_combine")
    q = torch.empty(B, S, Hq, D, dtype=BF16).transpose(1, 2)
    k = torch.empty(B, Sk, Hkv, D, dtype=BF16).transpose(1, 2)
    v = torch.empty(B, Sk, Hkv, D, dtype=BF16).transpose(1, 2)
    if case.startswith("decode"):
        k, v = k.contiguous(), v.contiguous()
    monkeypatch.setenv("BRAZE_PDL", "1")
    out = compile_attention_for_target(q, k, v, mask, config=cfg, scale=1 / math.sqrt(D), groups=Hq // Hkv, **attrs)
    names = [c.name for c in out]
    want = {"causal": ["attention_fwd_kernel"], "gqa_packed": ["attention_fwd_kernel"],
            "mask_skip": ["mask_tile_flags_kernel", "mask_block_summary_kernel", "attention_fwd_kernel"],
            "decode_split_tma": ["attention_fwd_kernel", "attention_combine_kernel"],
            "decode_fused_combine": ["attention_fwd_kernel"]}[case]
    assert names == want
    main = out[names.index("attention_fwd_kernel")]
    if case.startswith("decode"):
        assert main.features.get("cp.async.bulk.tensor", 0) > 0, main.features
    else:
        assert main.features.get("wgmma", 0) > 0, main.features
    assert main.resources.get("LOCAL", 0) == 0
    for c in out:   # programmatic dependent launch: the attention and combine kernels wait first
        pdl = c.name in ("attention_fwd_kernel", "attention_combine_kernel")
        assert ("griddepcontrol.wait" in c.ptx) == pdl, c.name


def test_gemv_dual_epilogue_compiles_without_spills_or_tensor_cores():
    """One decode row of the Llama-1B gate/up (dual epilogue) in the GEMV form: no wgmma,
    no local memory, 16-byte weight loads."""
    b = Builder()
    x = b.input("x", (1, 2048), BF16)
    w = b.input("w", (16384, 2048), BF16)
    mm = b.call("mm", x, b.call("permute", w, (1, 0)))
    y = b.call("mul", b.call("silu", b.call("slice", mm, 1, 0, 8192)), b.call("slice", mm, 1, 8192, 16384),
               overload="Tensor")
    node = fused_node(b, [y], "gemm")
    feed = {"x": torch.empty(1, 2048, dtype=BF16), "w": torch.empty(16384, 2048, dtype=BF16)}
    cfg = {"BLOCK_M": 1, "BLOCK_N": 4, "BLOCK_K": 1024, "GROUP_M": 1, "num_warps": 4, "num_stages": 3,
           "SPLIT_K": 1, "TMA": 0, "PERSISTENT": 0, "GEMV": 1}
    (c,) = _compile(node, feed, cfg)
    assert c.features.get("wgmma", 0) == 0 and c.resources.get("LOCAL", 0) == 0, (c.features, c.resources)
    assert c.features.get("ld.global.v4", 0) + c.features.get("ld.global.nc.v4", 0) >= 2, c.features
    # K sums stay in the warp (shuffles): the [BLOCK_K, BLOCK_N] form went through shared
    # memory each step (32 shared loads, 71 registers for one accumulator) and lost to cuBLAS
    assert c.ptx.count("ld.shared") <= 4 and c.ptx.count("shfl") >= 20, (c.ptx.count("ld.shared"), c.ptx.count("shfl"))
    if "REG" in c.resources:
        assert c.resources["REG"] <= 96, c.resources


def test_generated_kernels_wait_for_their_predecessor_under_pdl(monkeypatch):
    """For sm_90 every generated kernel starts with griddepcontrol.wait and then
    launch_dependents (programmatic dependent launch, compiler/codegen/pdl.py), the split-K
    epilogue kernel included, with BRAZE_PDL=1; without it (the default) they compile without."""
    monkeypatch.setenv("BRAZE_PDL", "1")
    b = Builder()
    x = b.input("x", (1, 2048), BF16)
    w = b.input("w", (2048, 2048), BF16)
    node = fused_node(b, [b.call("mm", x, b.call("permute", w, (1, 0)))], "gemm")
    feed = {"x": torch.empty(1, 2048, dtype=BF16), "w": torch.empty(2048, 2048, dtype=BF16)}
    cfg = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1, "num_warps": 4, "num_stages": 3,
           "SPLIT_K": 2, "TMA": 0, "PERSISTENT": 0, "GEMV": 0}
    compiled = _compile(node, feed, cfg)
    assert len(compiled) == 2
    for c in compiled:
        wait, go = c.ptx.find("griddepcontrol.wait"), c.ptx.find("griddepcontrol.launch_dependents")
        assert 0 <= wait < go and c.ptx.find("ld.global") > go, c.name
    monkeypatch.delenv("BRAZE_PDL")
    assert all("griddepcontrol" not in c.ptx for c in _compile(node, feed, cfg))


def test_kv_cache_write_kernel_compiles():
    from braze.compiler.codegen.triton_cache.candidates import _KERNELS
    from tools.triton_aot import _env, compiling_for

    # NOTE: the module as built for the compiler: this folder's conftest switches the
    # interpreter on for each test, and a module first imported under it holds
    # interpreted functions that nothing can compile for a GPU.
    with _env(TRITON_INTERPRET="0"):
        mod = _KERNELS.get(interp=False)
    kc = torch.empty(1, 8, 2048, 64, dtype=BF16)
    k = torch.empty(1, 1, 8, 64, dtype=BF16).transpose(1, 2)
    with compiling_for(mod, 90) as out:
        mod.index_copy_pair_kernel[(8,)](kc, torch.empty_like(kc), torch.zeros(1, dtype=torch.int64), k,
                                         torch.empty_like(k), 8, 1, 64, *kc.stride(), *kc.stride(), *k.stride(),
                                         *k.stride(), BLOCK_D=64, num_warps=1)
    (c,) = out
    assert c.resources.get("LOCAL", 0) == 0 and c.shared == 0


def test_rms_norm_prologue_gemv_compiles_like_the_plain_gemv():
    """The decode QKV GEMV with input_layernorm as its prologue: 16-byte loads of the
    weight, x and the norm's weight, nothing spilled, and no more shared memory than
    the GEMV without a prologue (the squares are reduced within warps)."""
    from tests.codegen.test_triton_row_scale import GEMV, norm_linear

    cfg = dict(GEMV, BLOCK_N=4, BLOCK_K=1024, num_stages=3)
    b, y, feed = norm_linear(BF16, 1, 2048, 3072, residual=True)
    (c,) = _compile(fused_node(b, [y], "gemm"), {k: v.contiguous() for k, v in feed.items()}, cfg)
    plain = Builder()
    x, w = plain.input("x", (1, 2048), BF16), plain.input("w", (3072, 2048), BF16)
    (p,) = _compile(fused_node(plain, [plain.call("mm", x, plain.call("permute", w, (1, 0)))], "gemm"),
                    {"x": torch.empty(1, 2048, dtype=BF16), "w": torch.empty(3072, 2048, dtype=BF16)}, cfg)
    assert c.features.get("ld.global.v4", 0) >= 3, c.features
    assert c.resources.get("LOCAL", 0) == 0
    assert c.shared <= p.shared and c.resources.get("SHARED", 0) <= p.resources.get("SHARED", 0)


def test_rotary_cache_write_kernel_compiles_with_16_byte_accesses():
    """The rotary + KV write node of a Llama-1B layer (32 query, 8 key heads, D = 64)
    at one decode token: 16-byte loads and stores, nothing spilled."""
    from dataclasses import replace

    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import generate
    from braze.ir import interpret
    from braze.passes.fuse_cache_write import fuse_cache_write
    from tests.codegen.test_triton_cache_write import ALL, _feed, _layer
    from tools.triton_aot import compile_for_target

    shape = (1, 32, 8, 1, 2048, 64)
    g = _layer(*shape, BF16)
    fg = fuse_cache_write(g, ALL)
    (node,) = [n for n in fg.compute_nodes if n.op == "cache_write_heads_"]
    operands = interpret(replace(fg, outputs=node.inputs), *_feed(g, *shape, BF16, [600]))
    (kern,) = generate(node, fg, None, torch.device("cuda"))
    cfg = kern.space.default_config(kern.problem({}), DeviceInfo("cuda", "sm_90", (9, 0), 132))
    (c,) = compile_for_target(kern, cfg, [x.clone() for x in operands], arch=90)
    assert c.features.get("ld.global.v4", 0) >= 2 and c.features.get("st.global.v4", 0) >= 2, c.features
    assert c.resources.get("LOCAL", 0) == 0


def test_int4_gemv_with_norm_prologue_and_dual_epilogue_compiles_without_layout_changes():
    """The int4 (g128) gate/up GEMV of a Llama-1B decode with post_attention_layernorm as
    its prologue, default configuration: 16-byte loads of weight bytes and activations,
    nothing spilled, and shared memory only for the reductions after the K loop (the
    activations are loaded in the weight tile's layout, never converted in the loop)."""
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import kernel_for
    from tests.codegen.test_triton_row_scale import rms_norm

    k, n, group = 2048, 8192, 128
    b = Builder()
    h, g = b.input("h", (1, 1, k), BF16), b.input("g", (k,), BF16)
    q = b.input("q", (2 * n, k // 2), torch.uint8)
    s, z = b.input("s", (2 * n, k // group), BF16), b.input("z", (2 * n, k // group), BF16)
    y = b.call("quant_linear", b.call("reshape", rms_norm(b, h, g), (1, k)), q, s, z, None, bits=4, group_size=group)
    y = b.call("mul", b.call("silu", b.call("slice", y, 1, 0, n)), b.call("slice", y, 1, n, 2 * n), overload="Tensor")
    node = fused_node(b, [y], "gemm")
    kern = kernel_for(node)
    dev = DeviceInfo(kind="cuda", name="h100", capability=(9, 0), sm_count=132, smem_per_block=232448)
    cfg = kern.space.default_config(kern.problem({}), dev)
    assert cfg["GEMV"] == 1 and cfg["BLOCK_K"] > group      # K blocks of several groups
    feed = {"h": torch.empty(1, 1, k, dtype=BF16), "g": torch.empty(k, dtype=BF16),
            "q": torch.empty(2 * n, k // 2, dtype=torch.uint8), "s": torch.empty(2 * n, k // group, dtype=BF16),
            "z": torch.empty(2 * n, k // group, dtype=BF16)}
    (c,) = _compile(node, feed, cfg)
    assert c.resources.get("LOCAL", 0) == 0 and c.features.get("wgmma", 0) == 0, (c.resources, c.features)
    assert c.ptx.count("ld.global.v4") >= 8, c.features
    assert c.ptx.count("ld.shared") <= 8 and c.shared <= 64, (c.ptx.count("ld.shared"), c.shared)


def test_int8_gemv_keeps_the_weight_tile_in_its_layout():
    """The int8 down projection of a Llama-1B decode (8192 -> 2048, one row), default
    configuration: the weight bytes and the activations loaded 16 bytes at a time in one
    layout (before the runs form the int8 tile went through shared memory every iteration:
    16 two-byte shared stores and 4 KB of shared memory)."""
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import kernel_for

    k, n = 8192, 2048
    b = Builder()
    x, q, s = b.input("x", (1, k), BF16), b.input("q", (n, k), torch.int8), b.input("s", (n,), BF16)
    node = fused_node(b, [b.call("quant_linear", x, q, s, None, None, bits=8, group_size=0)], "gemm")
    kern = kernel_for(node)
    dev = DeviceInfo(kind="cuda", name="h100", capability=(9, 0), sm_count=132, smem_per_block=232448)
    cfg = kern.space.default_config(kern.problem({}), dev)
    assert cfg["GEMV"] == 1
    feed = {"x": torch.empty(1, k, dtype=BF16), "q": torch.empty(n, k, dtype=torch.int8), "s": torch.empty(n, dtype=BF16)}
    (c,) = _compile(node, feed, cfg)
    assert c.resources.get("LOCAL", 0) == 0, c.resources
    assert c.ptx.count("ld.global.v4") >= 4, c.features
    assert c.ptx.count("st.shared") <= 4 and c.shared <= 64, (c.ptx.count("st.shared"), c.shared)


def test_bf16_gemv_runs_form_compiles_without_layout_changes():
    """GEMV=2 (the runs form) on the bf16 down projection: 16-byte loads, nothing spilled,
    shared memory only for the reduction after the K loop (GEMV=1 converts the activation
    tile through 4 KB of shared memory every iteration)."""
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton import kernel_for

    k, n = 8192, 2048
    b = Builder()
    x, w = b.input("x", (1, k), BF16), b.input("w", (n, k), BF16)
    node = fused_node(b, [b.call("mm", x, b.call("permute", w, (1, 0)))], "gemm")
    kern = kernel_for(node)
    dev = DeviceInfo(kind="cuda", name="h100", capability=(9, 0), sm_count=132, smem_per_block=232448)
    cfg = dict(kern.space.default_config(kern.problem({}), dev), GEMV=2)
    (c,) = _compile(node, {"x": torch.empty(1, k, dtype=BF16), "w": torch.empty(n, k, dtype=BF16)}, cfg)
    assert c.resources.get("LOCAL", 0) == 0, c.resources
    assert c.ptx.count("ld.global.v4") >= 4 and c.ptx.count("st.shared") <= 4 and c.shared <= 64


GEMV_ONE_ROW = {"BLOCK_M": 1, "BLOCK_N": 4, "GROUP_M": 1, "num_warps": 4, "num_stages": 3, "SPLIT_K": 1, "TMA": 0,
                "PERSISTENT": 0, "GEMV": 1}


def _knob_off_and_on(node, feed, knob: str, block_k: int):
    """The one-row GEMV compiled for sm_90 with ``knob`` off, then on; neither spills."""
    off, on = (_compile(node, feed, dict(GEMV_ONE_ROW, BLOCK_K=block_k, **{knob: v})) for v in (0, 1))
    assert len(off) == len(on) == 1
    for c in (off[0], on[0]):
        assert c.resources.get("LOCAL", 0) == 0, c.resources
    return off[0], on[0]


def test_a_norm_prologue_summed_in_its_own_pass_frees_registers():
    """The int8 GEMV with RMSNorm folded in (a QKV or LM-head group at decode): with the
    squares kept per element of the weight tile (red3) the default config needs about twice the
    registers of the same kernel with the squares summed in a pass over A first (``PRO_PASS``:
    116 against 56 with triton 3.6); neither spills."""
    from tests.codegen.test_triton_row_scale import rms_norm

    k, n = 2048, 4096
    b = Builder()
    h = b.input("h", (1, 1, k), BF16)
    g = b.input("g", (k,), BF16)
    x = b.call("reshape", rms_norm(b, h, g), (1, k))
    y = b.call("quant_linear", x, b.input("q", (n, k), torch.int8), b.input("s", (n,), BF16), None, None, bits=8,
               group_size=0)
    node = fused_node(b, [y], "gemm")
    feed = {"h": torch.empty(1, 1, k, dtype=BF16), "g": torch.empty(k, dtype=BF16),
            "q": torch.empty(n, k, dtype=torch.int8), "s": torch.empty(n, dtype=BF16)}
    per_element, own_pass = _knob_off_and_on(node, feed, "PRO_PASS", 1024)
    if "REG" in own_pass.resources:
        assert own_pass.resources["REG"] < 0.75 * per_element.resources["REG"], (own_pass.resources,
                                                                                 per_element.resources)


def test_int4_runs_summed_then_scaled_free_registers():
    """The int4 down projection's GEMV (K = 8192, four K blocks of 2048): with each run's
    products summed and scaled once a block (``RUN_SCALE``) its accumulator is one value a run,
    not one a byte of the weight tile: fewer registers (95 against 128 for sm_90 here), no
    spills either way."""
    k, n = 8192, 2048
    b = Builder()
    x = b.input("x", (1, k), BF16)
    y = b.call("quant_linear", x, b.input("q", (n, k // 2), torch.uint8), b.input("s", (n, k // 128), BF16),
               b.input("z", (n, k // 128), BF16), None, bits=4, group_size=128)
    node = fused_node(b, [y], "gemm")
    feed = {"x": torch.empty(1, k, dtype=BF16), "q": torch.empty(n, k // 2, dtype=torch.uint8),
            "s": torch.empty(n, k // 128, dtype=BF16), "z": torch.empty(n, k // 128, dtype=BF16)}
    per_byte, per_run = _knob_off_and_on(node, feed, "RUN_SCALE", 2048)
    if "REG" in per_run.resources:
        assert per_run.resources["REG"] < 0.85 * per_byte.resources["REG"], (per_run.resources, per_byte.resources)
