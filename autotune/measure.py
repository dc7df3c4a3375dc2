"""Measuring one config of one kernel: compile, check against the reference, time.

The reference is the node's library implementation (``LibraryKernel``: the
subgraph interpreter over ATen ops) run on the same random inputs in higher
precision (float64 for floating inputs). A candidate whose output differs
beyond the tolerance of its dtype is ``wrong`` and can never win.

Timing:

- CPU (TVM/LLVM kernels, the library): warm-up, then ``reps`` repetitions of
  an inner loop long enough to be timed by ``perf_counter``; the median. Where
  torch's OpenMP threads spin after a parallel region (more than one thread,
  ``OMP_WAIT_POLICY`` not passive), each call is timed right after a parallel
  ATen op, as it runs in a program that mixes the two: a TVM kernel then
  shares the cores with OpenMP's spinning threads (GPT-2 small's MLP GEMM on a
  2-core VM: 2.6 ms alone, 4.9 ms in the program, against the library's 3.4 ms
  in both), which a timing of the kernel alone would not see.
- CUDA: device time, not the host's launch path. Calls shorter than
  ``graph_below_us`` (all but the longest) are captured in a CUDA graph of
  many calls, each after a write of twice the L2 size that evicts the
  operands (as in a decode step, where every weight is read once); a second
  graph of the flushes alone is replayed in alternation, and the time per
  call is the difference of the medians. Longer calls, and calls that cannot
  be captured (a host read), are timed with CUDA events around each call
  after the same flush. Timed one call at a time with events, a 3 us kernel
  measured its host launch (10-40 us through Python), so library calls with
  cheaper launches won against faster generated kernels.

Each measurement runs in a worker process (:class:`MeasureWorker`, protocol
in ``autotune/worker.py``) so that a candidate that crashes, hangs or leaks
cannot hurt the caller: a dead worker is a ``runtime_error``, a worker that
does not answer in time is killed and the config is a ``timeout``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from braze.autotune import cublas_workspace
from braze.autotune.contract import LibraryKernel, at_env
from braze.ir import REGISTRY
from braze.ir.interpreter import random_operand

log = logging.getLogger("braze.autotune.measure")

# Relative tolerance (max |out - ref| / max |ref|) per output dtype.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
FP8_TOLERANCE = 1.5e-1


@dataclass
class MeasureSpec:
    """How to measure (JSON-able: it crosses to the worker)."""

    warmup: int = 2
    reps: int = 10
    min_rep_ms: float = 1.0        # CPU: inner loop at least this long per repetition
    max_seconds: float = 3.0       # cap on timing one config (reps shrink to fit)
    check: bool = True
    flush_l2: bool = True
    graph_below_us: float = 20000.0   # CUDA: calls shorter than this are timed as a CUDA graph
    seed: int = 0


@dataclass
class Measurement:
    status: str                    # ok | compile_error | runtime_error | timeout | wrong | invalid
    time_ms: Optional[float] = None
    stats: dict = field(default_factory=dict)
    compile_ms: Optional[float] = None
    error: str = ""
    max_err: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Measurement":
        return Measurement(**{k: d[k] for k in ("status", "time_ms", "stats", "compile_ms", "error", "max_err")
                              if k in d})


# --- inputs and reference ----------------------------------------------------
def node_device(node) -> str:
    """The torch device a node's kernel runs on ("cpu", "cuda:1"); a GPU index
    this process cannot see (a worker pinned with CUDA_VISIBLE_DEVICES) maps
    to its one visible GPU."""
    for t in tuple(v.type for v in node.inputs) + tuple(node.types):
        if t.device.startswith("cuda"):
            dev = torch.device(t.device)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                return "cuda:0"
            return str(dev)
    return "cpu"


def random_operands(node, env: Mapping[str, int], device: str, seed: int = 0,
                    values: bool = True) -> list[torch.Tensor]:
    """Fresh random tensors (never zeros) for the node's operands at ``env``, each with
    the strides it has at run time (``random_operand``: views of another value are
    replayed on a random base); operands with an invariant (``OpDef.sample``) keep it.
    ``values=False``: floating-point operands uninitialised (for a compile only)."""
    g = torch.Generator().manual_seed(seed)
    op = REGISTRY.get(node.op)
    special = op.sample(node, env, g) if op is not None and op.sample is not None else {}
    return [special[v].to(device) if v in special else random_operand(v, env, device, g, values=values)
            for v in node.inputs]


def reference_outputs(node, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The library implementation on the inputs in higher precision (float64
    for floating inputs), falling back to native precision if an op refuses."""
    fn = LibraryKernel(node).compile({})
    hi = [x.double() if x.is_floating_point() else x for x in inputs]
    chunks = _reference_chunks(node, inputs)
    try:
        with torch.no_grad():
            if chunks > 1:
                return _by_batch(fn, hi, chunks)
            out = fn(*hi)
    except Exception:  # noqa: BLE001 - e.g. an op with a fixed dtype; the native reference then
        with torch.no_grad():
            out = fn(*inputs)
    return as_tuple(out)


