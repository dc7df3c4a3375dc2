"""TVM kernels for fused groups: the :class:`~braze.compiler.kernels.Kernel`
protocol, and the callable a compiled config becomes.

Shapes: one kernel per group is **shape-generic** — symbolic dims stay TIR
variables, passed as scalars, and TVM checks every buffer against them on
each call; a config is compiled once for all sizes (the config itself is
chosen per shape bucket by ``autotune/``).

Calls are zero-copy: torch tensors go to the TVM function through DLPack
(``tvm_ffi`` takes them as they are), outputs are allocated by torch and
written in place. An operand that is not contiguous is passed as its
storage (a 1-D view starting at its first element) plus its strides,
through a variant compiled the first time that operand arrives strided
(the contiguous variant stays the fast path).
"""
from __future__ import annotations

import functools
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from braze.autotune.space import Config, DeviceInfo, Space, device_info, pow2_bucket
from braze.compiler.codegen.tvm.ops import GEMM, LAYOUT, REDUCTION
from braze.autotune.contract import LibraryKernel, structural_key
from braze.compiler.codegen.calls import version_of
from braze.ir import Graph, Node
from braze.ir.types import DTYPE_NAMES, Sym, eval_dim

log = logging.getLogger("braze.codegen.tvm")

KEY_VERSION = "tvm-1"

# How many compiled configs were made callable (tests read it to see that TVM kernels ran).
STATS = {"runners": 0, "fallbacks": 0}
# (kernel key, config) -> why TVM could not build it, for the rest of the process.
_BUILD_FAILURES: dict = {}
_WARNED: set = set()


class KernelBuildError(RuntimeError):
    """TVM could not build a kernel for a config (the message says which and why)."""



def _bucket(d, env) -> int:
    return d if isinstance(d, int) else pow2_bucket(eval_dim(d, env))


def _numel(dims, env) -> int:
    out = 1
    for d in dims:
        out *= eval_dim(d, env)
    return out


# Byte alignment TVM's generated code assumes of every buffer (its runtime's
# allocation alignment); torch's own allocations meet it.
ALIGN = 64


