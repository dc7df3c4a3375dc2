"""The search: one Optuna study per (kernel, shape bucket, device, software).

- Sampler: TPE, multivariate over the knobs (grouped, so conditional knobs
  work), with the constant liar so that several workers asking the same
  study at once spread out instead of measuring the same config.
- Warm start: the template default is the first trial, then the best
  configs of the nearest shape buckets the database knows (any software
  version of the same device), then TPE.
- Failures (compile error, crash, timeout, wrong result, a config breaking a
  constraint) are told to Optuna as FAIL, so the sampler learns where not
  to go, and recorded in the database like every other trial.
- Budgets: trials per study (all workers together), seconds per study, an
  overall deadline, and early stop after ``patience`` trials without a
  better time. A config already measured (in this study or in the database
  for the same key) is not measured again.
- The library candidate is always measured, once per problem; the fastest
  correct candidate wins, so a tuned kernel is never slower than the library.

Optuna is imported only here (and in ``autotune/distributed.py``);
code generators only declare their spaces (``autotune/space.py``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from braze.autotune.db import Trial, TuningDB, config_json
from braze.autotune.measure import Measurement, MeasureSpec, MeasureWorker
from braze.autotune.space import Config, DeviceInfo, Knob, Space, problem_key

log = logging.getLogger("braze.autotune.tuner")


@dataclass
class Budget:
    """How much to search.

    trials: per study, all workers together (the default config and the
    warm starts included; configs rejected by a constraint do not count);
    seconds: per study; deadline: an absolute
    ``time.time()`` after which no new trial starts; patience: stop after
    this many finished trials without a better time (None: never);
    trial_timeout: seconds one config may take to compile, check and time;
    give_up_after: stop searching a candidate whose first this many
    measured configs all failed (a broken kernel, not a bad config);
    confirm: before a winner replaces the template default, both are
    re-timed this many times each, in alternation, and the winner is kept
    only if its median is lower (0: keep the search's fastest as is).
    """

    trials: int = 40
    seconds: Optional[float] = None
    deadline: Optional[float] = None
    patience: Optional[int] = 16
    trial_timeout: float = 120.0
    give_up_after: Optional[int] = 3
    confirm: int = 3


@dataclass
class Outcome:
    """The result of tuning one candidate on one problem."""

    kernel: Any
    config: Optional[Config]
    time_ms: Optional[float]
    trials: int = 0                 # trials this process ran or reused
    measured: int = 0               # of which measured now
    statuses: dict = field(default_factory=dict)
    study: str = ""

    @property
    def ok(self) -> bool:
        return self.config is not None and self.time_ms is not None


# --- Optuna parameters <-> configs ----------------------------------------------
def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _ordinal(k: Knob) -> bool:
    vals = k.choices
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and \
        list(vals) == sorted(vals) and len(set(vals)) == len(vals)


def suggest_config(trial, space: Space) -> Config:
    """Ask ``trial`` for a value of each active knob (define-by-run, so
    conditional knobs are only asked when their parent enables them).

    Ordered numeric knobs are asked as an index (TPE then models their
    order); other knobs as categories (by value if JSON scalars, else by index).
    """
    cfg: Config = {}
    for k in space.knobs:
        if not k.active(cfg):
            continue
        if len(k.choices) == 1:
            cfg[k.name] = k.choices[0]
        elif _ordinal(k):
            cfg[k.name] = k.choices[trial.suggest_int(k.name, 0, len(k.choices) - 1)]
        elif all(_scalar(v) for v in k.choices):
            cfg[k.name] = trial.suggest_categorical(k.name, list(k.choices))
        else:
            cfg[k.name] = k.choices[trial.suggest_categorical(k.name, list(range(len(k.choices))))]
    return space.normalize(cfg)


def config_params(config: Mapping[str, Any], space: Space) -> dict[str, Any]:
    """The Optuna params that make :func:`suggest_config` return ``config``."""
    out: dict[str, Any] = {}
    for k in space.knobs:
        if not k.active(config) or len(k.choices) == 1 or k.name not in config:
            continue
        v = config[k.name]
        if v not in k.choices:
            raise ValueError(f"{k.name}={v!r} is not among {k.choices}")
        if _ordinal(k) or not all(_scalar(c) for c in k.choices):
            out[k.name] = k.choices.index(v)
        else:
            out[k.name] = v
    return out


def study_name(device: DeviceInfo, software: str, kernel_key: str, problem: Mapping[str, Any],
               kernel_name: str = "") -> str:
    h = hashlib.sha256("|".join((device.key, software, kernel_key, problem_key(problem))).encode()).hexdigest()
    return f"braze:{kernel_name[:60]}:{h[:20]}"


def make_storage(where: Optional[str]):
    """An Optuna storage: in memory (None), a journal file (a path), or an
    RDB URL (``postgresql://...``, ``sqlite:///...``) shared by workers."""
    import optuna

    if where is None:
        return optuna.storages.InMemoryStorage()
    if "://" in where:
        # NOTE: Optuna creates its schema on first use and two processes doing
        # that at once collide (duplicate types/tables): retry, the second
        # attempt finds the schema made by the other.
        for attempt in range(6):
            try:
                return optuna.storages.RDBStorage(where, heartbeat_interval=None)
            except Exception:  # noqa: BLE001
                if attempt == 5:
                    raise
                time.sleep(0.5 * (attempt + 1))
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    os.makedirs(os.path.dirname(os.path.abspath(where)) or ".", exist_ok=True)
    return JournalStorage(JournalFileBackend(where))


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def progress_enabled() -> bool:
    v = os.environ.get("BRAZE_PROGRESS")
    if v is not None:
        return v not in ("0", "", "false", "no")
    return sys.stderr.isatty()


# --- the tuner ----------------------------------------------------------------------
class Tuner:
    """Tunes candidates of nodes and records every trial in ``db``."""

    def __init__(self, db: TuningDB, device: DeviceInfo, software: str, budget: Optional[Budget] = None,
                 spec: Optional[MeasureSpec] = None, measurer: Optional[MeasureWorker] = None,
                 storage: Optional[str] = None, seed: Optional[int] = None, progress: Optional[bool] = None):
        self.db, self.device, self.software = db, device, software
        self.budget = budget or Budget()
        self.spec = spec or MeasureSpec()
        self.measurer = measurer or MeasureWorker()
        self._storage_spec = storage
        self._storage = None
        self.seed = seed
        self.progress = progress_enabled() if progress is None else progress
        self.measured = 0            # configs measured by this tuner (all studies)
        self.recorded = 0            # trials it wrote to the database

    @property
    def storage(self):
        if self._storage is None:
            self._storage = make_storage(self._storage_spec)
        return self._storage

    def _record(self, kernel, problem, config, m: Measurement, origin: str, study: str, family: str = "") -> None:
        t = Trial(self.device.key, self.software, kernel.key(), kernel.name, kernel.backend, problem, config,
                  m.status, m.time_ms if m.ok else None, m.stats, m.compile_ms, m.error, origin, study, family)
        try:
            self.db.record(t)
            self.recorded += 1
        except Exception as e:  # noqa: BLE001 - a database failure must not stop tuning
            log.error("braze: could not record a trial in %s: %s", self.db.url, e)

    def _known(self, kernel, problem) -> dict[str, tuple[str, Optional[float]]]:
        """Configs of this key the database already measured: config JSON -> (status, ms)."""
        out: dict[str, tuple[str, Optional[float]]] = {}
        try:
            for t in self.db.trials(device=self.device.key, kernel_key=kernel.key(), problem=problem,
                                    software=self.software):
                if t.origin == "quick":
                    continue  # quick timings are coarser than a search's
                c = config_json(t.config)
                prev = out.get(c)
                if prev is None or (t.status == "ok" and (prev[1] is None or t.time_ms < prev[1])):
                    out[c] = (t.status, t.time_ms)
        except Exception as e:  # noqa: BLE001
            log.warning("braze: cannot read trials from %s: %s", self.db.url, e)
        return out

    def measure_once(self, kernel, recipe: Mapping[str, Any], env: Mapping[str, int], problem: Mapping[str, Any],
                     config: Config, study: str = "") -> Measurement:
        """Measure one config (reusing a search measurement of the database) and record it."""
        known = self._known(kernel, problem).get(config_json(config))
        if known is not None:
            return Measurement(known[0], known[1])
        m = self.measurer.measure(recipe, config, env, self.spec, self.budget.trial_timeout)
        self.measured += 1
        self._record(kernel, problem, config, m, "search", study, recipe.get("family", ""))
        return m

    def tune_kernel(self, kernel, recipe: Mapping[str, Any], env: Mapping[str, int]) -> Outcome:
        """Search the space of one candidate on the problem of ``env``."""
        import optuna
        from optuna.trial import TrialState

        problem = kernel.problem(env)
        space: Space = kernel.space
        if not space.knobs:
            m = self.measure_once(kernel, recipe, env, problem, {})
            return Outcome(kernel, {} if m.ok else None, m.time_ms if m.ok else None, 1, int(m.status != ""),
                           {m.status: 1})
        _quiet_optuna()
        name = study_name(self.device, self.software, kernel.key(), problem, kernel.name)
        sampler = optuna.samplers.TPESampler(
            multivariate=True, group=True, constant_liar=True, seed=self.seed,
            n_startup_trials=max(2, min(10, self.budget.trials // 4)))
        study = optuna.create_study(storage=self.storage, sampler=sampler, study_name=name, direction="minimize",
                                    load_if_exists=True)
        family = recipe.get("family", "")
        self._warm_start(study, kernel, problem, space, family)
        known = self._known(kernel, problem)
        out = Outcome(kernel, None, None, study=name)
        t_start = time.time()
        n_valid = _count_valid(space, problem, self.device)
        seen: set[str] = set()
        failed = 0
        bar = _bar(self.progress, self.budget.trials, kernel.name)
        try:
            while not self._stop(study, t_start):
                if n_valid is not None and len(seen) >= n_valid:
                    break  # every valid config has been tried
                if self.budget.give_up_after and out.time_ms is None and failed >= self.budget.give_up_after:
                    log.warning("braze: %s failed on its first %d configs; giving up on it", kernel.name, failed)
                    break
                trial = study.ask()
                try:
                    config = suggest_config(trial, space)
                except Exception as e:  # noqa: BLE001 - a space the sampler cannot handle
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("braze: %s: cannot sample a config: %s", kernel.name, e)
                    break
                cj = config_json(config)
                trial.set_user_attr("config", cj)
                problems = space.violations(config, problem, self.device)
                if problems:
                    m = Measurement("invalid", error="; ".join(problems))
                    if cj not in known:
                        self._record(kernel, problem, config, m, "search", name, family)
                elif cj in known:
                    st, ms = known[cj]
                    m = Measurement(st, ms)
                else:
                    m = self.measurer.measure(recipe, config, env, self.spec, self.budget.trial_timeout)
                    self.measured += 1
                    out.measured += 1
                    self._record(kernel, problem, config, m, "search", name, family)
                known[cj] = (m.status, m.time_ms)
                if m.status != "invalid":
                    seen.add(cj)
                    failed += not m.ok
                out.trials += 1
                out.statuses[m.status] = out.statuses.get(m.status, 0) + 1
                if m.ok:
                    study.tell(trial, m.time_ms)
                    if out.time_ms is None or m.time_ms < out.time_ms:
                        out.config, out.time_ms = config, m.time_ms
                else:
                    trial.set_user_attr("status", m.status)
                    study.tell(trial, state=TrialState.FAIL)
                    if m.status not in ("invalid",):
                        log.info("braze: %s %s: %s %s", kernel.name, cj, m.status, m.error.splitlines()[0]
                                 if m.error else "")
                if bar is not None:
                    bar.update(1)
                    if out.time_ms is not None:
                        bar.set_postfix_str(f"best {out.time_ms:.4g} ms")
        finally:
            if bar is not None:
                bar.close()
        # Other workers may have found better configs in the shared study.
        best = _study_best(study)
        if best is not None and (out.time_ms is None or best[1] < out.time_ms):
            out.config, out.time_ms = space.coerce(best[0]), best[1]
        if self.budget.confirm and out.ok:
            self._confirm(kernel, recipe, env, problem, out, known, name, family)
        return out

    def _confirm(self, kernel, recipe, env, problem, out: Outcome, known: Mapping[str, tuple], study: str,
                 family: str) -> None:
        """Keep the search's winner only if it beats the default when both are re-timed in alternation.

        NOTE: the fastest of many noisy timings is biased low (a lucky draw on a
        shared machine); the default, measured once, would lose to it. Both
        confirmations are recorded (origin "confirm"), the kept one last: a
        confirm trial sets the database's best for its key (``db._update_best``).
        """
        space = kernel.space
        try:
            default = space.normalize(space.coerce(space.default_config(problem, self.device)))
        except ValueError:
            return
        dj, wj = config_json(default), config_json(out.config)
        if dj == wj or known.get(dj, ("", None))[0] != "ok":
            return  # the winner is the default, or the default does not run here
        runs: dict[str, list[Measurement]] = {wj: [], dj: []}
        for _ in range(self.budget.confirm):
            for cj, cfg in ((wj, out.config), (dj, default)):
                runs[cj].append(self.measurer.measure(recipe, cfg, env, self.spec, self.budget.trial_timeout))
                self.measured += 1
                out.measured += 1
        med = {cj: (statistics.median([m.time_ms for m in ms]) if all(m.ok for m in ms) else math.inf)
               for cj, ms in runs.items()}
        if med[dj] == math.inf:
            return  # the default failed now: nothing to compare with
        keep = wj if med[wj] < med[dj] else dj
        for cj, cfg in sorted(((wj, out.config), (dj, default)), key=lambda x: x[0] == keep):
            ms = runs[cj]
            bad = next((m for m in ms if not m.ok), None)
            method = ms[0].stats.get("method", "") if ms and ms[0].stats else ""
            m = bad or Measurement("ok", med[cj], {"method": f"{method}-confirm", "reps": len(ms),
                                                   "times": [x.time_ms for x in ms]},
                                   statistics.median([x.compile_ms or 0.0 for x in ms]))
            self._record(kernel, problem, cfg, m, "confirm", study, family)
        if keep == dj:
            log.info("braze: %s: the search's winner %s (%.4g ms) did not beat the default when re-timed "
                     "(%.4g vs %.4g ms); keeping the default", kernel.name, wj, out.time_ms, med[wj], med[dj])
            out.config = default
        out.time_ms = med[keep]

    def _stop(self, study, t_start: float) -> bool:
        from optuna.trial import TrialState

        b = self.budget
        now = time.time()
        if b.deadline is not None and now >= b.deadline:
            return True
        if b.seconds is not None and now - t_start >= b.seconds:
            return True
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING))
        # NOTE: a config that breaks a constraint costs nothing to reject: it
        # is told to the sampler (FAIL) but does not use up the budget, up to
        # a cap that stops a sampler stuck outside the valid region.
        invalid = sum(t.user_attrs.get("status") == "invalid" for t in trials)
        trials = [t for t in trials if t.user_attrs.get("status") != "invalid"]
        if len(trials) >= b.trials or invalid >= 20 * max(b.trials, 1):
            return True
        if b.patience:
            done = sorted((t for t in trials if t.state != TrialState.RUNNING), key=lambda t: t.number)
            best_i, best_v = -1, math.inf
            for i, t in enumerate(done):
                if t.state == TrialState.COMPLETE and t.value < best_v:
                    best_i, best_v = i, t.value
            if best_i >= 0 and len(done) - 1 - best_i >= b.patience:
                return True
        return False

    def _warm_start(self, study, kernel, problem: Mapping[str, Any], space: Space, family: str) -> None:
        """Enqueue the default and the best configs of the nearest buckets (once per study)."""
        if study.user_attrs.get("warm_started"):
            return
        study.set_user_attr("warm_started", True)
        seeds: list[Config] = []
        try:
            seeds.append(space.default_config(problem, self.device))
        except ValueError:
            pass
        try:
            for _, b in self.db.nearest(self.device.key, family or kernel.key(), problem, software=None, limit=4):
                seeds.append(b.config)
        except Exception as e:  # noqa: BLE001
            log.warning("braze: cannot read warm starts from %s: %s", self.db.url, e)
        seen = set()
        for cfg in seeds:
            try:
                cfg = space.normalize(space.coerce(cfg))
                if not space.valid(cfg, problem, self.device):
                    continue
                params = config_params(cfg, space)
            except (ValueError, KeyError):
                continue
            key = config_json(cfg)
            if key in seen:
                continue
            seen.add(key)
            study.enqueue_trial(params, skip_if_exists=True)

    def tune_candidates(self, node, candidates: Sequence, env: Mapping[str, int], recipes: Sequence[Mapping]
                        ) -> list[Outcome]:
        """Tune every candidate of ``node`` (the library one is measured once)."""
        return [self.tune_kernel(k, r, env) for k, r in zip(candidates, recipes)]

    def close(self) -> None:
        self.measurer.close()


def _count_valid(space: Space, problem, device, limit: int = 4096) -> Optional[int]:
    """The number of valid configs of a small space (None for a large one)."""
    if space.size() > limit:
        return None
    return sum(1 for _ in space.configs(problem, device))


def _study_best(study) -> Optional[tuple[Config, float]]:
    import json

    from optuna.trial import TrialState

    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        cj = t.user_attrs.get("config")
        if cj is None:
            continue
        if best is None or t.value < best[1]:
            best = (json.loads(cj), t.value)
    return best


def _bar(enabled: bool, total: int, name: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=f"tuning {name[:40]}", leave=False, unit="trial", file=sys.stderr)


def pick(outcomes: Sequence[Outcome]) -> Optional[Outcome]:
    """The fastest correct candidate (ties: the earlier, i.e. generated before library)."""
    ok = [o for o in outcomes if o.ok]
    return min(ok, key=lambda o: o.time_ms) if ok else None


__all__ = ["Budget", "Tuner", "Outcome", "pick", "suggest_config", "config_params", "study_name", "make_storage"]
