"""Attention kernels inside braze: the generator's candidates for attention
nodes, the checker, the SDPA library candidate, the attention_varlen op,
search spaces and defaults, and a compiled graph end to end (CPU, under
TRITON_INTERPRET=1).
"""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

# NOTE: tests/codegen/conftest.py switches TRITON_INTERPRET on for each test (CPU tensors).

import braze  # noqa: E402
from braze.autotune.space import DeviceInfo  # noqa: E402
from braze.compiler.codegen import CHECKERS, supported  # noqa: E402
from braze.compiler.codegen.triton_attention import candidates, space  # noqa: E402
from braze.compiler.codegen.triton_attention.sdpa import sdpa_attention  # noqa: E402
from braze.ir.attention_varlen import attention_varlen_reference  # noqa: E402
from braze.compiler.driver import compile_graph  # noqa: E402
from braze.compiler.kernels import GENERATORS, LibraryKernel, kernels_for  # noqa: E402
from braze.compiler.report import GraphReport  # noqa: E402
from braze.ir import Builder, get_op, verify  # noqa: E402
from braze.ir.attention import attention_reference  # noqa: E402
from braze.compiler.codegen.triton_attention.spec import read_spec  # noqa: E402

H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448, 65536, 50 * 2 ** 20)
CPU = DeviceInfo("cpu", "x86_64", cores=2)


