"""Every registered op: its type rule and the interpreter agree with eager.

Part 1 traces PyTorch's OpInfo samples (fresh random inputs, several
dtypes) through make_fx with braze's decompositions, lowers them to braze
IR and interprets them: the result must equal eager, and every node's
declared type must match its op's type rule. Part 2 covers the registered
ops that make_fx never emits (CompositeImplicit ops, ops passes create)
with samples written here. The last test checks that together they cover
every registered op.
"""
from __future__ import annotations

import logging

import pytest
import torch
from torch.utils import _pytree as pytree

from braze.compiler.decompositions import decomposition_table
from braze.compiler.lower import LoweringError, Placeholder, lower
from braze.ir import REGISTRY, Builder, Category, Sym, infer_types, interpret, verify
import braze.ir.attention_varlen  # noqa: F401 - registers attention_varlen

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool)
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}
NONDETERMINISTIC = ("rand", "dropout", "bernoulli", "normal", "multinomial", "uniform", "empty", "sparse",
                    "fft", "linalg", "special", "quantile", "item", "narrow", "batch_norm", "unique", "nonzero",
                    "masked_select", "histc", "to_sparse", "stft", "bucketize", "searchsorted")
# Registered ops that only exist on CUDA.
CUDA_ONLY = {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_cudnn_attention"}

COVERED: dict[str, set] = {}


def _relevant(opinfo) -> bool:
    names = {opinfo.name, opinfo.name.split(".")[-1], opinfo.aten_name or "", (opinfo.aten_name or "").lstrip("_")}
    extra = {"softmax", "log_softmax", "layer_norm", "group_norm", "rms_norm", "scaled_dot_product_attention",
             "embedding", "gelu", "silu", "relu6", "linear", "__getitem__", "index_put", "pad", "logsumexp",
             "matmul", "cross_entropy"}
    return bool(names & set(REGISTRY)) or bool(names & extra) or opinfo.name.startswith("nn.functional.") and \
        opinfo.name.split(".")[-1] in extra


def _opinfos():
    pytest.importorskip("expecttest")
    from torch.testing._internal.common_methods_invocations import op_db

    return [op for op in op_db if _relevant(op) and not any(s in op.name for s in NONDETERMINISTIC)]


def _compare(out, ref, dtype):
    outs, _ = pytree.tree_flatten(out)
    refs, _ = pytree.tree_flatten(ref)
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        if not isinstance(r, torch.Tensor):
            continue
        assert o.shape == r.shape and o.dtype == r.dtype
        if r.is_floating_point() or r.is_complex():
            torch.testing.assert_close(o, r, rtol=TOL.get(dtype, 1e-5), atol=TOL.get(dtype, 1e-5), equal_nan=True)
        else:
            assert torch.equal(o, r)


def test_opinfo_samples_through_lowering_and_interpreter(caplog):
    caplog.set_level(logging.ERROR)
    table = decomposition_table()
    checked = 0
    for op in _opinfos():
        for dtype in DTYPES:
            if dtype not in op.supported_dtypes("cpu"):
                continue
            try:
                samples = list(op.sample_inputs("cpu", dtype))[:1]
            except Exception:  # noqa: BLE001 - some OpInfos need CUDA to sample
                continue
            for s in samples:
                leaves, spec = pytree.tree_flatten((s.input, s.args, s.kwargs))
                tidx = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]

                def fn(*ts, leaves=leaves, spec=spec, tidx=tidx):
                    ls = list(leaves)
                    for i, t in zip(tidx, ts):
                        ls[i] = t
                    a, args, kw = pytree.tree_unflatten(ls, spec)
                    return op.op(a, *args, **kw)

                ts = [leaves[i] for i in tidx]
                if not ts:
                    continue
                from torch.fx.experimental.proxy_tensor import make_fx

                with torch.no_grad():
                    ref = fn(*ts)
                    try:
                        gm = make_fx(fn, decomposition_table=table)(*ts)
                        g, _ = lower(gm, [Placeholder("input", f"x{i}") for i in range(len(ts))], name=op.name)
                    except (LoweringError, RuntimeError):
                        continue  # data-dependent or mutating samples: not a braze graph
                    verify(g, types=True)
                    out = interpret(g, *ts)
                _compare(tuple(out), tuple(pytree.tree_flatten(ref)[0]) if isinstance(ref, (tuple, list)) else (ref,),
                         dtype)
                checked += 1
                for n in g.compute_nodes:
                    COVERED.setdefault(n.op, set()).add(dtype)
    assert checked > 600