# Largest float64 score matrix the attention reference may materialise at once.
REFERENCE_SCORES_BYTES = 1 << 30


def _reference_chunks(node, inputs) -> int:
    """Batch slices for an attention node's reference: its float64 scores ``[B, H, Sq, Sk]``
    would otherwise take tens of GB at a prefill of batch 64 (a compile-time peak far
    above the model's own)."""
    if node.op != "attention" or len(inputs) < 3 or inputs[0].dim() != 4:
        return 1
    b, h, sq, _ = inputs[0].shape
    sk = inputs[1].shape[2]
    scores = b * h * sq * sk * 8
    return min(b, -(-scores // REFERENCE_SCORES_BYTES)) if scores > REFERENCE_SCORES_BYTES else 1


def _by_batch(fn, xs, chunks: int) -> tuple:
    """``fn`` over slices of the batch dim (operands of batch 1 broadcast), outputs concatenated."""
    b = xs[0].shape[0]
    step = -(-b // chunks)
    parts = []
    for lo in range(0, b, step):
        sl = [x[lo:lo + step] if x.dim() >= 1 and x.shape[0] == b and b > 1 else x for x in xs]
        parts.append(as_tuple(fn(*sl)))
    return tuple(torch.cat(p, dim=0) for p in zip(*parts))


def as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def compute_tolerance(node) -> float:
    """Relative tolerance of a node's outputs: that of the least precise float type
    it reads, computes in or returns. A group of float16 GEMMs whose result is cast
    to float32 rounds like float16; holding it to float32's tolerance rejects every
    candidate, the library's included."""
    types = [v.type for v in node.inputs] + list(node.types)
    sub = node.attr("graph") if node.op == "fused" else None
    if sub is not None:
        types += [t for n in sub.nodes for t in n.types]
    tols = [TOLERANCE.get(t.dtype, FP8_TOLERANCE) for t in types if t.dtype.is_floating_point]
    return max(tols, default=TOLERANCE[torch.float32])


def check_outputs(node, env: Mapping[str, int], outs, refs: Sequence[torch.Tensor]) -> tuple[Optional[str], float]:
    """(None, max error) when ``outs`` match the reference, else (what is wrong, error)."""
    outs = as_tuple(outs)
    tol = compute_tolerance(node)
    if len(outs) != len(node.types):
        return f"returned {len(outs)} outputs, expected {len(node.types)}", math.inf
    worst = 0.0
    for i, (o, r, t) in enumerate(zip(outs, refs, node.types)):
        if not isinstance(o, torch.Tensor):
            return f"output {i} is a {type(o).__name__}, not a tensor", math.inf
        want = t.concrete_shape(env)
        if tuple(o.shape) != tuple(want):
            return f"output {i} has shape {list(o.shape)}, expected {list(want)}", math.inf
        if o.dtype != t.dtype:
            return f"output {i} has dtype {o.dtype}, expected {t.dtype}", math.inf
        if not o.dtype.is_floating_point:
            if not torch.equal(o.cpu(), r.to(o.dtype).cpu()):
                return f"output {i} ({o.dtype}) differs from the reference", math.inf
            continue
        found = _max_error(o, r)
        if found is None:
            return f"output {i} has non-finite values where the reference has none (or vice versa)", math.inf
        diff, scale = found
        if scale is None:      # nothing finite to compare
            continue
        err = diff / max(scale, 1e-30) if scale > 0 else diff
        worst = max(worst, err)
        if not err <= tol:
            return f"output {i} differs from the reference: max relative error {err:.3g} > {tol:g}", err
    return None, worst


COMPARE_CHUNK = 1 << 22   # elements compared at once (bounds the temporaries of a large output)


def _max_error(o: torch.Tensor, r: torch.Tensor) -> Optional[tuple[float, Optional[float]]]:
    """(max |o - r|, max |r|) over the elements where the reference is finite (scale None
    when it is finite nowhere), or None when o and r are non-finite in different places.

    Compared on o's device, a chunk at a time, in float32 unless o is float64: the float64
    reference rounds once to float32 (a relative 6e-8, far inside every float32 or
    narrower tolerance), where converting a whole LM-head output to float64 on the host
    took a second a candidate on the CPU."""
    cdt = torch.float64 if o.dtype == torch.float64 else torch.float32
    of, rf = o.reshape(-1), r.to(o.device).reshape(-1)
    diff = scale = None
    for lo in range(0, of.numel(), COMPARE_CHUNK):
        a, b = of[lo:lo + COMPARE_CHUNK].to(cdt), rf[lo:lo + COMPARE_CHUNK].to(cdt)
        d = (a - b).abs().max()
        if not bool(torch.isfinite(d)):      # a non-finite value in a or b (the max propagates NaN)
            fa, fb = torch.isfinite(a), torch.isfinite(b)
            if not torch.equal(fa, fb) or not torch.equal(torch.isnan(a), torch.isnan(b)):
                return None
            if not bool(fb.any()):
                continue
            a, b = a[fb], b[fb]
            d = (a - b).abs().max()
        s = b.abs().max()
        diff = d if diff is None else torch.maximum(diff, d)
        scale = s if scale is None else torch.maximum(scale, s)
    if scale is None:
        return 0.0, None
    return float(diff), float(scale)


# --- timing ------------------------------------------------------------------
def time_callable(fn: Callable[[], Any], device: str, spec: MeasureSpec, l2_bytes: int = 0) -> tuple[float, dict]:
    """(median ms per call, statistics) of ``fn()``."""
    if device.startswith("cuda"):
        with torch.cuda.device(torch.device(device)):
            return _time_cuda(fn, spec, l2_bytes)
    return _time_cpu(fn, spec)


def _stats(times_ms: list[float], method: str, inner: int) -> dict:
    ts = sorted(times_ms)
    mean = sum(ts) / len(ts)
    std = math.sqrt(sum((t - mean) ** 2 for t in ts) / len(ts))
    return {"method": method, "reps": len(ts), "inner": inner, "min": ts[0], "max": ts[-1], "mean": mean,
            "std": std, "median": _median(ts)}


def _median(ts: list[float]) -> float:
    ts = sorted(ts)
    n = len(ts)
    return ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])


def _time_cpu(fn, spec: MeasureSpec) -> tuple[float, dict]:
    before = _omp_region() if _omp_spins() else None
    for _ in range(max(spec.warmup, 1)):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        one = time.perf_counter() - t0
    inner = max(1, min(10000, math.ceil(spec.min_rep_ms * 1e-3 / max(one, 1e-7))))
    reps = max(3, min(spec.reps, int(spec.max_seconds / max(one * inner, 1e-9))))
    ts = []
    for _ in range(reps):
        if before is None:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            ts.append((time.perf_counter() - t0) / inner * 1e3)
            continue
        total = 0.0
        for _ in range(inner):
            before()
            t0 = time.perf_counter()
            fn()
            total += time.perf_counter() - t0
        ts.append(total / inner * 1e3)
    st = _stats(ts, "cpu-perf-counter" + ("-after-omp" if before is not None else ""), inner)
    return st["median"], st


def _omp_spins() -> bool:
    """torch's OpenMP threads spin-wait after a parallel region here (see the module docstring)."""
    return torch.get_num_threads() > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"


def _omp_region() -> Callable[[], Any]:
    """A parallel ATen op of some tens of microseconds (a 1 MB fill, split across torch's threads)."""
    buf = torch.empty(1 << 18)
    return lambda: buf.fill_(1.0)


def _time_cuda(fn, spec: MeasureSpec, l2_bytes: int) -> tuple[float, dict]:
    sync = torch.cuda.synchronize
    for _ in range(max(spec.warmup, 1)):
        fn()
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    sync()
    one_ms = start.elapsed_time(end)
    flush = torch.empty(max(2 * l2_bytes, 64 << 20), dtype=torch.int8, device="cuda") if spec.flush_l2 else None
    if one_ms * 1e3 < spec.graph_below_us:
        try:
            return _time_cuda_graph(fn, spec, one_ms, flush)
        except Exception as e:  # noqa: BLE001 - not capturable: time with events
            log.debug("CUDA graph timing failed (%s); timing with events", e)
            sync()
    reps = max(3, min(spec.reps, int(spec.max_seconds * 1e3 / max(one_ms, 1e-3))))
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for s, e in evs:
        if flush is not None:
            flush.zero_()
        s.record()
        fn()
        e.record()
    sync()
    st = _stats([s.elapsed_time(e) for s, e in evs], "cuda-events" + ("-l2flush" if flush is not None else ""), 1)
    return st["median"], st


def _time_cuda_graph(fn, spec: MeasureSpec, one_ms: float, flush: Optional[torch.Tensor] = None
                     ) -> tuple[float, dict]:
    """Per-call device time of ``fn`` from CUDA graph replays: ``inner`` calls per graph,
    each after ``flush.zero_()`` when a flush buffer is given; the flushes alone are
    captured in a second graph, replayed in alternation, and subtracted."""
    inner = max(1, min(1000 if flush is None else 200, math.ceil(0.5 / max(one_ms, 1e-4))))
    stream = cublas_workspace.side_stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)

    def capture(body) -> "torch.cuda.CUDAGraph":
        g = torch.cuda.CUDAGraph()
        with cublas_workspace.capture(), torch.cuda.graph(g):
            for _ in range(inner):
                body()
        g.replay()
        return g

    def flushed():
        flush.zero_()
        fn()

    g = capture(fn if flush is None else flushed)
    g0 = capture(flush.zero_) if flush is not None else None
    torch.cuda.synchronize()
    graphs = (g,) if g0 is None else (g, g0)
    evs = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(spec.reps)]
           for _ in graphs]
    for r in range(spec.reps):
        for gi, gr in enumerate(graphs):
            s, e = evs[gi][r]
            s.record()
            gr.replay()
            e.record()
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) / inner for s, e in evs[0]]
    if g0 is not None:
        base = _median([s.elapsed_time(e) / inner for s, e in evs[1]])
        times = [max(t - base, 1e-6) for t in times]
    st = _stats(times, "cuda-graph" + ("-l2flush" if flush is not None else ""), inner)
    del g, g0
    return st["median"], st