def _rel(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def attention_graph(sq="s0", sk="s1", d=64, hq=4, hkv=2, dtype=torch.float32, mask_shape=None, mask_dtype=None,
                    slopes=False, **attrs):
    b = Builder()
    q = b.input("q", (2, hq, sq, d), dtype)
    k = b.input("k", (2, hkv, sk, d), dtype)
    v = b.input("v", (2, hkv, sk, d), dtype)
    kw = dict(scale=d ** -0.5, groups=hq // hkv, **attrs)
    args = [q, k, v]
    if mask_shape is not None:
        args.append(b.input("m", mask_shape, mask_dtype))
    if slopes:
        kw["slopes"] = b.input("slopes", (hq,), torch.float32)
    out = b.call("attention", *args, **kw)
    return b.graph([out], name="attn")


def test_generator_and_checker_are_registered():
    kernels_for(attention_graph(), braze.Options(), GraphReport("x"))  # loads the code generators
    assert "triton_attention" in [name for name, _ in GENERATORS]
    assert "triton_attention" in CHECKERS


def test_candidates_triton_sdpa_library_and_compiled_graph():
    g = attention_graph(mask_shape=(2, 1, 1, "s1"), mask_dtype=torch.bool, causal="bottom_right", mask_kind="bool")
    verify(g, types=True)
    opts = braze.Options(backend="triton")  # the triton_attention generator (TVM's has its own tests)
    launchers = kernels_for(g, opts, GraphReport("attn"))
    (launcher,) = launchers.values()
    kinds = [type(c) for c in launcher.candidates]
    assert kinds == [candidates.TritonAttention, candidates.SdpaAttention, LibraryKernel]
    assert launcher.primary.backend == "triton" and "gqa2" in launcher.primary.name
    prog = compile_graph(g, opts)
    for sq, sk in ((21, 30), (1, 45)):   # prefill and decode bindings of one program
        xs = (torch.randn(2, 4, sq, 64), torch.randn(2, 2, sk, 64), torch.randn(2, 2, sk, 64),
              torch.rand(2, 1, 1, sk) > 0.3)
        out = prog(*xs)[0]
        ref = attention_reference(*(x.double() if x.is_floating_point() else x for x in xs), scale=0.125,
                                  causal="bottom_right", groups=2, mask_kind="bool")
        assert _rel(out, ref) < 1e-5
    (launcher,) = prog.launchers.values()
    configs = [c.config for c in launcher.choices.values()]
    assert {c["PACK_GQA"] for c in configs} == {False, True}  # the decode binding packs the GQA heads


@pytest.mark.parametrize("attrs,mask", [
    (dict(causal="top_left"), None),
    (dict(causal="bottom_right"), None),          # Sq < Sk: an explicit lower-right mask
    (dict(causal="bottom_right", window=5), "bool"),
    (dict(causal="none"), "additive"),
])
def test_every_candidate_matches_the_reference(attrs, mask):
    sq, sk = 9, 23
    shape = (2, 1, sq, sk)
    g = attention_graph(sq, sk, mask_shape=shape if mask else None,
                        mask_dtype=torch.bool if mask == "bool" else torch.float32,
                        mask_kind=mask or "none", **attrs)
    xs = [torch.randn(2, 4, sq, 64), torch.randn(2, 2, sk, 64), torch.randn(2, 2, sk, 64)]
    if mask == "bool":
        xs.append(torch.rand(shape) > 0.3)
    elif mask:
        m = torch.randn(shape)
        m[..., ::3] = -math.inf
        xs.append(m)
    node = g.compute_nodes[0]
    ref = attention_reference(*(x.double() for x in xs[:3]), *(xs[3:] if mask == "bool" else
                                                               [x.double() for x in xs[3:]]),
                              scale=0.125, groups=2, mask_kind=mask or "none", **attrs)
    cands = candidates.generate(node, g, braze.Options(), CPU)
    assert len(cands) == 2
    for c in cands:
        fn = c.compile(c.space.default_config(c.problem({}), CPU))
        out = fn(*xs)
        assert _rel(out, ref) < 1e-5, c.name


def test_sdpa_zeros_for_rows_without_keys():
    q, k, v = torch.randn(1, 2, 7, 16), torch.randn(1, 2, 4, 16), torch.randn(1, 2, 4, 16)
    out = sdpa_attention(q, k, v, scale=0.25, causal="bottom_right")
    ref = attention_reference(q, k, v, scale=0.25, causal="bottom_right")
    assert torch.isfinite(out).all() and torch.equal(out[:, :, :3], torch.zeros_like(out[:, :, :3]))
    torch.testing.assert_close(out, ref)


def test_alibi_has_no_sdpa_candidate():
    g = attention_graph(slopes=True, causal="bottom_right")
    cands = candidates.generate(g.compute_nodes[0], g, braze.Options(), CPU)
    assert [type(c) for c in cands] == [candidates.TritonAttention]


def test_unsupported_nodes_are_declined_cleanly():
    big = attention_graph(d=512)
    node = big.compute_nodes[0]
    assert [type(c) for c in candidates.generate(node, big, braze.Options(), CPU)] == [candidates.SdpaAttention]
    assert not candidates.check("attention", node, "cpu")
    assert not candidates.check("attention", big, "cpu") or False
    ok = attention_graph()
    assert candidates.check("attention", ok, "cpu") and candidates.check("attention", ok.compute_nodes[0], "cuda")
    assert supported("attention", ok, "cpu")
    assert not candidates.check("pointwise", attention_graph().with_nodes(()), "cpu")
    b = Builder()
    x = b.input("x", (4, 4))
    relu = b.graph([b.call("relu", x)])
    assert candidates.generate(relu.compute_nodes[0], relu, braze.Options(), CPU) == []
    assert not candidates.check("pointwise", relu, "cuda")


def test_keys_are_stable_and_distinguish_attributes():
    a1 = candidates.generate(attention_graph(causal="top_left").compute_nodes[0], None, braze.Options(), CPU)[0]
    a2 = candidates.generate(attention_graph(causal="top_left").compute_nodes[0], None, braze.Options(), CPU)[0]
    a3 = candidates.generate(attention_graph(causal="bottom_right").compute_nodes[0], None, braze.Options(), CPU)[0]
    assert a1.key() == a2.key() != a3.key()
    assert "attention_fwd_kernel" in a1.source


# ---- the attention_varlen op ------------------------------------------------------------------

def test_varlen_op_graph_type_rule_and_candidate():
    b = Builder()
    q = b.input("q", ("t", 4, 32))
    k = b.input("k", ("u", 2, 32))
    v = b.input("v", ("u", 2, 32))
    cq = b.input("cq", (3,), torch.int32)
    ck = b.input("ck", (3,), torch.int32)
    out = b.call("attention_varlen", q, k, v, cq, ck, scale=32 ** -0.5, causal="bottom_right", groups=2)
    g = b.graph([out], name="varlen")
    verify(g, types=True)
    assert out.type.shape[1:] == (4, 32)
    cuq, cuk = torch.tensor([0, 6, 17], dtype=torch.int32), torch.tensor([0, 9, 20], dtype=torch.int32)
    xs = (torch.randn(17, 4, 32), torch.randn(20, 2, 32), torch.randn(20, 2, 32), cuq, cuk)
    ref = attention_varlen_reference(*(x.double() if x.is_floating_point() else x for x in xs), scale=32 ** -0.5,
                                     causal="bottom_right", groups=2)
    prog = compile_graph(g, braze.Options())
    (launcher,) = prog.launchers.values()
    assert isinstance(launcher.primary, candidates.TritonAttentionVarlen)
    assert _rel(prog(*xs)[0], ref) < 1e-5
    # The reference equals attention per sequence (sequence 1: 11 queries on its 11 keys).
    one = attention_reference(xs[0][6:].transpose(0, 1)[None].double(), xs[1][9:].transpose(0, 1)[None].double(),
                              xs[2][9:].transpose(0, 1)[None].double(), scale=32 ** -0.5, causal="bottom_right",
                              groups=2)
    torch.testing.assert_close(ref[6:], one[0].transpose(0, 1))


def test_varlen_type_rule_rejects_bad_operands():
    b = Builder()
    q = b.input("q", (8, 4, 32))
    cq = b.input("cq", (3,), torch.int64)
    with pytest.raises(Exception, match="int32"):
        b.call("attention_varlen", q, q, q, cq, cq, scale=0.1)
    assert get_op("attention_varlen").category.value == "attention"


@pytest.mark.parametrize("lens_q,lens_k,rows,attrs", [
    ([5, 17, 0, 33], [5, 17, 9, 40], 55, dict(causal="bottom_right")),      # uneven, an empty sequence
    ([12, 12, 12], [12, 12, 12], 36, dict(causal="bottom_right", window=4)),  # one length: one batched call
    ([7, 7], [7, 7], 16, dict(causal="none")),                               # bucket rows past cu[B]: zeros
])
def test_varlen_sdpa_candidate_on_the_cpu_only(lens_q, lens_k, rows, attrs):
    b = Builder()
    ins = [b.input("q", ("t", 4, 32)), b.input("k", ("u", 2, 32)), b.input("v", ("u", 2, 32)),
           b.input("cq", (len(lens_q) + 1,), torch.int32), b.input("ck", (len(lens_k) + 1,), torch.int32)]
    g = b.graph([b.call("attention_varlen", *ins, scale=32 ** -0.5, groups=2, **attrs)], name="varlen")
    node = g.compute_nodes[0]
    cands = candidates.generate(node, g, braze.Options(), CPU)
    assert type(cands[-1]) is candidates.SdpaAttention
    assert not any(type(c) is candidates.SdpaAttention for c in candidates.generate(node, g, braze.Options(), H100))
    cq = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    ck = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    xs = (torch.randn(rows, 4, 32), torch.randn(int(ck[-1]), 2, 32), torch.randn(int(ck[-1]), 2, 32), cq, ck)
    ref = attention_varlen_reference(*(x.double() if x.is_floating_point() else x for x in xs), scale=32 ** -0.5,
                                     groups=2, **attrs)
    out = cands[-1].compile({})(*xs)
    assert out.shape == ref.shape and _rel(out, ref) < 1e-5
    assert torch.equal(out[int(cq[-1]):], torch.zeros_like(out[int(cq[-1]):]))


def test_varlen_candidates_are_measured_on_valid_sequence_lengths():
    from braze.autotune.measure import Bench, MeasureSpec, measure

    b = Builder()
    q, k, v = b.input("q", ("t", 4, 32)), b.input("k", ("t", 2, 32)), b.input("v", ("t", 2, 32))
    cu = b.input("cu", (5,), torch.int32)
    g = b.graph([b.call("attention_varlen", q, k, v, cu, cu, scale=32 ** -0.5, groups=2, causal="bottom_right",
                        max_seqlen_q=20, max_seqlen_k=20)], name="varlen")
    node = g.compute_nodes[0]
    bench = Bench(node, {"t": 64}, "cpu", seed=3)
    cq, ck = bench.inputs[3], bench.inputs[4]
    assert cq is ck and cq[0] == 0 and cq[-1] <= 64
    lengths = cq.diff()
    assert (lengths >= 0).all() and (lengths <= 20).all() and lengths.sum() > 0
    for c in candidates.generate(node, g, braze.Options(), CPU):
        m = measure(c, c.space.default_config(c.problem({"t": 64}), CPU), bench,
                    MeasureSpec(warmup=0, reps=1, min_rep_ms=0, max_seconds=1, check=True, flush_l2=False))
        assert m.status == "ok", (c.name, m.error)


# ---- spaces and defaults ----------------------------------------------------------------------

def _problem(**kw):
    p = dict(B=4, Hq=32, Hkv=32, groups=1, Sq=4096, Sk=4096, D=128, Dv=128, dtype="bf16", causal="none",
             window=0, mask="none", alibi=False, varlen=False)
    p.update(kw)
    return p


@pytest.mark.parametrize("problem", [
    _problem(), _problem(causal="bottom_right"), _problem(B=8, Hkv=8, groups=4, Sq=2048, Sk=2048, D=64, Dv=64),
    _problem(B=8, Hkv=8, groups=4, Sq=1, Sk=4096), _problem(B=1, Hkv=8, groups=4, Sq=1, Sk=32768),
    _problem(D=256, Dv=256), _problem(dtype="f32", D=80, Dv=80),
])
def test_defaults_are_valid_on_h100_and_cpu(problem):
    for dev in (H100, CPU):
        cfg = space.ATTENTION_SPACE.default_config(problem, dev)
        assert space.ATTENTION_SPACE.valid(cfg, problem, dev), space.ATTENTION_SPACE.violations(cfg, problem, dev)
    cfg = space.default_config(problem, H100)
    assert space.ATTENTION_SPACE.valid(cfg, problem, H100)  # the table itself, not a fallback
    if problem["Sq"] == 1:
        # about half a wave of programs over the SMs (what measured best on an H100)
        assert cfg["PACK_GQA"] and cfg["TMA"]
        assert H100.sm_count // 4 <= problem["B"] * problem["Hkv"] * cfg["SPLITS"] <= H100.sm_count
        assert cfg["SPLITS"] == (1 if problem["B"] == 8 else 8)


def test_constraints_reject_what_does_not_fit():
    p = _problem(D=256, Dv=256)
    big = {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 4, "num_stages": 5, "PACK_GQA": False, "TMA": False,
           "SPLITS": 1, "MASK_SKIP": False, "FUSE_COMBINE": False}
    assert "shared memory: Q tile + num_stages K/V tiles" in space.ATTENTION_SPACE.violations(big, p, H100)
    assert space.ATTENTION_SPACE.violations(dict(big, SPLITS=4, num_stages=1, BLOCK_N=32, BLOCK_M=64,
                                                 num_warps=8), p, H100) == \
        ["SPLITS > 1 only for decode (Sq <= 16), >= one block per split"]
    assert "PACK_GQA needs groups > 1" in space.ATTENTION_SPACE.violations(dict(big, PACK_GQA=True), p, H100)
    assert "MASK_SKIP needs a mask operand" in space.ATTENTION_SPACE.violations(dict(big, MASK_SKIP=True), p, H100)
    # a mask operand's tiles are pipelined with K and V: they count in shared memory
    fits = dict(big, BLOCK_M=128, BLOCK_N=64, num_stages=3, num_warps=8)
    assert not space.ATTENTION_SPACE.violations(fits, _problem(), H100)
    assert space.smem_bytes(fits, _problem(mask="additive")) == space.smem_bytes(fits, _problem()) + 3 * 128 * 64 * 2
    n = sum(1 for _ in space.ATTENTION_SPACE.configs(_problem(B=8, Hkv=8, groups=4, Sq=1), H100))
    assert 0 < n < space.ATTENTION_SPACE.size()


def _varlen_node(dtype=torch.bfloat16, d=64, same_cu=True, bound=64, **attrs):
    b = Builder()
    ins = [b.input("q", ("t", 8, d), dtype), b.input("k", ("t", 2, d), dtype), b.input("v", ("t", 2, d), dtype)]
    cq = b.input("cq", (4,), torch.int32)
    ck = cq if same_cu else b.input("ck", (4,), torch.int32)
    g = b.graph([b.call("attention_varlen", *ins, cq, ck, scale=d ** -0.5, groups=4, max_seqlen_q=bound,
                        max_seqlen_k=bound, **attrs)], name="varlen")
    return g.compute_nodes[0], g


@pytest.mark.parametrize("kw,maps", [
    (dict(causal="bottom_right"), True),
    (dict(causal="none"), True),
    (dict(causal="top_left"), True),                            # q and k share cu_seqlens: same rule
    (dict(causal="top_left", same_cu=False), False),            # flash aligns bottom-right
    (dict(causal="bottom_right", window=16), True),
    (dict(causal="none", window=16), False),                    # a window alone is aligned top-left here
    (dict(causal="bottom_right", dtype=torch.float32), False),  # flash takes 16-bit types
    (dict(causal="bottom_right", d=72 + 4), False),             # head dim not a multiple of 8
    (dict(causal="bottom_right", bound=None), False),           # no static bound: it would need a host read
])
def test_flash_varlen_candidate_where_it_maps(kw, maps):
    node, g = _varlen_node(**kw)
    names = [type(c).__name__ for c in candidates.generate(node, g, braze.Options(), H100)]
    assert ("FlashVarlenAttention" in names) is maps, names
    assert "FlashVarlenAttention" not in [type(c).__name__ for c in candidates.generate(node, g, braze.Options(), CPU)]


@pytest.mark.parametrize("window", [None, 5])
def test_flash_varlen_glue_against_the_reference(monkeypatch, window):
    # The CUDA kernel is not here: an emulation of flash's varlen contract (bottom-right
    # causal, window_size_left/right, GQA, rows past cu[B] left as garbage) checks what the
    # candidate passes and that it zeroes the bucket rows.
    from braze.compiler.codegen.triton_attention import sdpa

    calls = []

    def fake(q, k, v, cq, ck, max_q, max_k, p, is_causal, dbg, *, scale, window_size_left=None,
             window_size_right=None):
        calls.append((max_q, max_k, is_causal, window_size_left, window_size_right))
        assert cq.dtype == torch.int32 and p == 0.0 and not dbg
        win = None if window_size_left is None else window_size_left + 1
        assert window_size_right in (None, 0)
        out = attention_varlen_reference(q, k, v, cq, ck, scale=scale, groups=q.shape[1] // k.shape[1],
                                         causal="bottom_right" if is_causal else "none", window=win)
        out[int(cq[-1]):] = math.nan
        return out, None, None, None, None

    monkeypatch.setattr(sdpa, "_flash_forward", fake)
    node, g = _varlen_node(dtype=torch.float32, causal="bottom_right", window=window)
    spec = candidates.read_spec(node)
    cand = sdpa.FlashVarlenAttention(spec)
    cq = torch.tensor([0, 9, 9, 30], dtype=torch.int32)
    q, k, v = torch.randn(40, 8, 64), torch.randn(40, 2, 64), torch.randn(40, 2, 64)
    out = cand.compile({})(q, k, v, cq, cq)  # one operand per argument, as the runtime passes them
    ref = attention_varlen_reference(q.double(), k.double(), v.double(), cq, cq, scale=64 ** -0.5, groups=4,
                                     causal="bottom_right", window=window)
    assert calls == [(64, 64, True, None if window is None else window - 1, None if window is None else 0)]
    assert _rel(out, ref) < 1e-5 and torch.equal(out[30:], torch.zeros_like(out[30:]))


@pytest.mark.parametrize("batch,sq,want", [
    (1, 1, ["", "_fused_combine", "_fine_split"]),   # split-KV: merged in the kernel, and finer
    (8, 1, [""]),                                   # 8 x 8 programs: no split, the variants would be the default
    (1, 512, [""]),                                 # prefill
    (1, "s0", [""]),                                # symbolic rows: not a decode step
])
def test_decode_variants_are_candidates_where_they_differ(batch, sq, want):
    """On a GPU a decode step's attention gets the template's decode variants (timed by the
    quick selection beside the default) only where their default configs differ from it."""
    b = Builder()
    q = b.input("q", (batch, 32, sq, 64), torch.bfloat16)
    k = b.input("k", (batch, 8, 2048, 64), torch.bfloat16)
    v = b.input("v", (batch, 8, 2048, 64), torch.bfloat16)
    m = b.input("m", (batch, 1, sq, 2048), torch.bool)
    g = b.graph([b.call("attention", q, k, v, m, scale=0.125, groups=4, mask_kind="bool")], name="decode")
    node = g.compute_nodes[0]
    cands = [c for c in candidates.generate(node, g, braze.Options(), H100) if isinstance(c, candidates.TritonAttention)]
    base = candidates._name(read_spec(node))
    assert [c.name[len(base):] for c in cands] == want
    if len(cands) > 1:
        problem = cands[0].problem({})
        cfgs = [c.space.default_config(problem, H100) for c in cands]
        assert cfgs[1]["FUSE_COMBINE"] and cfgs[2]["BLOCK_N"] == 64 and cfgs[2]["SPLITS"] == 2 * cfgs[0]["SPLITS"]
        assert len({c.key() for c in cands}) == 3 and all(c.quick_measure for c in cands[1:])


@pytest.mark.parametrize("dev", [H100, CPU], ids=["h100", "cpu"])
def test_varlen_default_is_the_table_not_a_fallback(dev):
    """The default table is valid in the varlen space (no knob it lacks): an invalid default
    silently became the space's first valid config (16 x 16 tiles, 2 warps)."""
    p = {"B": 4, "Hq": 12, "Hkv": 12, "groups": 1, "Sq": 512, "Sk": 512, "D": 64, "Dv": 64, "dtype": "f16",
         "mask": "none"}
    table = space.default_config(p, dev)
    assert space.VARLEN_SPACE.violations(table, p, dev) == []
    assert space.VARLEN_SPACE.default_config(p, dev) == space.VARLEN_SPACE.normalize(table)
    for name, sp in space.DECODE_VARIANTS.items():
        d = dict(p, Sq=1, Sk=2048, B=1, Hkv=4, groups=3)
        assert sp.valid(sp.default(d, dev), d, dev), name           # each variant's own default, not a fallback


def test_symbolic_varlen_bound_is_read_from_the_symbols_not_the_device(monkeypatch):
    """A dynamic padded length S bounds the packed sequences: the bound launcher passes S
    itself (no host read of cu_seqlens, which a CUDA graph capture cannot hold)."""
    from braze.ir.types import Sym
    from braze.autotune.contract import at_env
    from braze.compiler.codegen.triton_attention import launch

    b = Builder()
    ids = b.input("ids", (3, "s"), torch.int64)
    ins = [b.input("q", ("t", 4, 32)), b.input("k", ("t", 2, 32)), b.input("v", ("t", 2, 32))]
    cu = b.input("cu", (4,), torch.int32)
    out = b.call("attention_varlen", *ins, cu, cu, scale=32 ** -0.5, groups=2, causal="bottom_right",
                 max_seqlen_q=Sym("s"), max_seqlen_k=Sym("s"))
    g = b.graph([out, b.call("add", ids, 1)], name="varlen")
    tri = candidates.generate(g.compute_nodes[0], g, braze.Options(), CPU)[0]
    assert isinstance(tri, candidates.TritonAttentionVarlen)
    seen = []
    real = launch.attention_varlen

    def spy(*xs, **kw):
        seen.append((kw["max_seqlen_q"], kw["max_seqlen_k"]))
        return real(*xs, **kw)

    monkeypatch.setattr(launch, "attention_varlen", spy)
    fn = at_env(tri, tri.compile(tri.space.default_config(tri.problem({"t": 40, "s": 16}), CPU)),
                           {"t": 40, "s": 16})
    lens = torch.tensor([16, 9, 13])
    cq = torch.cat([torch.zeros(1, dtype=torch.int32), lens.cumsum(0).to(torch.int32)])
    xs = (torch.randn(40, 4, 32), torch.randn(40, 2, 32), torch.randn(40, 2, 32), cq, cq)
    got = fn(*xs)
    assert seen == [(16, 16)]
    ref = attention_varlen_reference(*(x.double() if x.is_floating_point() else x for x in xs), scale=32 ** -0.5,
                                     groups=2, causal="bottom_right")
    assert _rel(got[:38], ref[:38]) < 1e-5
    # without the symbols (a caller that has none) the bound is read off cu_seqlens
    tri.compile(tri.space.default_config(tri.problem({"t": 40, "s": 16}), CPU))(*xs)
    assert seen[-1] == (None, None)
