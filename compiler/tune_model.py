"""Tuning every kernel of a model (``braze tune``, ``braze compile --tune``)."""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Mapping, Optional
from braze.autotune.distributed import resolve_workers, run_tasks, run_workers, tasks_for
from braze.compiler.artifact import compile_model, kwarg_order
from braze.ir.interpreter import bind_symbols

log = logging.getLogger("braze.autotune")


def model_tasks(model, args: tuple, kwargs: Mapping[str, Any], options) -> tuple[list, Any]:
    """Capture and compile ``model`` (no kernel selection work) and list its tuning tasks."""
    extra = dict(getattr(options, "extra", None) or {}, select="first")
    art = compile_model(model, args, kwargs, options.replace(tune=False, extra=extra), check=False)
    m = art.manifest
    leaves = _leaves(art, args, kwargs)
    inputs = [leaves[i] for i in m["input_leaves"]]
    syms = [int(leaves[i]) for i in m["sym_leaves"]]
    return tasks_for(art.program, planned_symbols(art.program.graph, inputs, syms), options), art


def planned_symbols(graph, inputs, syms) -> dict:
    """The symbols of ``graph`` for these inputs as its runs plan them: the token
    count of a padding-eliminated graph (a run-time symbol) at its upper bound,
    as ``CompiledProgram`` plans it, so tuning fills the database entries that
    the run looks up."""
    env = bind_symbols(graph, inputs, syms)
    for s, bound in graph.sym_bounds:
        env.setdefault(s, bound if isinstance(bound, int) else bound.eval(env))
    return env


def _leaves(art, args, kwargs):
    import torch.utils._pytree as pytree

    order = kwarg_order(art.in_spec)
    if order is not None:
        kwargs = {k: kwargs[k] for k in order}
    return pytree.tree_leaves((tuple(args), dict(kwargs)))


def tune_model(model, args: tuple, kwargs: Mapping[str, Any], options, budget, workers: str | int = 1,
               storage: Optional[str] = None, seed: Optional[int] = None) -> dict[str, Any]:
    """Tune each distinct kernel of ``model`` at the example's shapes; every
    trial goes to the tuning database of ``options``. ``workers`` > 1 (or
    "auto") runs that many worker processes sharing the studies."""
    from braze.autotune.db import TuningDB, default_url, safe_url  # lazy: imports sqlalchemy on first use

    tasks, _ = model_tasks(model, args, kwargs, options)
    url = default_url(options.tuning_db)
    n, _ = resolve_workers(workers)
    db = TuningDB.open(url)  # NOTE: raises a clear TuningDBError: tuning needs a usable database
    if n == 1 and storage is None:
        results, tuner = run_tasks(tasks, db, budget, seed=seed)
        measured = tuner.measured if tuner else 0
        if tuner is not None:
            tuner.close()
        return {"db": safe_url(url), "results": [asdict(r) for r in results], "measured": measured, "workers": []}
    summary = run_workers(tasks, workers, url, budget, storage=storage, seed=seed)
    results = {}
    measured = 0
    for w in summary["workers"]:
        measured += w.get("measured", 0)
        for r in w.get("results", []):
            prev = results.get(r["name"])
            if prev is None or (r["time_ms"] is not None and (prev["time_ms"] is None or r["time_ms"] < prev["time_ms"])):
                results[r["name"]] = r
    return {"db": safe_url(url), "results": list(results.values()), "measured": measured,
            "workers": summary["workers"], "storage": summary["storage"]}