@dataclass
class TVMKernel:
    """A fused group compiled by TVM (kind pointwise | reduction | gemm)."""

    node: Node
    kind: str
    device_kind: str = "cpu"
    name: str = ""
    backend: str = "tvm"
    space: Space = None
    const_operands: frozenset = frozenset()  # operand positions that are graph constants (weights)
    _sources: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        from braze.compiler.codegen.tvm import schedule_cpu, schedule_cuda  # lazy: imports tvm on first use

        self.sub: Graph = self.node.attr("graph")
        self.name = self.name or f"tvm_{self.node.attr('name') or self.kind}"
        spaces = schedule_cuda.SPACES if self.device_kind == "cuda" else schedule_cpu.SPACES
        if self.space is None:
            self.space = spaces[self.kind]
        self.input_types = [n.type for n in self.sub.inputs]
        self._sym_sources = _sym_sources(self.input_types)

    # --- Kernel protocol ----------------------------------------------------------
    def key(self) -> str:
        return structural_key(self.node, f"{KEY_VERSION}|{self.device_kind}|{self.kind}")

    def problem(self, env: Mapping[str, int]) -> dict:
        sub, out = self.sub, self.sub.outputs[0].type
        dtype = DTYPE_NAMES.get(out.dtype, str(out.dtype))
        if self.kind == "pointwise":
            return {"numel": pow2_bucket(_numel(out.shape, env)) if out.symbols else _numel(out.shape, env),
                    "last": _bucket(out.shape[-1], env) if out.rank else 1, "dtype": dtype}
        if self.kind == "reduction":
            x = [n for n in sub.nodes if n.op in REDUCTION][0].args[0].type
            rows = _numel(x.shape[:-1], env)
            return {"rows": pow2_bucket(rows) if x.symbols else rows, "N": _bucket(x.shape[-1], env),
                    "dtype": DTYPE_NAMES.get(x.dtype, str(x.dtype))}
        g = [n for n in sub.nodes if n.op in GEMM][0]
        a = (g.args[1] if g.op == "addmm" else g.args[0]).type
        b = (g.args[2] if g.op == "addmm" else g.args[1]).type
        from braze.compiler.codegen.tvm.lower import prepack_operand  # lazy: imports tvm on first use

        return {"batch": _bucket(a.shape[0], env) if a.rank == 3 else 1, "M": _bucket(a.shape[-2], env),
                "N": _bucket(b.shape[-1], env), "K": _bucket(a.shape[-1], env),
                "dtype": DTYPE_NAMES.get(a.dtype, str(a.dtype)),
                "b_const": int(prepack_operand(sub) in self.const_operands)}

    @property
    def source(self) -> str:
        """TVMScript of the kernel scheduled with its default config (for the report and dumps)."""
        if "default" not in self._sources:
            env = {s: 128 for s in _all_symbols(self.sub)}
            dev = device_info("cpu") if self.device_kind == "cpu" else _cuda_info()
            cfg = self.space.default_config(self.problem(env), dev)
            try:
                self._sources["default"] = self.scheduled(cfg).script()
            except Exception as e:  # noqa: BLE001 - compile() falls back to torch the same way
                self._sources["default"] = f"# TVM could not schedule {self.name}: {type(e).__name__}: " + \
                    (str(e).splitlines()[0] if str(e) else "")
        return self._sources["default"]

    def compile(self, config: Config) -> Callable[..., Any]:
        """The kernel compiled for ``config``. Should TVM fail to build it (a bug:
        the checker accepted the group), ``KernelBuildError`` is raised: the
        selector records the config as a compile error and picks another
        candidate, the launcher runs the group's reference ops. The warning is
        given once per kernel and config in a process, not once per call site."""
        key = (self.key(), tuple(sorted(config.items())))
        known = _BUILD_FAILURES.get(key)
        if known is not None:
            raise KernelBuildError(known)
        try:
            return Runner(self, dict(config))
        except Exception as e:  # noqa: BLE001 - logged once, remembered, raised
            STATS["fallbacks"] += 1
            msg = (f"TVM could not build {self.name} with {dict(config)} ({type(e).__name__}: "
                   f"{str(e).splitlines()[0] if str(e) else ''})")
            _BUILD_FAILURES[key] = msg
            warned = (self.name, key[1])      # once per kernel and config, whatever the shape
            if warned not in _WARNED:
                _WARNED.add(warned)
                log.warning("braze: %s; another candidate runs it", msg)
            else:
                log.info("braze: %s; another candidate runs it", msg)
            raise KernelBuildError(msg) from e

    def _reference(self) -> Callable[..., Any]:  # NOTE: for empty operands (see Runner._empty)

        return LibraryKernel(self.node).compile({})

    # --- building ----------------------------------------------------------------
    def lowered(self, config: Config, strided: frozenset = frozenset()):
        from braze.compiler.codegen.tvm.lower import LowerOptions, lower_group  # lazy: imports tvm on first use

        cuda = self.device_kind == "cuda"
        opts = LowerOptions(
            target_kind="cuda" if cuda else "llvm",
            index_dtype="int32" if cuda and not _all_symbols(self.sub) else "int64",
            strided=strided,
            stage=bool(config.get("stage", True)),
            mr=int(config.get("mr", 1)) if self.kind == "gemm" and not cuda else 1,
            nr=int(config.get("nr", 1)) if self.kind == "gemm" and not cuda else 1,
            pack=bool(config.get("pack", False)) if self.kind == "gemm" and not cuda else False,
            prepack=bool(config.get("prepack", False)) and self.kind == "gemm" and not cuda and bool(
                self.const_operands),
            lanes=int(config.get("vec", 1)) if self.kind == "reduction" and not cuda else 1,
            gemm_layout=str(config.get("layout", "nn")) if self.kind == "gemm" and not cuda else "nn",
            tm=int(config.get("tm", 4)),
            k_lanes=_k_lanes(self.input_types),
        )
        return lower_group(self.sub, self.kind, opts)

    def schedule_module(self, low, config: Config):
        from braze.compiler.codegen.tvm import schedule_cpu, schedule_cuda  # lazy: imports tvm on first use

        sched = schedule_cuda if self.device_kind == "cuda" else schedule_cpu
        return sched.schedule(low, config)

    def scheduled(self, config: Config, strided: frozenset = frozenset()):
        """The scheduled IRModule of one config."""
        return self.schedule_module(self.lowered(config, strided), config)

    def build(self, config: Config, strided: frozenset = frozenset()):
        """(lowered, packed function) for one config and one set of strided operands."""
        from braze.compiler.codegen.tvm import build as B  # lazy: imports tvm on first use

        low = self.lowered(config, strided)
        mod = self.schedule_module(low, config)
        target = B.cuda_target(_cuda_arch()) if self.device_kind == "cuda" else B.cpu_target()
        rt = B.build(mod, target)
        return low, rt["main"]

    def build_pack(self, config: Config, strided: frozenset = frozenset()):
        """The prepacking function of a GEMM's constant B for one layout of B:
        (lowered, packed function); its stride scalars are ``lowered.pack_stride_params``."""
        from braze.compiler.codegen.tvm import build as B  # lazy: imports tvm on first use
        from braze.compiler.codegen.tvm.schedule_cpu import schedule_pack  # lazy: imports tvm on first use

        low = self.lowered(config, strided)
        mod = schedule_pack(low.pack_func, bool(config.get("parallel", True)))
        return low, B.build(mod, B.cpu_target())["main"]