# --- one measurement, in this process ------------------------------------------
class Bench:
    """Inputs and reference of one (node, env), kept for all configs measured on it."""

    def __init__(self, node, env: Mapping[str, int], device: str, seed: int = 0, reference: bool = True):
        self.node, self.env, self.device = node, dict(env), device
        self.inputs = random_operands(node, env, device, seed)
        self.refs = reference_outputs(node, self.inputs) if reference else None


def measure(kernel, config: Mapping[str, Any], bench: Bench, spec: MeasureSpec, l2_bytes: int = 0) -> Measurement:
    """Compile ``kernel`` for ``config``, check it and time it (in this process)."""
    t0 = time.perf_counter()
    try:
        fn = at_env(kernel, kernel.compile(dict(config)), bench.env)
    except Exception as e:  # noqa: BLE001 - a candidate failing to compile is data
        return Measurement("compile_error", error=_err(e))
    compile_ms = (time.perf_counter() - t0) * 1e3
    inputs = bench.inputs
    try:
        with torch.no_grad():
            out = fn(*inputs)
            if bench.device.startswith("cuda"):
                torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        return Measurement("runtime_error", compile_ms=compile_ms, error=_err(e))
    max_err = None
    if spec.check and bench.refs is not None:
        problem, max_err = check_outputs(bench.node, bench.env, out, bench.refs)
        if problem:
            return Measurement("wrong", compile_ms=compile_ms, error=problem,
                               max_err=None if math.isinf(max_err) else max_err)
    del out
    try:
        with torch.no_grad():
            ms, st = time_callable(lambda: fn(*inputs), bench.device, spec, l2_bytes)
    except Exception as e:  # noqa: BLE001
        return Measurement("runtime_error", compile_ms=compile_ms, error=_err(e))
    if not (ms > 0 and math.isfinite(ms)):
        ms = 1e-6
    return Measurement("ok", ms, st, compile_ms, "", max_err)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


