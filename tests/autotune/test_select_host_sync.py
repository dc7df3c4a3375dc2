"""The quick selection keeps candidates that read device data on the host (the varlen
attention's torch reference and SDPA-per-sequence path) as a last resort: timed alone they
look as fast as their kernels, in a program the GPU waits for the host and a CUDA graph
cannot hold them."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from braze.autotune.contract import LibraryKernel
from braze.autotune.select import fastest
from braze.compiler.codegen.triton_attention.sdpa import SdpaAttention
from braze.compiler.codegen.triton_attention.spec import read_spec
from braze.ir import Builder


@dataclass(eq=False)
class Fake:
    name: str
    syncs_host: bool = False


def test_a_faster_host_syncing_candidate_loses_to_a_device_only_one():
    sync, dev, lib = Fake("sdpa per sequence", True), Fake("triton"), Fake("cublas")
    assert fastest([(0.1, sync, {}), (0.3, dev, {}), (0.2, lib, {})])[1] is lib
    assert fastest([(0.1, sync, {}), (0.3, dev, {"A": 1})])[1] is dev
    assert fastest([(0.1, sync, {}), (0.3, dev, {})], "cpu")[1] is sync    # no device to stall on a CPU


def test_a_host_syncing_candidate_is_chosen_when_it_is_the_only_correct_one():
    sync = Fake("reference", True)
    assert fastest([(0.5, sync, {})])[1] is sync


def _varlen_node():
    b = Builder()
    q = b.input("q", ("t", 4, 16), torch.float16, "cpu")
    k = b.input("k", ("t", 4, 16), torch.float16, "cpu")
    v = b.input("v", ("t", 4, 16), torch.float16, "cpu")
    cu = b.input("cu", (3,), torch.int32, "cpu")
    out = b.call("attention_varlen", q, k, v, cu, cu, None, None, scale=0.25, max_seqlen_q=8, max_seqlen_k=8,
                 causal="none", window=None, groups=1)
    g = b.graph([out])
    return next(n for n in g.nodes if n.op == "attention_varlen")


def test_which_library_calls_sync_the_host():
    node = _varlen_node()
    assert LibraryKernel(node).syncs_host                     # the op's reference: lengths via tolist
    assert SdpaAttention(read_spec(node)).syncs_host          # SDPA one sequence at a time
    b = Builder()
    x = b.input("x", (4, 8), torch.float32, "cpu")
    w = b.input("w", (8, 8), torch.float32, "cpu")
    mm = b.call("mm", x, w)
    g = b.graph([mm])
    assert not LibraryKernel(next(n for n in g.nodes if n.op == "mm")).syncs_host


def test_a_database_hit_follows_the_rule_on_a_gpu_only(db_path):
    """``_exact_hit``: the varlen attention's reference recorded faster than flash varlen
    is still not what a GPU runs; on the CPU the recorded times decide."""
    from types import SimpleNamespace

    from braze.autotune.db import Trial, get_db, software_key
    from braze.autotune.select import _exact_hit
    from braze.autotune.space import DeviceInfo
    from braze.compiler.codegen.triton_attention.sdpa import FlashVarlenAttention

    node = _varlen_node()
    ref, flash = LibraryKernel(node), FlashVarlenAttention(read_spec(node))
    env = {"t": 16}
    db, sw = get_db(), software_key()
    for dev in (DeviceInfo("cuda", "Fake GPU", (9, 0), 132), DeviceInfo("cpu", "Fake CPU", cores=2)):
        for k, ms in ((ref, 0.1), (flash, 0.3)):
            db.record(Trial(dev.key, sw, k.key(), k.name, k.backend, k.problem(env), {}, "ok", ms, origin="quick"))
        launcher = SimpleNamespace(candidates=[ref, flash], device=dev)
        choice = _exact_hit(launcher, env, db, sw, tune=False)
        assert choice.kernel is (flash if dev.kind == "cuda" else ref), dev