class Runner:
    """The callable of one compiled config: ``(*operand tensors) -> output(s)``."""

    def __init__(self, kernel: TVMKernel, config: Config):
        STATS["runners"] += 1
        if kernel.device_kind == "cpu":
            _warn_spinning_openmp()
        self.kernel = kernel
        self.config = config
        self.variants: dict[frozenset, tuple] = {}
        low, fn = kernel.build(config)
        self.variants[frozenset()] = (low, fn)
        self.fn = fn
        self.outputs = low.outputs
        # NOTE: a prepacked B (a graph constant) is packed on first use and kept
        # while the operand is the same tensor at the same version
        self.prepack = low.prepack_pos
        self._pack_fns: dict = {}  # unit-stride dims of B (None: contiguous) -> (lowered, pack function)
        self._packed, self._packed_key = None, None
        self._pack_sig = None   # what the pack function computes (see _pack_signature)
        self._pack_shape, self._pack_dtype = low.pack_shape, torch.float64 if any(
            t.dtype == torch.float64 for t in kernel.input_types) else torch.float32
        self.sym_names = low.sym_names
        self.static = not low.sym_names
        self.n_out = len(self.outputs)
        self.single = self.n_out == 1
        self.device = torch.device("cuda" if kernel.device_kind == "cuda" else "cpu")
        # NOTE: alloc/view shapes are precomputed for static kernels (the hot path).
        if self.static:
            self._alloc = [tuple(s.alloc_dims) for s in self.outputs]
            self._views = [tuple(s.view_dims) if tuple(s.view_dims) != tuple(s.alloc_dims) else None
                           for s in self.outputs]
        # NOTE: on the CPU, bf16 buffers are int16 views of the same memory (see lazy.storage_dtype).
        bits = kernel.device_kind == "cpu"
        self._bits_in = [i for i, t in enumerate(kernel.input_types) if bits and t.dtype == torch.bfloat16]
        self._bits_out = [bits and s.dtype == torch.bfloat16 for s in self.outputs]
        self._dtypes = [torch.int16 if b else s.dtype for s, b in zip(self.outputs, self._bits_out)]
        # NOTE: the common call (static shapes, one output, no bf16 bit views, no prepacked
        # operand) takes a short path: per-call Python is most of a small kernel's time.
        self._simple = self.static and self.single and not self._bits_in and not any(self._bits_out) \
            and self.prepack is None and all(d > 0 for d in self._alloc[0])
        if self._simple:
            self._alloc0, self._dtype0, self._view0 = self._alloc[0], self._dtypes[0], self._views[0]

    def _env(self, xs) -> dict:
        return {name: int(xs[pos].shape[d]) for name, (pos, d) in self.kernel._sym_sources.items()}

    def __call__(self, *xs):
        if self._simple:
            for x in xs:
                if x.data_ptr() % ALIGN or not x.is_contiguous():
                    break
            else:
                out = torch.empty(self._alloc0, dtype=self._dtype0, device=self.device)
                self.fn(*xs, out)
                return out if self._view0 is None else out.view(self._view0)
        if self.static:
            outs = [torch.empty(s, dtype=t, device=self.device) for s, t in zip(self._alloc, self._dtypes)]
            views = self._views
            syms = ()
        else:
            if any(x.numel() == 0 for x in xs):  # e.g. a reduction over 0 elements: torch's semantics
                return self._empty(xs)
            env = self._env(xs)
            outs = [torch.empty([eval_dim(d, env) for d in s.alloc_dims], dtype=t, device=self.device)
                    for s, t in zip(self.outputs, self._dtypes)]
            views = [[eval_dim(d, env) for d in s.view_dims] for s in self.outputs]
            syms = tuple(env[n] for n in self.sym_names)
        if any(x.data_ptr() % ALIGN for x in xs):
            # TVM's kernels assume aligned buffers (a misaligned one faults): a
            # view at an odd offset, or weights read from a file, are copied
            xs = [x.clone() if x.data_ptr() % ALIGN else x for x in xs]
        if self._bits_in:
            xs = list(xs)
            for i in self._bits_in:
                xs[i] = xs[i].view(torch.int16)
        if self.prepack is not None:  # B goes packed (contiguous), whatever its own layout
            xs = list(xs)
            xs[self.prepack] = self._packed_operand(xs[self.prepack])
        strided = [i for i, x in enumerate(xs) if not x.is_contiguous()]
        if strided:
            key = frozenset((i, tuple(d for d in range(xs[i].dim()) if xs[i].stride(d) == 1)) for i in strided)
            self._call_strided(xs, outs, syms, key)
        elif outs[0].numel():
            self.fn(*xs, *outs, *syms)
        res = [o if v is None else o.view(v) for o, v in zip(outs, views)]
        for i, b in enumerate(self._bits_out):
            if b:
                res[i] = res[i].view(torch.bfloat16)
        return res[0] if self.single else tuple(res)

    def _packed_operand(self, x):
        key = (x.data_ptr(), version_of(x), tuple(x.shape), tuple(x.stride()), x.dtype)
        if key != self._packed_key:
            if self._pack_sig is None:
                self._pack_sig = _pack_signature(self.variants[frozenset()][0], self)
            packed = _shared_pack(x, key + (self._pack_sig,), self._pack_shape, self._pack_dtype)
            if packed is None:
                packed = self._pack(x)
                _share_pack(x, key + (self._pack_sig,), packed)
            self._packed, self._packed_key = packed, key
        return self._packed

    def _pack(self, x):
        unit = None if x.is_contiguous() else tuple(d for d in range(x.dim()) if x.stride(d) == 1)
        entry = self._pack_fns.get(unit)
        if entry is None:
            strided = frozenset() if unit is None else frozenset({(self.prepack, unit)})
            entry = self._pack_fns[unit] = self.kernel.build_pack(self.config, strided)
        low, fn = entry
        packed = torch.empty(self._pack_shape, dtype=self._pack_dtype, device=x.device)
        if unit is None:
            fn(x, packed)
        else:
            span = 1 + sum((s - 1) * st for s, st in zip(x.shape, x.stride()))
            fn(x.as_strided((span,), (1,)), packed, *[x.stride(d) for _, d in low.pack_stride_params])
        return packed

    def _empty(self, xs):
        """Empty operands (symbolic sizes of 0) run through the reference ops."""
        ref = getattr(self, "_ref", None)
        if ref is None:
            ref = self._ref = self.kernel._reference()
        return ref(*xs)

    def _call_strided(self, xs, outs, syms, key: frozenset) -> None:
        var = self.variants.get(key)
        if var is None:
            var = self.kernel.build(self.config, key)
            self.variants[key] = var
        low, fn = var
        positions = {pos for pos, _ in key}
        args = []
        for i, x in enumerate(xs):
            if i in positions:
                span = 1 + sum((s - 1) * st for s, st in zip(x.shape, x.stride())) if x.numel() else 0
                args.append(x.as_strided((span,), (1,)))
            else:
                args.append(x)
        strides = [xs[pos].stride(d) for pos, d in low.stride_params]
        if outs[0].numel():
            fn(*args, *outs, *syms, *strides)