# --- measuring in a worker process ----------------------------------------------
class MeasureWorker:
    """A ``python -m braze.autotune.worker`` process answering measurement
    requests; restarted after a crash or a timeout.

    ``cuda_device``: pin the worker to one GPU (CUDA_VISIBLE_DEVICES).
    """

    def __init__(self, cuda_device: Optional[str] = None, startup_timeout: float = 180.0,
                 extra_env: Optional[Mapping[str, str]] = None):
        self.cuda_device = cuda_device
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.proc: Optional[subprocess.Popen] = None
        self._buf = b""
        self._log = None
        self.restarts = 0

    # -- process ------------------------------------------------------------
    def _start(self) -> None:
        env = dict(os.environ)
        # NOTE: the worker imports what the parent can import (test generators,
        # plugins): it gets the parent's sys.path, never a pickled object.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if self.cuda_device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.cuda_device)
        env.update(self.extra_env)
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "braze.autotune.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=env, close_fds=True)
        self._buf = b""
        reply = self._readline(self.startup_timeout)
        if reply is None or not json.loads(reply).get("ready"):
            tail = self._stderr_tail()
            self._kill()
            raise RuntimeError(f"measurement worker did not start: {tail or 'no output'}")

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except Exception:  # noqa: BLE001
                    pass
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except Exception:  # noqa: BLE001
                pass
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self._kill()
        except Exception:  # noqa: BLE001
            pass

    def _stderr_tail(self, n: int = 1500) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - n))
            return self._log.read().decode(errors="replace").strip()
        except Exception:  # noqa: BLE001
            return ""

    def _readline(self, timeout: float) -> Optional[bytes]:
        """One line from the worker, or None on timeout; b"" when it died."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    # -- requests -------------------------------------------------------------
    def measure(self, recipe: Mapping[str, Any], config: Mapping[str, Any], env: Mapping[str, int],
                spec: MeasureSpec, timeout: float) -> Measurement:
        """Measure one config; never raises for what the candidate does.

        With ``$BRAZE_MEASURE_LOCK`` (a file path) set, measurements of all
        processes sharing that lock take turns (CPU workers of one machine).
        """
        lock = os.environ.get("BRAZE_MEASURE_LOCK")
        if not lock:
            return self._measure(recipe, config, env, spec, timeout)
        import fcntl

        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                return self._measure(recipe, config, env, spec, timeout)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _measure(self, recipe, config, env, spec, timeout) -> Measurement:
        msg = {"op": "measure", "recipe": recipe, "config": dict(config), "env": dict(env), "spec": asdict(spec)}
        reply = self._request(msg, timeout, "compile + check + timing")
        return reply if isinstance(reply, Measurement) else Measurement.from_dict(reply)

    def compile_only(self, recipe: Mapping[str, Any], config: Mapping[str, Any], env: Mapping[str, int],
                     device: Mapping[str, Any], target: Sequence, timeout: float) -> Measurement:
        """Build one config's GPU kernels for ``target`` (``[backend, arch, warp_size]``)
        into Triton's on-disk cache without running them (``compiler/compile_ahead.py``);
        status ``ok`` or why not. Never raises for what the candidate does."""
        msg = {"op": "compile", "recipe": recipe, "config": dict(config), "env": dict(env),
               "device": dict(device), "target": list(target)}
        reply = self._request(msg, timeout, "compile")
        return reply if isinstance(reply, Measurement) else Measurement.from_dict(reply)

    def _request(self, msg: Mapping[str, Any], timeout: float, what: str):
        """The worker's reply to ``msg`` (a dict), or a failed Measurement when it timed
        out (killed) or died."""
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._start()
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._kill()
            self.restarts += 1
            return Measurement("runtime_error", error="measurement worker died before the request")
        line = self._readline(max(timeout, self.startup_timeout))
        if line is not None and line.startswith(b'{"stage"'):
            line = self._readline(timeout)
        if line is None:
            self._kill()
            self.restarts += 1
            return Measurement("timeout", error=f"no result within {timeout:g} s ({what}); the worker was killed")
        if line == b"":
            code = self.proc.wait()
            tail = self._stderr_tail(600)
            self._kill()
            self.restarts += 1
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            return Measurement("runtime_error", error=f"the measurement worker died ({how}) running this config"
                                                      + (f": {tail.splitlines()[-1]}" if tail else ""))
        reply = json.loads(line)
        if reply.get("exiting"):
            self._kill()
        return reply


__all__ = ["node_device", "MeasureSpec", "Measurement", "MeasureWorker", "Bench", "measure", "check_outputs",
           "compute_tolerance", "time_callable", "reference_outputs", "random_operands", "TOLERANCE"]
