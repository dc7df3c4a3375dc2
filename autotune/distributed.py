"""Tuning a model with several worker processes (GPUs or machines) at once.

The unit of work is a *task*: one kernel node at one binding of its
symbols, as data (the node's IR text, the symbol values, the generators
that make its candidates; see ``autotune/recipe.py``). Every worker takes
every task in the same order and asks trials from the same Optuna studies
through one shared storage -- a journal file on a shared filesystem, or a
database URL (``postgresql://...``) -- so the workers of one study spread
over its space (TPE's constant liar) and the per-study trial budget counts
all of them. Each worker writes its trials to the one tuning database.

A worker that dies loses only its trial in flight: every finished trial is
already in the study storage and the database, and the other workers go
on. ``braze tune --workers N`` runs N workers on this machine, each pinned
to one GPU with ``CUDA_VISIBLE_DEVICES`` (``--workers auto``: one per
visible GPU); on other machines start ``python -m braze.autotune.distributed
worker`` with the same task file, storage and database.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence
from braze.autotune.options import Options
from braze.autotune.recipe import candidates_for_node, current_generators, make_recipe, node_graph, the_node
from braze.autotune.space import device_info
from braze.ir import parse_graph, print_graph

log = logging.getLogger("braze.autotune.distributed")


@dataclass
class Task:
    """One kernel node to tune at one binding of its symbols."""

    name: str
    ir: str
    env: dict
    generators: list
    backend: str = "auto"

    @staticmethod
    def from_dict(d: dict) -> "Task":
        return Task(d["name"], d["ir"], dict(d["env"]), list(d["generators"]), d.get("backend", "auto"))


def tasks_for(program, env_of_graph: dict, options) -> list[Task]:
    """The tasks of a compiled program's launchers at one binding of its symbols."""
    gens = current_generators(options.backend)
    tasks = []
    seen = set()
    for node, launcher in program.launchers.items():
        ir = print_graph(node_graph(node, views=True))
        types = [v.type for v in node.inputs] + list(node.types)
        env = {s: env_of_graph[s] for t in types for s in t.symbols if s in env_of_graph}
        key = (ir, tuple(sorted(env.items())))
        if key in seen:
            continue  # the same kernel at the same shape (e.g. one per layer): tuned once
        seen.add(key)
        tasks.append(Task(node.name or node.op, ir, env, gens, options.backend))
    return tasks


@dataclass
class TaskResult:
    name: str
    kernel: Optional[str]
    config: Optional[dict]
    time_ms: Optional[float]
    library_ms: Optional[float]
    candidates: list = field(default_factory=list)   # [{kernel, time_ms, trials, statuses}]

    def _replace_name(self, name: str) -> "TaskResult":
        self.name = name
        return self


def run_tasks(tasks: Sequence[Task], db, budget, storage: Optional[str] = None, seed: Optional[int] = None,
              progress: Optional[bool] = None, trial_timeout: Optional[float] = None, skip_tuned: bool = True
              ) -> tuple[list[TaskResult], Any]:
    """Tune the tasks in this process (one measurement worker); returns results and the Tuner.

    ``skip_tuned``: a task whose every candidate already has a searched best
    in the database (same device and software) is not tuned again.
    """
    from braze.autotune.db import software_key  # lazy: imports sqlalchemy on first use
    from braze.autotune.tuner import Tuner, pick  # lazy: imports sqlalchemy on first use

    if trial_timeout is not None:
        budget.trial_timeout = trial_timeout
    tuner: Optional[Tuner] = None
    results = []
    bar = _task_bar(progress, len(tasks))
    try:
        for task in tasks:
            graph = parse_graph(task.ir)
            node = the_node(graph)
            kind = "cuda" if any(t.device.startswith("cuda") for t in node.types) else "cpu"
            device = device_info(kind)
            if tuner is None:
                tuner = Tuner(db, device, software_key(), budget, storage=storage, seed=seed, progress=progress)
            options = Options(backend=task.backend)
            cands = candidates_for_node(node, graph, options, device, task.generators)
            if skip_tuned:
                done = _already_tuned(db, device, cands, task.env)
                if done is not None:
                    results.append(done._replace_name(task.name))
                    if bar is not None:
                        bar.update(1)
                    continue
            recipes = [make_recipe(k, node, options, task.generators, i) for i, k in enumerate(cands)]
            outcomes = tuner.tune_candidates(node, cands, task.env, recipes)
            best = pick(outcomes)
            lib = outcomes[-1]
            results.append(TaskResult(
                task.name, best.kernel.name if best else None, best.config if best else None,
                best.time_ms if best else None, lib.time_ms,
                [{"kernel": o.kernel.name, "time_ms": o.time_ms, "trials": o.trials, "measured": o.measured,
                  "statuses": o.statuses} for o in outcomes]))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results, tuner


def _already_tuned(db, device, cands, env) -> Optional["TaskResult"]:
    from braze.autotune.db import software_key  # lazy: imports sqlalchemy on first use

    sw = software_key()
    found = []
    for k in cands:
        try:
            b = db.best(device.key, sw, k.key(), k.problem(env))
        except Exception:  # noqa: BLE001
            return None
        if b is None or not b.tuned:
            return None
        found.append((k, b))
    k, b = min(found, key=lambda f: f[1].time_ms)
    return TaskResult("", k.name, b.config, b.time_ms, found[-1][1].time_ms,
                      [{"kernel": k2.name, "time_ms": b2.time_ms, "trials": 0, "measured": 0, "statuses": {},
                        "from_database": True} for k2, b2 in found])