@functools.lru_cache(maxsize=1)
def _warn_spinning_openmp() -> None:
    """Once per process, for the log: TVM's CPU thread pool and torch's OpenMP
    threads take turns on the same cores; OpenMP threads that spin-wait after
    each torch op (the default) starve TVM's workers (10-30x slower TVM kernels
    on 2 cores, bench/results/README.md). braze's programs pick their thread
    regime by timing (compiler/cpu_threads.py), so nothing needs setting."""
    import os

    if torch.get_num_threads() > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        log.info("braze: TVM CPU kernels share the cores with torch's OpenMP threads, which spin after each op; "
                 "each program times its first calls with torch's threads shared and with torch single-threaded "
                 "while it runs, and keeps the faster (OMP_WAIT_POLICY=PASSIVE, set before Python starts, "
                 "avoids the trade-off)")


def constant_data(v) -> bool:
    """A graph constant, or a view of one (e.g. nn.Linear's transposed weight)."""
    n = v.node
    while n.op in LAYOUT and len(n.inputs) == 1:
        n = n.inputs[0].node
    return n.op == "constant"


def _k_lanes(types) -> int:
    """Vector lanes of the float32 (or float64) accumulation on this CPU."""
    from braze.compiler.codegen.tvm.schedule_cpu import vector_bytes  # lazy: imports tvm on first use

    wide = any(t.dtype == torch.float64 for t in types)
    return max(2, vector_bytes() // (8 if wide else 4))


def _all_symbols(sub: Graph) -> set:
    out = set()
    for n in sub.nodes:
        for t in n.types:
            out |= t.symbols
    return out


def _sym_sources(types) -> dict:
    """symbol -> (operand position, dim) where it appears alone."""
    out: dict = {}
    for pos, t in enumerate(types):
        for d, dim in enumerate(t.shape):
            if isinstance(dim, Sym) and dim.expr in dim.symbols and dim.expr not in out:
                out[dim.expr] = (pos, d)
    return out


@functools.lru_cache(maxsize=1)
def _cuda_arch() -> str:
    try:
        major, minor = torch.cuda.get_device_capability()
        return f"sm_{major}{minor}"
    except Exception:  # noqa: BLE001 - building on a CPU machine: the lent GPU is an H100
        return "sm_90"


def _cuda_info() -> DeviceInfo:
    if torch.cuda.is_available():
        return device_info("cuda")
    return DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 132, 227 * 1024, 65536, 50 * 1024 * 1024)