def _t(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


# Registered ops that make_fx never emits (decomposed before tracing, or
# created by braze's passes): (op, overload, args builder, kwargs).
DIRECT = [
    ("_fused_rms_norm", "default", lambda: (_t(4, 8), [8], _t(8), 1e-5), {}),
    ("_native_batch_norm_legit_no_training", "default",
     lambda: (_t(2, 3, 4), _t(3), _t(3), _t(3), _t(3).abs(), 0.1, 1e-5), {}),
    ("native_batch_norm", "default", lambda: (_t(2, 3, 4), _t(3), _t(3), _t(3), _t(3).abs(), False, 0.1, 1e-5), {}),
    ("_reshape_alias", "default", lambda: (_t(2, 6), [3, 4], [4, 1]), {}),
    ("_scaled_dot_product_attention_math", "default", lambda: (_t(1, 2, 5, 8), _t(1, 2, 5, 8), _t(1, 2, 5, 8)), {}),
    ("_scaled_dot_product_flash_attention_for_cpu", "default",
     lambda: (_t(1, 2, 5, 8), _t(1, 2, 5, 8), _t(1, 2, 5, 8)), {}),
    ("scaled_dot_product_attention", "default", lambda: (_t(1, 2, 5, 8), _t(1, 2, 5, 8), _t(1, 2, 5, 8)), {}),
    ("sdpa", "", lambda: (_t(1, 4, 5, 8), _t(1, 2, 5, 8), _t(1, 2, 5, 8)), {"is_causal": True, "enable_gqa": True}),
    ("attention", "", lambda: (_t(1, 4, 5, 8), _t(1, 2, 7, 8), _t(1, 2, 7, 8)),
     {"scale": 0.3, "causal": "bottom_right", "groups": 2, "window": 3}),
    ("attention_varlen", "", lambda: (_t(9, 4, 8), _t(11, 2, 8), _t(11, 2, 8), torch.tensor([0, 4, 9], dtype=torch.int32),
                                      torch.tensor([0, 5, 11], dtype=torch.int32)),
     {"scale": 0.35, "causal": "bottom_right", "groups": 2}),
    ("padding_index", "", lambda: (torch.tensor([[1, 1, 0], [0, 1, 1]]),), {"symbol": "t0"}),
    ("pack", "", lambda: (_t(2, 3, 4), torch.tensor([0, 1, 4, 5])), {}),
    ("unpack", "", lambda: (_t(4, 5), torch.tensor([0, 1, 4, 6])), {"batch": 2, "seq": 3}),
    ("addcdiv", "default", lambda: (_t(3, 4), _t(3, 4), _t(3, 4).abs() + 1), {"value": 0.5}),
    ("addcmul", "default", lambda: (_t(3, 4), _t(3, 4), _t(3, 4)), {"value": 0.5}),
    ("alias", "default", lambda: (_t(3, 4),), {}),
    ("contiguous", "default", lambda: (_t(3, 4),), {}),
    ("detach", "default", lambda: (_t(3, 4),), {}),
    ("chunk", "default", lambda: (_t(4, 6), 2, 1), {}),
    ("copy", "default", lambda: (_t(3, 4), _t(3, 4)), {}),
    ("expand_as", "default", lambda: (_t(1, 4), _t(3, 4)), {}),
    ("flatten", "using_ints", lambda: (_t(2, 3, 4), 0, -1), {}),
    ("unflatten", "int", lambda: (_t(2, 6), 1, [2, 3]), {}),
    ("movedim", "int", lambda: (_t(2, 3, 4), 0, 2), {}),
    ("narrow", "default", lambda: (_t(5, 4), 0, 1, 2), {}),
    ("index", "Tensor", lambda: (_t(5, 4), [torch.tensor([0, 3, 3])]), {}),
    ("isfinite", "default", lambda: (_t(3, 4),), {}),
    ("linear", "default", lambda: (_t(3, 4), _t(5, 4), _t(5)), {}),
    ("matmul", "default", lambda: (_t(2, 3, 4), _t(4, 5)), {}),
    ("logsumexp", "default", lambda: (_t(3, 4), [1]), {}),
    ("native_group_norm", "default", lambda: (_t(2, 4, 3), _t(4), _t(4), 2, 4, 3, 2, 1e-5), {}),
    ("native_layer_norm", "default", lambda: (_t(3, 8), [8], _t(8), _t(8), 1e-5), {}),
    ("norm", "Scalar", lambda: (_t(3, 4), 2), {}),
    ("prims::convert_element_type", "default", lambda: (_t(3, 4), torch.float16), {}),
    ("relu6", "default", lambda: (_t(3, 4),), {}),
    ("repeat_interleave", "self_int", lambda: (_t(3, 4), 2, 0), {}),
    ("reshape", "default", lambda: (_t(3, 4), [2, 6]), {}),
    ("square", "default", lambda: (_t(3, 4),), {}),
    ("std_mean", "correction", lambda: (_t(3, 4), [1]), {}),
    ("view_as_real", "default", lambda: (torch.randn(3, 4, dtype=torch.complex64),), {}),
    ("_softmax", "default", lambda: (_t(3, 4), -1, False), {}),
    ("_log_softmax", "default", lambda: (_t(3, 4), 1, False), {}),
    ("arange", "start_step", lambda: (2, 11, 3), {"dtype": torch.float32}),
    ("full", "default", lambda: ([2, 3], 1.5), {}),
    ("zeros", "default", lambda: ([2, 3],), {}),
    ("eye", "default", lambda: (3,), {}),
    ("empty", "memory_format", lambda: ([2, 3],), {"dtype": torch.float32}),
    ("empty_like", "default", lambda: (_t(2, 3),), {}),
    ("new_empty", "default", lambda: (_t(2, 3), [4]), {}),
    ("empty_strided", "default", lambda: ([2, 3], [3, 1]), {}),
]


@pytest.mark.parametrize("op,overload,make,kwargs", DIRECT, ids=[d[0] for d in DIRECT])
def test_direct_samples(op, overload, make, kwargs):
    args = make()
    b = Builder()
    inputs = {}

    def to_value(a):
        if isinstance(a, torch.Tensor):
            v = b.input(f"x{len(inputs)}", tuple(a.shape), a.dtype)
            inputs[v] = a
            return v
        if isinstance(a, list):
            return tuple(to_value(x) for x in a)
        return a

    vargs = tuple(to_value(a) for a in args)
    outs = b.call(op, *vargs, overload=overload, **kwargs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = b.graph(list(outs), name=op)
    if op == "padding_index":  # its token count is a run-time symbol, bounded by batch * seq
        from dataclasses import replace

        g = replace(g, sym_bounds=(("t0", 6),))
    verify(g, types=True)
    got = interpret(g, *inputs.values())
    fn = REGISTRY[op].resolve(overload)
    ref = fn(*args, **kwargs)
    refs = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
    for o, r, t in zip(got, refs, infer_types(op, vargs, tuple(kwargs.items()), overload)):
        assert tuple(o.shape) == tuple(r.shape) and o.dtype == r.dtype == t.dtype and len(t.shape) == o.dim()
        assert all(isinstance(d, Sym) or d == e for d, e in zip(t.shape, o.shape))  # run-time dims are symbols
        if "empty" not in op:
            torch.testing.assert_close(o, r)
    COVERED.setdefault(op, set()).add(args[0].dtype if args and isinstance(args[0], torch.Tensor) else None)


def test_every_registered_op_is_covered():
    # Runs last in this module (pytest keeps file order).
    registered = {name for name, op in REGISTRY.items()
                  if op.category not in (Category.OPAQUE, Category.IO, Category.FUSED) and name not in CUDA_ONLY}
    missing = sorted(registered - set(COVERED))
    assert not missing, f"registered ops with no numerical test: {missing}"