def _task_bar(progress: Optional[bool], total: int):
    from braze.autotune.tuner import progress_enabled  # lazy: imports sqlalchemy on first use

    if not (progress_enabled() if progress is None else progress) or total < 2:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="kernels", unit="kernel", file=sys.stderr)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def resolve_workers(workers: str | int) -> tuple[int, list[Optional[str]]]:
    """(number of workers, GPU pin of each: None on CPU) for ``--workers``."""
    gpus = visible_gpus()
    if workers == "auto":
        n = max(1, len(gpus))
    else:
        n = int(workers)
        if n < 1:
            raise ValueError(f"--workers {workers}: need at least one worker")
    pins: list[Optional[str]] = [gpus[i % len(gpus)] for i in range(n)] if gpus else [None] * n
    return n, pins


def run_workers(tasks: Sequence[Task], workers: str | int, db_url: str, budget, storage: Optional[str] = None,
                seed: Optional[int] = None, timeout: Optional[float] = None) -> dict[str, Any]:
    """Run ``workers`` worker processes over ``tasks``, sharing studies and the database.

    ``storage``: the Optuna storage the workers share (default: a journal
    file in a temporary folder of this machine). Returns a summary with each
    worker's exit code and counts; a worker that died is reported, not raised.
    """
    n, pins = resolve_workers(workers)
    from braze.autotune.tuner import make_storage  # lazy: imports sqlalchemy on first use

    tmp = tempfile.mkdtemp(prefix="braze-tune-")
    storage = storage or os.path.join(tmp, "studies.journal")
    if "://" in storage:
        make_storage(storage)  # create Optuna's schema once, before the workers race to

    task_file = os.path.join(tmp, "tasks.json")
    with open(task_file, "w") as f:
        json.dump([asdict(t) for t in tasks], f)
    procs = []
    env0 = dict(os.environ)
    env0["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env0.setdefault("BRAZE_PROGRESS", "0")
    if all(p is None for p in pins) and n > 1:
        # NOTE: CPU workers on one machine would time kernels on the same
        # cores and measure each other: they take turns measuring (a file
        # lock); sampling and bookkeeping still overlap.
        env0["BRAZE_MEASURE_LOCK"] = os.path.join(tmp, "measure.lock")
    for i, pin in enumerate(pins):
        env = dict(env0)
        if pin is not None:
            env["CUDA_VISIBLE_DEVICES"] = pin
        out = os.path.join(tmp, f"worker{i}.json")
        cmd = [sys.executable, "-m", "braze.autotune.distributed", "worker", "--tasks", task_file, "--db", db_url,
               "--storage", storage, "--budget", json.dumps(asdict(budget)), "--out", out]
        if seed is not None:
            cmd += ["--seed", str(seed + i)]
        errf = open(os.path.join(tmp, f"worker{i}.log"), "wb")
        procs.append((subprocess.Popen(cmd, env=env, stdout=errf, stderr=subprocess.STDOUT), out, errf, pin))
    deadline = None if timeout is None else time.time() + timeout
    summary: dict[str, Any] = {"storage": storage, "workers": []}
    for p, out, errf, pin in procs:
        try:
            code = p.wait(timeout=None if deadline is None else max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        errf.close()
        info: dict[str, Any] = {"pid": p.pid, "gpu": pin, "exit_code": code}
        if os.path.exists(out):
            with open(out) as f:
                info.update(json.load(f))
        if code != 0:
            with open(errf.name, "rb") as f:
                info["log_tail"] = f.read()[-2000:].decode(errors="replace")
        if not os.path.exists(out):
            log.error("braze: tuning worker %d (pid %d) died (exit code %s); its finished trials are kept",
                      procs.index((p, out, errf, pin)), p.pid, code)
        summary["workers"].append(info)
    return summary


def worker_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m braze.autotune.distributed worker --tasks F --db URL --storage S``"""
    from braze.autotune.db import TuningDB, TuningDBError  # lazy: imports sqlalchemy on first use
    from braze.autotune.tuner import Budget  # lazy: imports sqlalchemy on first use

    ap = argparse.ArgumentParser(prog="braze-tune-worker")
    ap.add_argument("--tasks", required=True, help="JSON file of tasks")
    ap.add_argument("--db", required=True, help="tuning database path or URL")
    ap.add_argument("--storage", required=True, help="shared Optuna storage: journal file or database URL")
    ap.add_argument("--budget", default="{}", help="JSON of autotune.tuner.Budget fields")
    ap.add_argument("--out", help="write a JSON summary here")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"worker {os.getpid()} %(levelname)s %(name)s: %(message)s")
    with open(args.tasks) as f:
        tasks = [Task.from_dict(d) for d in json.load(f)]
    try:
        db = TuningDB.open(args.db)
    except TuningDBError as e:
        print(f"braze tune worker: {e}", file=sys.stderr)
        return 3
    budget = Budget(**json.loads(args.budget))
    t0 = time.time()
    results, tuner = run_tasks(tasks, db, budget, storage=args.storage, seed=args.seed, progress=False)
    summary = {"results": [asdict(r) for r in results], "measured": tuner.measured if tuner else 0,
               "recorded": tuner.recorded if tuner else 0, "seconds": time.time() - t0}
    if tuner is not None:
        tuner.close()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        raise SystemExit(worker_main(sys.argv[2:]))
    print("usage: python -m braze.autotune.distributed worker --tasks F --db URL --storage S", file=sys.stderr)
    raise SystemExit(2)
