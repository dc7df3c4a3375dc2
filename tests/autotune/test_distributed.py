"""Distributed tuning: worker processes share Optuna studies (a journal file)
and one tuning database; a worker that dies loses only its trial in flight."""
import os
import signal
import threading
import time

import pytest

from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from braze.autotune.db import open_db
from braze.autotune.distributed import resolve_workers, run_workers, tasks_for
from braze.autotune.tuner import Budget
from braze.compiler.driver import compile_graph
from braze.config import Options

pytest.importorskip("tvm", reason="these tests tune real TVM/LLVM kernels")
import tvm_testgen as tg  # noqa: E402


def model_tasks(generators):
    generators("tvm")
    tasks = []
    for g in (tg.gemm_graph(48, 40, 56), tg.softmax_graph(33, 70)):
        prog = compile_graph(g, Options(extra={"select": "first"}))
        tasks += tasks_for(prog, {}, Options())
    assert [t.generators for t in tasks] == [["tvm_testgen:gen_tvm"]] * 2
    return tasks


def study_trials(storage):
    out = {}
    for s in storage.get_all_studies():
        out[s.study_name] = storage.get_all_trials(s._study_id, deepcopy=False)
    return out


def check_no_trial_lost(db, storage, budget_trials, workers):
    trials = db.trials()
    configs = {}
    for t in trials:
        if t.study:
            configs.setdefault(t.study, set()).add((str(sorted(t.config.items())), t.status))
    studies = study_trials(storage)
    assert len(studies) == 2  # one study per kernel with a space (the library is measured, not searched)
    for name, ts in studies.items():
        done = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.FAIL)
                and t.user_attrs.get("status") != "invalid"]  # rejected by a constraint: not in the budget
        assert budget_trials - 1 <= len(done) <= budget_trials + workers - 1
        for t in done:
            if t.state == TrialState.COMPLETE:  # every finished trial of the study is in the database
                import json
                cfg = str(sorted(json.loads(t.user_attrs["config"]).items()))
                assert (cfg, "ok") in configs[name]
        assert sum(t.state == TrialState.RUNNING for t in ts) <= 1
    return trials


def test_workers_share_studies_and_database_and_a_dead_worker_loses_one_trial(tmp_path, generators):
    tasks = model_tasks(generators)
    url = str(tmp_path / "tuning.db")
    journal = str(tmp_path / "studies.journal")
    open_db(url).close()
    killed = {}

    def kill_first_worker_after_two_trials():
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                hosts = [t.host for t in open_db(url).trials()]
            except Exception:  # noqa: BLE001 - the file is being written
                hosts = []
            pids = {}
            for h in hosts:
                pids[h] = pids.get(h, 0) + 1
            for h, n in pids.items():
                if n >= 2:
                    pid = int(h.rsplit(":", 1)[1])
                    killed["pid"], killed["trials_before"] = pid, n
                    os.kill(pid, signal.SIGKILL)  # a tuning worker this test started
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_first_worker_after_two_trials, daemon=True)
    killer.start()
    budget = Budget(trials=8, patience=None, trial_timeout=60)
    summary = run_workers(tasks, 2, url, budget, storage=journal, seed=0, timeout=400)
    killer.join(timeout=5)
    assert "pid" in killed, "the test did not manage to kill a worker"
    by_pid = {w["pid"]: w for w in summary["workers"]}
    dead, alive = by_pid[killed["pid"]], next(w for p, w in by_pid.items() if p != killed["pid"])
    assert dead["exit_code"] == -signal.SIGKILL and "results" not in dead
    assert alive["exit_code"] == 0 and len(alive["results"]) == 2
    db = open_db(url)
    storage = JournalStorage(JournalFileBackend(journal))
    trials = check_no_trial_lost(db, storage, 8, 2)
    hosts = {t.host.rsplit(":", 1)[1] for t in trials}
    assert str(killed["pid"]) in hosts and str(alive["pid"]) in hosts  # both wrote to the one database
    assert sum(t.host.endswith(f":{alive['pid']}") for t in trials) == alive["recorded"]
    for r in alive["results"]:
        assert r["kernel"] and r["time_ms"] > 0


def test_workers_auto_is_one_per_gpu_or_one_on_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert resolve_workers("auto") == (2, ["0", "3"])
    assert resolve_workers(3) == (3, ["0", "3", "0"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_workers("auto") == (1, [None])