# --------------------------------------------------------------------------- packed weights, shared
# NOTE: a packed B is a function of the weight (its bytes: address, version, shape, strides,
# dtype) and of the pack function, which reads B through the group's layout ops (a permute,
# a select of one expert...) into ``[.., N / nr, K, nr]``; every launcher packing the same
# weight by the same function shares one copy: the prefill and decode graphs of a model, and
# each recompile for a new shape, packed every weight again (braze.generate on the CPU held
# its weights three times). The function is named by the structural hash of its TIR (equal
# computations, equal hash; where hashing fails, the launcher's identity: no sharing).
# Entries live while a launcher holds the packed tensor; each names the weight's base tensor
# by a weakref, so a new tensor at a freed weight's address (same version, same shape) never
# reads the old packing.
_PACKS: "weakref.WeakValueDictionary[tuple, torch.Tensor]" = weakref.WeakValueDictionary()
_PACKS_LOCK = threading.Lock()


def _pack_signature(low, owner) -> tuple:
    try:
        import tvm  # lazy: only launchers with a prepacked operand get here

        hash_fn = getattr(tvm.ir, "structural_hash", None)
        if hash_fn is None:   # NOTE: TVM 0.27 keeps it in tvm_ffi
            import tvm_ffi

            hash_fn = tvm_ffi.structural_hash
        return ("tir", int(hash_fn(low.pack_func)))
    except Exception:  # noqa: BLE001 - not hashable: this launcher's packing is its own
        return ("launcher", id(owner))


def _base_of(x: torch.Tensor) -> torch.Tensor:
    return x if x._base is None else x._base


def _shared_pack(x: torch.Tensor, key: tuple, shape, dtype):
    with _PACKS_LOCK:
        packed = _PACKS.get((key, tuple(shape), dtype))
    if packed is None or getattr(packed, "_braze_source", lambda: None)() is not _base_of(x):
        return None
    return packed


def _share_pack(x: torch.Tensor, key: tuple, packed: torch.Tensor) -> None:
    packed._braze_source = weakref.ref(_base_of(x))
    with _PACKS_LOCK:
        _PACKS[(key, tuple(packed.shape), packed.dtype)] = packed
