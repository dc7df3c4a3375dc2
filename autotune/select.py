"""Choosing a kernel and config for one node and shape bucket.

The policy, in order:

1. **database** — the tuning database knows this exact key (device,
   software, kernel, shape bucket) for one or more candidates: the fastest
   of them with its best config. With ``Options.tune`` only results of a
   search count here (a quick measurement, step 4, does not stop a search).
2. **search** — ``Options.tune``: every candidate is tuned (Optuna, in a
   worker process, ``autotune/tuner.py``), every trial stored; the fastest
   correct candidate wins.
3. **database (nearest bucket)** — the best configs of the nearest shape
   bucket of the same kind (same software and device), one per candidate
   that has one; the choice among them is made as in step 4.
4. **default, measured** — untuned: the first candidate's config (its
   template default and its space's alternates, or the nearest bucket's
   config) and every library candidate
   (the op's torch reference, and e.g. SDPA for attention) are each
   compiled, checked against the reference on random inputs and timed a few
   times, in this process (the first candidate is compiled and run anyway
   when nothing is measured, so a worker would buy no safety here, only
   seconds of start-up; library calls compile nothing; so is a candidate
   that says ``quick_measure = True``, a library GEMM with a generated
   epilogue; other generated candidates run only in a search, in a worker
   process). The
   fastest correct one wins (on a GPU, a candidate that synchronises the host,
   ``syncs_host``, only when nothing else is correct: ``fastest``) and the measurements go to the database
   (``origin="quick"``), so the next compile of the same bucket is a
   database hit and costs nothing. Skipped where timings mean nothing
   (Triton under ``TRITON_INTERPRET=1``) and with ``select="first"``.
5. **default** — the first candidate's template default.

``Options.extra["select"]`` (or ``$BRAZE_SELECT``): ``"measure"`` (default,
as above), ``"first"`` (no measurement in steps 3-4: the first candidate),
``"library"`` (the library candidate, for debugging). Selection never
raises: any failure of the database or the tuner is logged and the default
is used.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any, Mapping, Optional
from braze.autotune.contract import Choice
from braze.autotune.measure import Bench, MeasureSpec, measure, node_device
from braze.autotune.recipe import current_generators, family_key, make_recipe

log = logging.getLogger("braze.autotune")

# NOTE: device time with the L2 flushed before each call (a decode step reads every weight
# once); with flush_l2=False a candidate re-read its operands from L2 in the timing loop.
QUICK_SPEC = dict(warmup=1, reps=5, min_rep_ms=0.2, max_seconds=0.2, check=True, flush_l2=True)


def select(launcher, problem: Mapping[str, Any], env: Mapping[str, int]):
    """The Choice for ``launcher`` at the symbol values ``env`` (``problem``:
    the primary candidate's problem, used for messages)."""
    try:
        return _select(launcher, env)
    except Exception as e:  # noqa: BLE001 - selection must never stop the program
        log.error("braze: choosing a kernel for %s failed (%s: %s); using the default",
                  launcher.node.name or launcher.node.op, type(e).__name__, e)
        kernel = launcher.primary
        return Choice(kernel, kernel.space.default_config(kernel.problem(env), launcher.device), "default")


def policy(options) -> str:
    extra = getattr(options, "extra", None) or {}
    mode = extra.get("select") or os.environ.get("BRAZE_SELECT") or "measure"
    if mode not in ("measure", "first", "library"):
        raise ValueError(f"select policy {mode!r}: expected measure, first or library")
    return mode


def _select(launcher, env: Mapping[str, int]):
    from braze.autotune.db import get_db, software_key  # lazy: imports sqlalchemy on first use

    options, device = launcher.options, launcher.device
    cands = list(launcher.candidates)
    mode = policy(options)
    if mode == "library" or len(cands) == 1:
        k = cands[-1] if mode == "library" else cands[0]
        return Choice(k, k.space.default_config(k.problem(env), device), "default")
    db = get_db(getattr(options, "tuning_db", None))
    sw = software_key()
    tune = bool(getattr(options, "tune", False))

    # 1. exact hits
    hit = _exact_hit(launcher, env, db, sw, tune)
    if hit is not None:
        return hit

    # 2. search
    if tune:
        choice = _search(launcher, env, db, sw)
        if choice is not None:
            return choice

    # 3. nearest buckets, 4. measured defaults
    configs, source = _nearest_or_default(launcher, env, db, sw)
    if mode == "measure" and _measurable(cands):
        # NOTE: only the first candidate (which runs anyway when nothing is
        # measured) and the library calls run in this process; other
        # generated candidates are only run by a search, in a worker.
        picked = _first_configs(launcher, env, configs, source) + [
            (k, c) for k, c in configs[1:] if _timed_quickly(k)]
        best = _quick(launcher, env, picked, db, sw)
        if best is not None:
            near = {id(k): c for k, c in configs}.get(id(best[0]))   # "database": the nearest config won
            return Choice(best[0], best[1], source.get(id(best[0]), "default") if best[1] == near else "default")
    k, cfg = configs[0]
    return Choice(k, cfg, source.get(id(k), "default"))


def _exact_hit(launcher, env, db, sw, tune: bool) -> Optional[Choice]:
    """The fastest candidate recorded for exactly this bucket (tuned ones only when tuning)."""
    device = launcher.device
    hits = []
    for k in launcher.candidates:
        b = _safe(lambda: db.best(device.key, sw, k.key(), k.problem(env)), db)
        if b is not None and _usable(k, b.config, env, device):
            hits.append((b, k))
    if not hits or (tune and not any(b.tuned for b, _ in hits)):
        return None
    if tune:
        hits = [(b, k) for b, k in hits if b.tuned]
    _, k, b = fastest([(b.time_ms, k, b) for b, k in hits], device.kind)
    return Choice(k, k.space.normalize(k.space.coerce(b.config)), "database")


def _nearest_or_default(launcher, env, db, sw) -> tuple[list, dict]:
    """Each candidate's config: from the nearest recorded bucket of its family, else its default."""
    device = launcher.device
    configs = []
    source: dict[int, str] = {}
    for k in launcher.candidates:
        cfg = None
        fam = family_key(k, launcher.node)
        for _, b in _safe(lambda: db.nearest(device.key, fam, k.problem(env), software=sw, limit=3), db) or ():
            if _usable(k, b.config, env, device):
                cfg, source[id(k)] = k.space.normalize(k.space.coerce(b.config)), "database"
                break
        if cfg is None:
            cfg = k.space.default_config(k.problem(env), device)
        configs.append((k, cfg))
    return configs, source


def _first_configs(launcher, env, configs: list, source: dict) -> list:
    """The first candidate's configs the quick selection times: its space's default and
    alternates (``Space.quick_configs``), after the nearest bucket's config where the
    database has one. A space without alternates: the nearest config alone (else the
    default).

    NOTE: the nearest bucket is a bucket of the same structure at another shape (the LM
    head and the QKV projection are both an RMSNorm prologue and one GEMM). On an H100 the
    int8 LM head with its norm prologue ran the QKV's config untimed against any other
    (164 us; the head without the prologue: 111 us default, 95 us its best alternate), so
    the alternates are timed beside the nearest config."""
    k, cfg = configs[0]
    quick = k.space.quick_configs(k.problem(env), launcher.device)
    if source.get(id(k)) != "database":
        return [(k, c) for c in quick]
    if len(quick) == 1:
        return configs[:1]
    return [(k, cfg)] + [(k, c) for c in quick if c != cfg]


def compiled_by_select(launcher, env: Mapping[str, int]) -> list:
    """[(kernel, config)] that :func:`select` compiles for ``launcher`` at ``env`` without
    a search, first one first: the exact database hit; else the first candidate's nearest
    or default config, then the other candidates the quick selection times that compile
    something (``quick_measure``; library calls compile nothing). What
    ``compiler/precompile.py`` builds ahead."""
    from braze.autotune.db import get_db, software_key  # lazy: imports sqlalchemy on first use

    cands = launcher.candidates
    mode = policy(launcher.options)
    if mode == "library" or len(cands) == 1:
        k = cands[-1] if mode == "library" else cands[0]
        return [(k, k.space.default_config(k.problem(env), launcher.device))]
    db = get_db(getattr(launcher.options, "tuning_db", None))
    sw = software_key()
    hit = _exact_hit(launcher, env, db, sw, bool(getattr(launcher.options, "tune", False)))
    if hit is not None:
        return [(hit.kernel, hit.config)]
    configs, source = _nearest_or_default(launcher, env, db, sw)
    if mode != "measure" or not _measurable(cands):
        return configs[:1]
    return _first_configs(launcher, env, configs, source) + [
        (k, c) for k, c in configs[1:] if _timed_quickly(k) and getattr(k, "backend", "") != "library"]


def _timed_quickly(kernel) -> bool:
    """Besides the first candidate, the quick selection times library calls and the
    candidates that ask for it (``quick_measure``: a library GEMM with a generated
    epilogue, the attention template's decode variants)."""
    return getattr(kernel, "backend", "") == "library" or getattr(kernel, "quick_measure", False)


def _safe(fn, db):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a database failing mid-run: defaults, said once
        if not getattr(db, "_warned", False):
            log.error("braze: tuning database %s failed (%s: %s); using defaults", db.url, type(e).__name__, e)
            db._warned = True
        return None


def _usable(kernel, config: Mapping[str, Any], env, device) -> bool:
    try:
        return kernel.space.valid(kernel.space.normalize(kernel.space.coerce(config)), kernel.problem(env), device)
    except Exception:  # noqa: BLE001
        return False


def _measurable(cands) -> bool:
    """Timing the candidates is meaningful (not an interpreter) and there is a choice."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return not (interpreted and any(getattr(k, "backend", "") == "triton" for k in cands))


def _quick(launcher, env, configs, db, sw):
    """Compile, check and time each candidate's config in this process; the fastest correct one."""
    from braze.autotune.db import Trial  # lazy: imports sqlalchemy on first use

    device = launcher.device
    try:
        bench = Bench(launcher.node, env, node_device(launcher.node), seed=0)
    except Exception as e:  # noqa: BLE001
        log.warning("braze: cannot build inputs to compare candidates of %s: %s", launcher.node.name, e)
        return None
    spec = MeasureSpec(**QUICK_SPEC)
    results = []
    trials = []
    for k, cfg in configs:
        m = measure(k, cfg, bench, spec, device.l2_bytes)
        trials.append(Trial(device.key, sw, k.key(), k.name, k.backend, k.problem(env), cfg, m.status,
                            m.time_ms if m.ok else None, m.stats, m.compile_ms, m.error, "quick",
                            family=family_key(k, launcher.node)))
        if m.ok:
            results.append((m.time_ms, k, cfg))
        else:
            # NOTE: a build failure was warned about by the kernel itself, once per kernel and config
            log.log(logging.INFO if m.status == "compile_error" else logging.WARNING,
                    "braze: candidate %s of %s is %s with its default config %s on %s: %s", k.name,
                    launcher.node.name or launcher.node.op, m.status, cfg, _safe_problem(k, env),
                    m.error.splitlines()[0] if m.error else "")
    _safe(lambda: db.record_many(trials), db)
    if not results:
        return None
    t, k, cfg = fastest(results, device.kind)
    return k, cfg


def fastest(results: list, device_kind: str = "cuda") -> tuple:
    """The fastest ``(time, kernel, config)``; on a GPU, a candidate that synchronises the
    host (``syncs_host``: the op's torch reference reading lengths off the device) only when
    nothing else passed its check: timed alone it looks as fast as its kernels, but in a
    program the GPU idles while the host catches up, and a CUDA graph cannot hold it."""
    device_only = [r for r in results if not getattr(r[1], "syncs_host", False)] if device_kind == "cuda" else []
    return min(device_only or results, key=lambda r: r[0])


def _safe_problem(kernel, env):
    try:
        return kernel.problem(env)
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


# --- search -------------------------------------------------------------------
_TUNERS: dict[tuple, Any] = {}
_TUNERS_LOCK = threading.Lock()


def tuner_for(db, device, software: str, options):
    """The process's Tuner for this database and device (one measurement worker each).

    ``Options.extra`` may hold ``budget`` (a dict of ``autotune.tuner.Budget``
    fields), ``study_storage`` (an Optuna storage: journal file or URL) and
    ``measurer`` (a ``MeasureWorker`` to use, e.g. one shared by tests).
    """
    from braze.autotune.tuner import Budget, Tuner  # lazy: imports sqlalchemy on first use

    extra = getattr(options, "extra", None) or {}
    key = (db.url, device.key, extra.get("study_storage"), id(extra.get("measurer")))
    with _TUNERS_LOCK:
        t = _TUNERS.get(key)
        if t is None:
            t = Tuner(db, device, software, measurer=extra.get("measurer"), storage=extra.get("study_storage"))
            t.owns_measurer = extra.get("measurer") is None
            _TUNERS[key] = t
        t.budget = Budget(**extra.get("budget", {}))
        return t


@atexit.register
def close_tuners() -> None:
    """Stop the measurement workers of the process's tuners."""
    with _TUNERS_LOCK:
        for t in _TUNERS.values():
            try:
                if getattr(t, "owns_measurer", True):
                    t.close()
            except Exception:  # noqa: BLE001
                pass
        _TUNERS.clear()


def _search(launcher, env, db, sw):
    options = launcher.options
    tuner = tuner_for(db, launcher.device, sw, options)
    gens = current_generators(options.backend)
    recipes = [make_recipe(k, launcher.node, options, gens, i) for i, k in enumerate(launcher.candidates)]
    outcomes = tuner.tune_candidates(launcher.node, launcher.candidates, env, recipes)
    ok = [(o.time_ms, o.kernel, o) for o in outcomes if o.ok]   # tuner.pick's rule, plus the host-sync one
    best = fastest(ok, launcher.device.kind)[2] if ok else None
    name = launcher.node.name or launcher.node.op
    if best is None:
        log.error("braze: no candidate of %s passed tuning (%s); using the default", name,
                  "; ".join(f"{o.kernel.name}: {o.statuses}" for o in outcomes))
        return None
    log.info("braze: tuned %s: %s %s %.4g ms", name, best.kernel.name, best.config, best.time_ms)
    return Choice(best.kernel, best.kernel.space.normalize(best.kernel.space.coerce(best.config)), "search")
